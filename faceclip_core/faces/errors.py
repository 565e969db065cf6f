"""Exceptions raised by the face pipeline.

Callers catch :class:`FaceError` for "anything the face pipeline refused", or the core's root
:class:`~faceclip_core.errors.FaceCLIPError` for anything the core refused. The subclasses also derive from the
matching builtin so code that only knows ``ValueError`` / ``RuntimeError`` still does the right thing.
"""
from __future__ import annotations

from ..errors import FaceCLIPError


class FaceError(FaceCLIPError):
    """Base class of every error raised by ``faceclip_core.faces``."""


class FaceInputError(FaceError, ValueError):
    """An input image (or landmark set) is unusable: empty, NaN, wrong shape or dtype."""

    def __init__(self, message: str, *, image_index: int | None = None) -> None:
        super().__init__(message)
        self.image_index = image_index


class NoFaceError(FaceError, ValueError):
    """No usable face in an image (none detected, or the requested face index is absent)."""

    def __init__(self, message: str, *, image_index: int | None = None,
                 faces_found: int = 0) -> None:
        super().__init__(message)
        self.image_index = image_index
        self.faces_found = faces_found


class FaceModelError(FaceError, RuntimeError):
    """The face models cannot be used: pack missing or malformed, insightface or
    onnxruntime missing or broken, or a model that does not look like what it should."""
