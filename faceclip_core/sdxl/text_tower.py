"""The CLIP text transformer of each FaceCLIP branch (open_clip layout: pre-norm, causal, final LayerNorm)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..layers import PackedAttention, layer_norm_fp32, ops_or_default, positions


@dataclass(frozen=True)
class TextTowerConfig:
    width: int
    layers: int
    heads: int
    mlp_width: int
    # "quick_gelu" (L tower, ViT-L-14-quickgelu) or "gelu" (G tower: ViT-bigG-14 is built with exact GELU)
    activation: str
    context_length: int = 77
    vocab_size: int = 49408
    ln_eps: float = 1e-5


def quick_gelu(x: torch.Tensor) -> torch.Tensor:
    return x * torch.sigmoid(1.702 * x)


# Activation name in a TextTowerConfig -> function (also used by FaceT5's CLIP-L).
ACTIVATIONS = {"quick_gelu": quick_gelu, "gelu": F.gelu}


class TextMLP(nn.Module):
    def __init__(self, cfg: TextTowerConfig, device: Any, dtype: torch.dtype | None, operations: Any) -> None:
        super().__init__()
        self.c_fc = operations.Linear(cfg.width, cfg.mlp_width, bias=True, device=device, dtype=dtype)
        self.c_proj = operations.Linear(cfg.mlp_width, cfg.width, bias=True, device=device, dtype=dtype)
        self.act = ACTIVATIONS[cfg.activation]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(self.act(self.c_fc(x)))


class TextBlock(nn.Module):
    def __init__(self, cfg: TextTowerConfig, device: Any, dtype: torch.dtype | None, operations: Any) -> None:
        super().__init__()
        self.ln_1 = operations.LayerNorm(cfg.width, eps=cfg.ln_eps, device=device, dtype=torch.float32)
        self.attn = PackedAttention(cfg.width, cfg.heads, device=device, dtype=dtype, operations=operations)
        self.ln_2 = operations.LayerNorm(cfg.width, eps=cfg.ln_eps, device=device, dtype=torch.float32)
        self.mlp = TextMLP(cfg, device, dtype, operations)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(layer_norm_fp32(self.ln_1, x), causal=True)
        return x + self.mlp(layer_norm_fp32(self.ln_2, x))


class TextTransformer(nn.Module):
    def __init__(self, cfg: TextTowerConfig, device: Any, dtype: torch.dtype | None, operations: Any) -> None:
        super().__init__()
        self.resblocks = nn.ModuleList(TextBlock(cfg, device, dtype, operations) for _ in range(cfg.layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.resblocks:
            x = block(x)
        return x


def build_text_tower(owner: nn.Module, cfg: TextTowerConfig, device: Any = None, dtype: torch.dtype | None = None,
                     operations: Any = None) -> None:
    """Create the text-tower members on ``owner`` (the branch module): the checkpoint keeps them directly under
    ``face_clip_x.`` (token_embedding, positional_embedding, transformer, ln_final), not in a submodule. Its
    text_projection, logit_scale and logit_bias are not built: FaceCLIP-SDXL's outputs never use them (pooled is
    taken before the projection)."""
    ops = ops_or_default(operations)
    owner.token_embedding = ops.Embedding(cfg.vocab_size, cfg.width, device=device, dtype=dtype)
    owner.positional_embedding = ops.Embedding(cfg.context_length, cfg.width, device=device, dtype=dtype)
    owner.transformer = TextTransformer(cfg, device, dtype, ops)
    owner.ln_final = ops.LayerNorm(cfg.width, eps=cfg.ln_eps, device=device, dtype=torch.float32)


def run_text_tower(owner: nn.Module, token_ids: torch.Tensor, replace_mask: torch.Tensor,
                   replacement: torch.Tensor, compute_dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Embed ``token_ids``, overwrite the embeddings where ``replace_mask`` ([B, 77] bool) is set with
    ``replacement`` ([B, width], one vector per row), run the causal transformer.

    Returns (hidden [B, 77, width] after ln_final, pooled [B, width] = hidden at the EOT/argmax position).
    """
    x = owner.token_embedding(token_ids).to(compute_dtype)
    # The identity token replaces the token embedding before the positional embedding is added.
    x = torch.where(replace_mask[..., None], replacement.to(compute_dtype)[:, None, :], x)
    x = x + positions(owner.positional_embedding, x)
    x = owner.transformer(x)
    hidden = layer_norm_fp32(owner.ln_final, x)
    # argmax finds the EOT id (49407, the largest id); padding is 0 so it never wins.
    eot = token_ids.argmax(dim=-1)
    pooled = hidden[torch.arange(hidden.shape[0], device=hidden.device), eot]
    return hidden, pooled
