"""The ArcFace-style face ViT (insightface arcface_torch layout) each FaceCLIP branch carries.

Input: RGB in [0, 1] (FaceCLIP feeds it without mean/std normalisation), resized to 112x112 by the caller.
Outputs: the 512-d identity embedding from the feature head, and the 144 patch tokens after the final LayerNorm.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..layers import batch_norm_fp32, layer_norm_fp32, multi_head_attention, ops_or_default, positions


@dataclass(frozen=True)
class FaceViTConfig:
    dim: int = 768
    depth: int = 24
    heads: int = 8
    mlp_hidden: int = 3072
    # 112 is not a multiple of 9: the stride-9 patch conv sees 12x12 patches and ignores the last 4 rows/columns.
    img_size: int = 112
    patch_size: int = 9
    embed_size: int = 512
    ln_eps: float = 1e-5
    bn_eps: float = 2e-5  # arcface_torch's BatchNorm1d eps; the difference to 1e-5 is visible
    # FaceT5 (the FLUX variant) reads only the patch tokens: its checkpoint's feature head is never built there.
    feature_head: bool = True

    @property
    def grid(self) -> int:
        return self.img_size // self.patch_size

    @property
    def num_patches(self) -> int:
        return self.grid * self.grid


class PatchEmbed(nn.Module):
    def __init__(self, cfg: FaceViTConfig, device: Any, dtype: torch.dtype | None, operations: Any) -> None:
        super().__init__()
        self.proj = operations.Conv2d(3, cfg.dim, kernel_size=cfg.patch_size, stride=cfg.patch_size,
                                      bias=True, device=device, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class ViTAttention(nn.Module):
    def __init__(self, cfg: FaceViTConfig, device: Any, dtype: torch.dtype | None, operations: Any) -> None:
        super().__init__()
        self.heads = cfg.heads
        self.qkv = operations.Linear(cfg.dim, 3 * cfg.dim, bias=False, device=device, dtype=dtype)
        self.proj = operations.Linear(cfg.dim, cfg.dim, bias=True, device=device, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        return self.proj(multi_head_attention(q, k, v, self.heads))


class ViTMLP(nn.Module):
    def __init__(self, cfg: FaceViTConfig, device: Any, dtype: torch.dtype | None, operations: Any) -> None:
        super().__init__()
        self.fc1 = operations.Linear(cfg.dim, cfg.mlp_hidden, bias=True, device=device, dtype=dtype)
        self.fc2 = operations.Linear(cfg.mlp_hidden, cfg.dim, bias=True, device=device, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.nn.functional.relu6(self.fc1(x)))


class ViTBlock(nn.Module):
    def __init__(self, cfg: FaceViTConfig, device: Any, dtype: torch.dtype | None, operations: Any) -> None:
        super().__init__()
        self.norm1 = operations.LayerNorm(cfg.dim, eps=cfg.ln_eps, device=device, dtype=torch.float32)
        self.attn = ViTAttention(cfg, device, dtype, operations)
        self.norm2 = operations.LayerNorm(cfg.dim, eps=cfg.ln_eps, device=device, dtype=torch.float32)
        self.mlp = ViTMLP(cfg, device, dtype, operations)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(layer_norm_fp32(self.norm1, x))
        return x + self.mlp(layer_norm_fp32(self.norm2, x))


class FeatureHead(nn.ModuleList):
    """Linear(144*dim -> dim) -> BN -> Linear(dim -> 512) -> BN, keys ``feature.0`` .. ``feature.3``; the
    BatchNorms are frozen (eval) and computed in float32."""

    def __init__(self, cfg: FaceViTConfig, device: Any, dtype: torch.dtype | None, operations: Any) -> None:
        super().__init__([
            operations.Linear(cfg.num_patches * cfg.dim, cfg.dim, bias=False, device=device, dtype=dtype),
            operations.BatchNorm2d(cfg.dim, eps=cfg.bn_eps, device=device, dtype=torch.float32),
            operations.Linear(cfg.dim, cfg.embed_size, bias=False, device=device, dtype=dtype),
            operations.BatchNorm2d(cfg.embed_size, eps=cfg.bn_eps, device=device, dtype=torch.float32),
        ])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = batch_norm_fp32(self[1], self[0](x))
        return batch_norm_fp32(self[3], self[2](x))


class FaceViT(nn.Module):
    def __init__(self, cfg: FaceViTConfig, device: Any = None, dtype: torch.dtype | None = None,
                 operations: Any = None) -> None:
        super().__init__()
        ops = ops_or_default(operations)
        self.cfg = cfg
        self.patch_embed = PatchEmbed(cfg, device, dtype, ops)
        # the checkpoint's [1, N, dim] pos_embed, as a table of N rows (arcface_torch's mask_token, used only for
        # masked training, is not built)
        self.pos_embed = ops.Embedding(cfg.num_patches, cfg.dim, device=device, dtype=dtype)
        self.blocks = nn.ModuleList(ViTBlock(cfg, device, dtype, ops) for _ in range(cfg.depth))
        self.norm = ops.LayerNorm(cfg.dim, eps=cfg.ln_eps, device=device, dtype=torch.float32)
        if cfg.feature_head:
            self.feature = FeatureHead(cfg, device, dtype, ops)

    def patch_tokens(self, img: torch.Tensor) -> torch.Tensor:
        """``img`` [B, 3, 112, 112] in the compute dtype -> patch tokens [B, 144, dim] after the final LayerNorm."""
        x = self.patch_embed(img)
        x = x + positions(self.pos_embed, x)
        for block in self.blocks:
            x = block(x)
        return layer_norm_fp32(self.norm, x)

    def forward(self, img: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``img`` [B, 3, 112, 112] in the compute dtype -> (embedding [B, 512], patch tokens [B, 144, dim])."""
        patches = self.patch_tokens(img)
        emb = self.feature(patches.reshape(patches.shape[0], -1))
        return emb, patches
