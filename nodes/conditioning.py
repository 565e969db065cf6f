"""CONDITIONING as ComfyUI's SDXL and FLUX consumers read it: the one place the pack builds the list."""
from __future__ import annotations

import torch


def sdxl_conditioning(context: torch.Tensor, pooled: torch.Tensor, **options) -> list:
    """``[[context [B,77*k,2048], {"pooled_output": pooled [B,1280], **options}]]``. Size keys stay unset so
    ComfyUI fills them from the latent, as diffusers does."""
    return [[context, {"pooled_output": pooled, **options}]]


def flux_conditioning(context: torch.Tensor, pooled: torch.Tensor, guidance: float) -> list:
    """``[[context [B,512,4096], {"pooled_output": pooled [B,768], "guidance": guidance}]]`` as model_base.Flux
    reads it. guidance is always set: Flux.extra_conds falls back to 3.5 when the key is missing."""
    return [[context, {"pooled_output": pooled, "guidance": float(guidance)}]]
