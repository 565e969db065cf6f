"""Conversion of the released FaceCLIP / FaceT5-FLUX pickles to .safetensors (``release``; the command is
``python -m faceclip_core.convert``) and the key layout of FaceT5's fine-tuned FLUX DiT, which only the converter
and the download command need (``flux_dit``: the pack never runs that DiT, ComfyUI's UNETLoader does)."""
from __future__ import annotations

from . import flux_dit
from .release import ENCODER, FACET5_ENCODER, FLUX_DIT, UNET, ConvertError, ConvertResult, convert, detect_kind, main

__all__ = ["ENCODER", "FACET5_ENCODER", "FLUX_DIT", "UNET", "ConvertError", "ConvertResult", "convert",
           "detect_kind", "flux_dit", "main"]
