"""Small building blocks shared by the text tower, face ViT and fuser.

``operations`` follows ComfyUI's convention: a namespace whose ``Linear``, ``LayerNorm``, ``Conv2d`` and
``Embedding`` take ``(…, device=..., dtype=...)``. The default is ``torch.nn`` without weight init; the nodes can pass
``comfy.ops.manual_cast`` instead. Tensors that are bare parameters (packed attention projections, positional
tables, layer-scale gammas) are cast to the activation's dtype/device where they are used, the same thing
manual_cast does for its layers, which is a no-op when they already match.
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


DEFAULT_OPERATIONS = SimpleNamespace(Linear=Linear, LayerNorm=LayerNorm, Conv2d=Conv2d, Embedding=Embedding)


def ops_or_default(operations: Any | None) -> Any:
    return DEFAULT_OPERATIONS if operations is None else operations


def empty_param(*shape: int, device: Any = None, dtype: torch.dtype | None = None) -> nn.Parameter:
    """An uninitialised, frozen parameter: the weights always come from a checkpoint."""
    return nn.Parameter(torch.empty(shape, device=device, dtype=dtype), requires_grad=False)


def cast_like(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``t`` on ``x``'s device and dtype (no copy when it already is)."""
    return t.to(device=x.device, dtype=x.dtype, non_blocking=True)


def layer_norm_fp32(norm: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """LayerNorm computed in float32 and cast back, as open_clip's LayerNormFp32 (and safe in fp16/bf16).

    Norm weights are held in float32 by the loader; if something else cast them, fall back to the functional
    form with float32 copies rather than fail on mixed dtypes.
    """
    xf = x.float()
    if norm.weight.dtype == torch.float32 or getattr(norm, "comfy_cast_weights", False):
        y = norm(xf)
    else:
        y = F.layer_norm(xf, norm.normalized_shape, norm.weight.float(), norm.bias.float(), norm.eps)
    return y.to(x.dtype)


def split_heads(t: torch.Tensor, heads: int) -> torch.Tensor:
    """[B, N, C] -> [B, heads, N, C // heads] (head-major chunks of the channels)."""
    b, n, c = t.shape
    return t.reshape(b, n, heads, c // heads).transpose(1, 2)


def multi_head_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int, causal: bool = False,
                         mask: torch.Tensor | None = None) -> torch.Tensor:
    """Scaled dot-product attention over [B, N, C] inputs split into ``heads`` head-major chunks; ``mask`` is an
    additive [Nq, Nk] mask."""
    b, nq, c = q.shape
    out = F.scaled_dot_product_attention(split_heads(q, heads), split_heads(k, heads), split_heads(v, heads),
                                         attn_mask=mask, is_causal=causal)
    return out.transpose(1, 2).reshape(b, nq, c)


class PackedAttention(nn.Module):
    """Multi-head attention with nn.MultiheadAttention's parameter layout (``in_proj_weight``/``in_proj_bias``
    packed as [q; k; v], then ``out_proj``), so checkpoint keys load unchanged. Batch-first."""

    def __init__(self, dim: int, heads: int, device: Any = None, dtype: torch.dtype | None = None,
                 operations: Any = None) -> None:
        super().__init__()
        ops = ops_or_default(operations)
        self.heads = heads
        self.in_proj_weight = empty_param(3 * dim, dim, device=device, dtype=dtype)
        self.in_proj_bias = empty_param(3 * dim, device=device, dtype=dtype)
        self.out_proj = ops.Linear(dim, dim, bias=True, device=device, dtype=dtype)

    def forward(self, query: torch.Tensor, key: torch.Tensor | None = None, value: torch.Tensor | None = None,
                causal: bool = False) -> torch.Tensor:
        w = cast_like(self.in_proj_weight, query)
        b = cast_like(self.in_proj_bias, query)
        if key is None and value is None:
            q, k, v = F.linear(query, w, b).chunk(3, dim=-1)  # self-attention: one GEMM
        else:
            key = query if key is None else key
            value = key if value is None else value
            wq, wk, wv = w.chunk(3)
            bq, bk, bv = b.chunk(3)
            if key is query:
                q, k = F.linear(query, torch.cat([wq, wk]), torch.cat([bq, bk])).chunk(2, dim=-1)
            else:
                q, k = F.linear(query, wq, bq), F.linear(key, wk, bk)
            v = F.linear(value, wv, bv)
        return self.out_proj(multi_head_attention(q, k, v, self.heads, causal=causal))


class FrozenBatchNorm1d(nn.Module):
    """Eval-mode BatchNorm1d with the checkpoint's key layout; computes in float32 (the statistics are float32
    and a variance near eps would lose precision in bf16)."""

    def __init__(self, num_features: int, eps: float, device: Any = None) -> None:
        super().__init__()
        self.eps = eps
        self.weight = empty_param(num_features, device=device, dtype=torch.float32)
        self.bias = empty_param(num_features, device=device, dtype=torch.float32)
        self.register_buffer("running_mean", torch.empty(num_features, device=device, dtype=torch.float32))
        self.register_buffer("running_var", torch.empty(num_features, device=device, dtype=torch.float32))
        self.register_buffer("num_batches_tracked", torch.empty((), device=device, dtype=torch.long))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        mean = self.running_mean.float().to(xf.device)
        inv_std = torch.rsqrt(self.running_var.float().to(xf.device) + self.eps)
        y = (xf - mean) * (inv_std * self.weight.float().to(xf.device)) + self.bias.float().to(xf.device)
        return y.to(x.dtype)
