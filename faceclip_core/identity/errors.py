"""Errors of the per-identity embedding methods; each message says what was wrong and what to do."""
from __future__ import annotations

from ..errors import FaceCLIPError


class IdentityError(FaceCLIPError):
    """Bad input to ID-embedding training or application (faces, prompts, models, settings)."""


class IdentityFileError(IdentityError):
    """An ID-embedding or training-state file that is missing, exists already, or is not one of ours."""
