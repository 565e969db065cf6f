"""The T5 v1.1 encoder inside FaceT5, under the checkpoint's flash-T5 names (``encoder_2.t5_encoder.*``).

Math of the official configuration (``t5-v1_1-xxl.yaml``): pre-RMSNorm (eps 1e-6, statistics in float32),
self-attention with NO 1/sqrt(d) scaling plus a bidirectional relative-position bias that block 0 computes and
every block reuses, gated tanh-GELU feed-forward, no biases anywhere, unscaled token embeddings, a final RMSNorm,
and no attention mask: the 512-token padded sequence is encoded as is, pads included.

The residual stream is kept in float32 whatever the weights' dtype (the sub-layers run in the compute dtype): it
costs nothing next to the projections and avoids T5's known fp16 overflow of the residual, as ComfyUI's own T5 does
by running in float32.
"""
from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..layers import DEFAULT_OPERATIONS, layer_norm_fp32, multi_head_attention, ops_or_default
from .config import T5Config


def _rms_norm(cfg: T5Config, device: Any, operations: Any) -> nn.Module:
    # Older ComfyUI ops namespaces have no RMSNorm; the parameter is tiny and float32 either way.
    rms = getattr(operations, "RMSNorm", DEFAULT_OPERATIONS.RMSNorm)
    return rms(cfg.d_model, eps=cfg.eps, elementwise_affine=True, device=device, dtype=torch.float32)


def relative_position_buckets(length: int, buckets: int, max_distance: int, device: torch.device | str | None = None
                              ) -> torch.Tensor:
    """Bucket index [length, length] of (key position - query position), T5's bidirectional scheme: half of the
    buckets per direction, exact for distances below a quarter of the buckets, log-spaced up to ``max_distance``,
    the last bucket for everything further."""
    pos = torch.arange(length, dtype=torch.long, device=device)
    rel = pos[None, :] - pos[:, None]
    half = buckets // 2
    exact = half // 2
    out = (rel > 0).long() * half
    dist = rel.abs()
    # Same operation order as the reference implementations, so the float32 boundaries truncate identically.
    log_ratio = torch.log(dist.clamp(min=1).float() / exact) / math.log(max_distance / exact)
    far = (exact + (log_ratio * (half - exact)).long()).clamp(max=half - 1)
    return out + torch.where(dist < exact, dist, far)


class RelativePositionBias(nn.Module):
    """``pe_encoding``: one learned scalar per (bucket, head)."""

    def __init__(self, cfg: T5Config, device: Any, dtype: torch.dtype | None, operations: Any) -> None:
        super().__init__()
        self.cfg = cfg
        self.relative_attention_bias = operations.Embedding(cfg.buckets, cfg.heads, device=device, dtype=dtype)

    def forward(self, length: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        """The additive attention bias [1, heads, length, length] in ``dtype``."""
        idx = relative_position_buckets(length, self.cfg.buckets, self.cfg.max_distance, device)
        return self.relative_attention_bias(idx).permute(2, 0, 1)[None].to(dtype)


class T5SelfAttention(nn.Module):
    """``self_attention``: Wq/Wk/Wv/o without biases; block 0 also owns the relative-position table."""

    def __init__(self, cfg: T5Config, has_bias_table: bool, device: Any, dtype: torch.dtype | None,
                 operations: Any) -> None:
        super().__init__()
        self.heads = cfg.heads
        self.Wq = operations.Linear(cfg.d_model, cfg.inner, bias=False, device=device, dtype=dtype)
        self.Wk = operations.Linear(cfg.d_model, cfg.inner, bias=False, device=device, dtype=dtype)
        self.Wv = operations.Linear(cfg.d_model, cfg.inner, bias=False, device=device, dtype=dtype)
        self.o = operations.Linear(cfg.inner, cfg.d_model, bias=False, device=device, dtype=dtype)
        if has_bias_table:
            self.pe_encoding = RelativePositionBias(cfg, device, dtype, operations)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        # T5 folds the 1/sqrt(d) into its initialisation: the logits are q.k unscaled (scale 1.0).
        out = multi_head_attention(self.Wq(x), self.Wk(x), self.Wv(x), self.heads, mask=bias, scale=1.0)
        return self.o(out)


class T5AttentionLayer(nn.Module):
    """``self_attention_layer``: pre-RMSNorm self-attention."""

    def __init__(self, cfg: T5Config, has_bias_table: bool, device: Any, dtype: torch.dtype | None,
                 operations: Any) -> None:
        super().__init__()
        self.layer_norm = _rms_norm(cfg, device, operations)
        self.self_attention = T5SelfAttention(cfg, has_bias_table, device, dtype, operations)

    def forward(self, x: torch.Tensor, bias: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        return self.self_attention(layer_norm_fp32(self.layer_norm, x).to(dtype), bias)


class GatedGelu(nn.Module):
    """``act``: gelu_tanh(wi_0 x) * wi_1 x."""

    def __init__(self, cfg: T5Config, device: Any, dtype: torch.dtype | None, operations: Any) -> None:
        super().__init__()
        self.wi_0 = operations.Linear(cfg.d_model, cfg.d_ff, bias=False, device=device, dtype=dtype)
        self.wi_1 = operations.Linear(cfg.d_model, cfg.d_ff, bias=False, device=device, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.wi_0(x), approximate="tanh") * self.wi_1(x)


class T5FeedForwardLayer(nn.Module):
    """``ff_layer``: pre-RMSNorm gated feed-forward."""

    def __init__(self, cfg: T5Config, device: Any, dtype: torch.dtype | None, operations: Any) -> None:
        super().__init__()
        self.layer_norm = _rms_norm(cfg, device, operations)
        self.act = GatedGelu(cfg, device, dtype, operations)
        self.wo = operations.Linear(cfg.d_ff, cfg.d_model, bias=False, device=device, dtype=dtype)

    def forward(self, x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        return self.wo(self.act(layer_norm_fp32(self.layer_norm, x).to(dtype)))


class T5Block(nn.Module):
    def __init__(self, cfg: T5Config, first: bool, device: Any, dtype: torch.dtype | None, operations: Any) -> None:
        super().__init__()
        self.self_attention_layer = T5AttentionLayer(cfg, first, device, dtype, operations)
        self.ff_layer = T5FeedForwardLayer(cfg, device, dtype, operations)

    def forward(self, x: torch.Tensor, bias: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """``x`` is the float32 residual stream."""
        x = x + self.self_attention_layer(x, bias, dtype).float()
        return x + self.ff_layer(x, dtype).float()


class T5Encoder(nn.Module):
    """``t5_encoder``: token embeddings, the blocks, the final RMSNorm."""

    def __init__(self, cfg: T5Config, device: Any = None, dtype: torch.dtype | None = None,
                 operations: Any = None) -> None:
        super().__init__()
        ops = ops_or_default(operations)
        self.cfg = cfg
        self.embed_tokens = ops.Embedding(cfg.vocab_size, cfg.d_model, device=device, dtype=dtype)
        self.block = nn.ModuleList(T5Block(cfg, i == 0, device, dtype, ops) for i in range(cfg.layers))
        self.final_layer_norm = _rms_norm(cfg, device, ops)

    def forward(self, ids: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """``ids`` int64 [B, N] -> hidden states [B, N, d_model] in float32 (after the final RMSNorm)."""
        x = self.embed_tokens(ids).float()
        bias = self.block[0].self_attention_layer.self_attention.pe_encoding(ids.shape[1], dtype, ids.device)
        for block in self.block:
            x = block(x, bias, dtype)
        return layer_norm_fp32(self.final_layer_norm, x)
