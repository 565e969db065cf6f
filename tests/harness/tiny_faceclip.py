"""A tiny random-weight FaceCLIP encoder file in the official key layout, for the end-to-end tests.

Text widths stay 768 / 1280 (SDXL's UNet needs 2048-wide context and 1280-wide pooled output) with one layer
each; the face ViT and the fusion encoders are shrunk. faceclip_core itself builds the architecture, so the file
has exactly the key set its loader expects.
"""
from __future__ import annotations

import math
from pathlib import Path

import torch
from safetensors.torch import save_file

from faceclip_core.sdxl.checkpoint_layout import official_layout
from faceclip_core.sdxl.encoder import BranchConfig, EncoderConfig
from faceclip_core.sdxl.face_vit import FaceViTConfig
from faceclip_core.sdxl.fuser import FuserConfig
from faceclip_core.sdxl.loader import build_meta
from faceclip_core.sdxl.text_tower import TextTowerConfig


def tiny_config() -> EncoderConfig:
    def branch(width: int, activation: str) -> BranchConfig:
        return BranchConfig(
            text=TextTowerConfig(width=width, layers=1, heads=width // 64, mlp_width=2 * width, activation=activation),
            face=FaceViTConfig(dim=48, depth=1, heads=8, mlp_hidden=96),
            fuser=FuserConfig(d_model=width, layers=1, bi_dim=64, text_ffn=64, deform_ffn=64),
        )
    return EncoderConfig(l=branch(768, "quick_gelu"), g=branch(1280, "gelu"))


def random_state_dict(seed: int = 0, dtype: torch.dtype = torch.float16) -> dict[str, torch.Tensor]:
    """Random weights under the released checkpoint's names and shapes."""
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for key, shape in official_layout(build_meta(tiny_config()).state_dict()).items():
        if key.endswith("num_batches_tracked"):
            t = torch.zeros(shape, dtype=torch.int64)
        elif key.endswith(("running_var", "weight", "gamma_v", "gamma_l")) and len(shape) == 1:
            t = torch.ones(shape)  # norm scales, BatchNorm variances, layer scales
        elif len(shape) <= 1:
            t = torch.zeros(shape)
        elif "embedding" in key or key.endswith(("pos_embed", "mask_token")):
            t = torch.randn(shape, generator=g) * 0.02
        else:
            t = torch.randn(shape, generator=g) / math.sqrt(math.prod(shape[1:]))
        sd[key] = t.to(dtype) if t.is_floating_point() else t
    return sd


def write(path: Path, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(random_state_dict(seed), str(path), metadata={"note": "random weights for tests"})
    return path
