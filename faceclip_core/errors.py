"""Exceptions raised by the FaceCLIP encoder code.

All derive from ``FaceCLIPError`` (itself a ``ValueError``) so that a caller such as a ComfyUI node can catch one
type and show ``str(err)``, which always says what was wrong and what to do about it.
"""
from __future__ import annotations

from collections.abc import Sequence


class FaceCLIPError(ValueError):
    """Base class of every error raised for bad weights or bad inputs."""


class FaceCLIPWeightsError(FaceCLIPError):
    """A weights file could not be read: missing, truncated, corrupt, or a pickle that is not a plain state dict."""


class FaceCLIPStateDictError(FaceCLIPError):
    """A readable state dict that is not (or not entirely) a FaceCLIP-SDXL encoder."""

    def __init__(
        self,
        message: str,
        missing: Sequence[str] = (),
        unexpected: Sequence[str] = (),
        mismatched: Sequence[str] = (),
    ) -> None:
        self.missing = list(missing)
        self.unexpected = list(unexpected)
        self.mismatched = list(mismatched)
        parts = [message]
        for label, keys in (("missing", self.missing), ("unexpected", self.unexpected),
                            ("wrong shape", self.mismatched)):
            if keys:
                shown = ", ".join(keys[:8])
                more = f" (+{len(keys) - 8} more)" if len(keys) > 8 else ""
                parts.append(f"{len(keys)} {label} key(s): {shown}{more}")
        super().__init__(". ".join(parts))


class FaceCLIPInputError(FaceCLIPError):
    """Bad arguments to ``encode``/``tokenize``: shapes, value ranges, batch sizes, prompt types."""


class MissingPackageError(FaceCLIPError, ImportError):
    """A package the pack needs for this step is not installed in ComfyUI's Python."""


def require(module: str, pip_spec: str, purpose: str):
    """Import ``module``, or raise MissingPackageError naming the exact install command. The pack itself loads
    without it: only the step that needs it fails."""
    import importlib

    try:
        return importlib.import_module(module)
    except Exception as exc:  # a broken native library raises more than ImportError
        raise MissingPackageError(
            f"{purpose} needs the Python package {pip_spec.split('>')[0].split('=')[0]!r}, which could not be "
            f"imported ({type(exc).__name__}: {exc}). Install it into the Python that runs ComfyUI: "
            f"`python -m pip install \"{pip_spec}\"`, then restart ComfyUI.") from exc


def require_finite(**values: float | None) -> None:
    """Refuse NaN and infinities by input name. ComfyUI's range check (min/max) lets NaN through, and an infinity
    typed into a widget would only surface later as an overflow far from its cause. ``None`` (an unset optional
    input) is accepted."""
    import math

    for name, value in values.items():
        if value is not None and not math.isfinite(float(value)):
            raise FaceCLIPInputError(
                f"{name} is {value}: enter a finite number (NaN and infinity are not valid settings).")
