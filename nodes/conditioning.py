"""CONDITIONING as ComfyUI's SDXL consumers read it: the one place the pack builds the list."""
from __future__ import annotations

import torch


def sdxl_conditioning(context: torch.Tensor, pooled: torch.Tensor, **options) -> list:
    """``[[context [B,77*k,2048], {"pooled_output": pooled [B,1280], **options}]]``. Size keys stay unset so
    ComfyUI fills them from the latent, as diffusers does."""
    return [[context, {"pooled_output": pooled, **options}]]
