"""Small building blocks shared by the text tower, face ViT and fuser.

``operations`` follows ComfyUI's convention: a namespace whose ``Linear``, ``LayerNorm``, ``Conv2d``, ``Embedding``,
``BatchNorm2d`` and ``RMSNorm`` take ``(..., device=..., dtype=...)``. The default is ``torch.nn`` without weight
init; the nodes pass ``comfy.ops.manual_cast``. Every weight of the encoder lives in one of these layers, so
ComfyUI's model manager can cast it, move it, load it partially or stream it like any core model's weights; where
the released checkpoint's names do not fit a layer, ``checkpoint_layout`` renames them at load.
"""
from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


class _NoInit:
    """Skips torch's random initialisation: every weight comes from a checkpoint, and initialising on the meta
    device still costs time (a 49408-row embedding takes ~0.25 s to "initialise" there)."""

    def reset_parameters(self) -> None:
        return None


class Linear(_NoInit, nn.Linear):
    pass


class LayerNorm(_NoInit, nn.LayerNorm):
    pass


class Conv2d(_NoInit, nn.Conv2d):
    pass


class Embedding(_NoInit, nn.Embedding):
    pass


class BatchNorm2d(_NoInit, nn.BatchNorm2d):
    pass


class RMSNorm(_NoInit, nn.RMSNorm):
    pass


DEFAULT_OPERATIONS = SimpleNamespace(Linear=Linear, LayerNorm=LayerNorm, Conv2d=Conv2d, Embedding=Embedding,
                                     BatchNorm2d=BatchNorm2d, RMSNorm=RMSNorm)


def ops_or_default(operations: Any | None) -> Any:
    return DEFAULT_OPERATIONS if operations is None else operations


def store_linear_weights(model: nn.Module, dtype: torch.dtype) -> int:
    """Re-store every Linear layer's weight of ``model`` in ``dtype`` (an 8-bit float), one layer at a time so only
    one extra weight exists at once; biases, norms, embeddings and convolutions keep their dtype. Values beyond the
    type's range are clamped to it rather than becoming NaN (float8_e4m3fn has no infinity); returns how many were.
    The layers must cast weights to the input's dtype at compute (comfy.ops.manual_cast does)."""
    limit = torch.finfo(dtype).max
    clamped = 0
    for module in model.modules():
        if isinstance(module, nn.Linear):
            weight = module.weight.detach()
            clamped += int((weight.abs() > limit).sum())
            module.weight = nn.Parameter(weight.clamp(-limit, limit).to(dtype), requires_grad=False)
    return clamped


def layer_norm_fp32(norm: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """LayerNorm (or RMSNorm) computed in float32 and cast back, as open_clip's LayerNormFp32 (safe in fp16/bf16).
    The norm's parameters are held in float32; ComfyUI's layers cast them to the float32 input when they live
    elsewhere."""
    return norm(x.float()).to(x.dtype)


def batch_norm_fp32(norm: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """An eval-mode BatchNorm over the features of [B, C] vectors, in float32 (its statistics are float32 and a
    variance near eps would lose precision in bf16), as a BatchNorm2d over [B, C, 1, 1]."""
    return norm(x.float()[:, :, None, None])[:, :, 0, 0].to(x.dtype)


def positions(table: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Rows 0..N-1 of a learned position table (an Embedding), for ``x`` [B, N, C] in its dtype and device."""
    return table(torch.arange(x.shape[-2], device=x.device)).to(x.dtype)


def split_heads(t: torch.Tensor, heads: int) -> torch.Tensor:
    """[B, N, C] -> [B, heads, N, C // heads] (head-major chunks of the channels)."""
    b, n, c = t.shape
    return t.reshape(b, n, heads, c // heads).transpose(1, 2)


def merge_heads(t: torch.Tensor) -> torch.Tensor:
    """[B, heads, N, D] -> [B, N, heads * D], the inverse of split_heads."""
    b, h, n, d = t.shape
    return t.transpose(1, 2).reshape(b, n, h * d)


def multi_head_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int, causal: bool = False,
                         mask: torch.Tensor | None = None, scale: float | None = None) -> torch.Tensor:
    """Scaled dot-product attention over [B, N, C] inputs split into ``heads`` head-major chunks; ``mask`` is an
    additive mask broadcastable to [B, heads, Nq, Nk] ([Nq, Nk] for one shared by all heads); ``scale`` replaces
    the default head_dim^-0.5 (T5 attends unscaled: 1.0)."""
    return merge_heads(F.scaled_dot_product_attention(split_heads(q, heads), split_heads(k, heads),
                                                      split_heads(v, heads), attn_mask=mask, is_causal=causal,
                                                      scale=scale))


class PackedAttention(nn.Module):
    """Multi-head attention with one projection Linear for [q; k; v] (nn.MultiheadAttention's packed
    ``in_proj_weight``/``in_proj_bias``, loaded as ``in_proj``), then ``out_proj``. Batch-first."""

    def __init__(self, dim: int, heads: int, device: Any = None, dtype: torch.dtype | None = None,
                 operations: Any = None) -> None:
        super().__init__()
        ops = ops_or_default(operations)
        self.heads = heads
        self.in_proj = ops.Linear(dim, 3 * dim, bias=True, device=device, dtype=dtype)
        self.out_proj = ops.Linear(dim, dim, bias=True, device=device, dtype=dtype)

    def forward(self, query: torch.Tensor, value: torch.Tensor | None = None, causal: bool = False) -> torch.Tensor:
        """Self-attention over ``query``; with ``value``, queries and keys come from ``query`` and values from
        ``value`` (the fuser's text layer: positions are added to queries and keys only)."""
        q, k, v = self.in_proj(query).chunk(3, dim=-1)
        if value is not None:
            # the same projection on the other input, keeping only its value part (77 tokens: negligible cost)
            v = self.in_proj(value).chunk(3, dim=-1)[2]
        return self.out_proj(multi_head_attention(q, k, v, self.heads, causal=causal))
