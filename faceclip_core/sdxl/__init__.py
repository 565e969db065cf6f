"""FaceCLIP-SDXL: the joint face+text encoder whose output replaces SDXL's text conditioning (two branches, L and
G, each a face ViT, a CLIP text tower and a fusion encoder), its tokenizer, and the loader of its released weights.

FaceT5-FLUX (``faceclip_core.facet5``) reuses the face ViT, the fusion blocks and the CLIP text tower from here."""
from __future__ import annotations

from .encoder import OFFICIAL_NEGATIVE, FaceCLIPEncoder
from .loader import load_encoder
from .tokenizer import tokenize

__all__ = ["OFFICIAL_NEGATIVE", "FaceCLIPEncoder", "load_encoder", "tokenize"]
