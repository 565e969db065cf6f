"""FaceT5's fuser (``encoder_2.fuser.encoder.*``): identity enters the T5 text stream only here.

Per layer, as the official ``TextFaceEmbeddingFuser``: a BiAttention block between the projected face patches and
the text stream, a post-norm text self-attention layer (queries and keys get the stored sinusoid text positions),
and a post-norm layer on the face stream. The first two are FaceCLIP-SDXL's blocks, reused.

The face layer differs from its checkpoint's class on purpose. Officially a batch-first [B, 144, d] tensor goes into
a sequence-first ``nn.MultiheadAttention`` without positions, so it attends across the *batch* for each patch index;
with one row (how the official script always calls it: positive and negative separately) a query has a single key,
the softmax is exactly 1 and the attention is ``out_proj(v_proj(x))``. That is what is built here, so every row of a
batch is encoded as if alone, equal to the official B=1 calls; the q/k projections are never needed. The last face
layer's output is never read, so that layer is not built either.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..layers import layer_norm_fp32, ops_or_default
from ..sdxl.fuser import BiAttentionBlock, TextLayer
from .config import FaceT5FuserConfig


class SingleKeyAttention(nn.Module):
    """Multi-head self-attention where each query sees one key (itself): out_proj(v_proj(x)). Loaded from the
    value rows of the checkpoint's packed ``in_proj``."""

    def __init__(self, d: int, device: Any, dtype: torch.dtype | None, operations: Any) -> None:
        super().__init__()
        self.v_proj = operations.Linear(d, d, bias=True, device=device, dtype=dtype)
        self.out_proj = operations.Linear(d, d, bias=True, device=device, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out_proj(self.v_proj(x))


class FaceLayer(nn.Module):
    """``layers.i``: post-norm, ReLU feed-forward; the face stream gets no positions (official argument order)."""

    def __init__(self, cfg: FaceT5FuserConfig, device: Any, dtype: torch.dtype | None, operations: Any) -> None:
        super().__init__()
        d = cfg.d_model
        self.self_attn = SingleKeyAttention(d, device, dtype, operations)
        self.linear1 = operations.Linear(d, cfg.face_ffn, bias=True, device=device, dtype=dtype)
        self.linear2 = operations.Linear(cfg.face_ffn, d, bias=True, device=device, dtype=dtype)
        self.norm1 = operations.LayerNorm(d, eps=cfg.ln_eps, device=device, dtype=torch.float32)
        self.norm2 = operations.LayerNorm(d, eps=cfg.ln_eps, device=device, dtype=torch.float32)

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        v = layer_norm_fp32(self.norm1, v + self.self_attn(v))
        return layer_norm_fp32(self.norm2, v + self.linear2(F.relu(self.linear1(v))))


class FusionEncoder(nn.Module):
    """``fuser.encoder``: ``fusion_layers`` and ``text_layers`` (one per layer), ``layers`` (all but the last)."""

    def __init__(self, cfg: FaceT5FuserConfig, device: Any, dtype: torch.dtype | None, operations: Any) -> None:
        super().__init__()
        shared = cfg.blocks()
        self.fusion_layers = nn.ModuleList(BiAttentionBlock(shared, device, dtype, operations)
                                           for _ in range(cfg.layers))
        self.text_layers = nn.ModuleList(TextLayer(shared, device, dtype, operations) for _ in range(cfg.layers))
        self.layers = nn.ModuleList(FaceLayer(cfg, device, dtype, operations) for _ in range(cfg.layers - 1))

    def forward(self, face: torch.Tensor, text: torch.Tensor, text_pos: torch.Tensor,
                streams: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """``face`` [B, 144, d], ``text`` [B, N, d], ``text_pos`` [N, d] -> the fused text stream [B, N, d].
        ``streams``, when given, receives each sub-layer's output (``<i>.biattn_face`` ...) for debugging."""
        last = len(self.fusion_layers) - 1
        pos = text_pos[None].expand_as(text)
        for i, (fusion, text_layer) in enumerate(zip(self.fusion_layers, self.text_layers, strict=True)):
            # The face stream after the last BiAttention is never read: skip it unless it is being recorded.
            face_out, text = fusion(face, text, need_v=i < last or streams is not None)
            text_in = text
            text = text_layer(text, pos)
            if i < last:
                face = self.layers[i](face_out)
            if streams is not None:
                streams.update({f"{i}.biattn_face": face_out, f"{i}.biattn_text": text_in, f"{i}.text": text})
                if i < last:
                    streams[f"{i}.face"] = face
        return text


class FaceT5Fuser(nn.Module):
    """``fuser``. The checkpoint's ``enc_output`` / ``enc_output_norm`` (GroundingDINO two-stage leftovers, never
    used) are not built."""

    def __init__(self, cfg: FaceT5FuserConfig, device: Any = None, dtype: torch.dtype | None = None,
                 operations: Any = None) -> None:
        super().__init__()
        self.encoder = FusionEncoder(cfg, device, dtype, ops_or_default(operations))

    def forward(self, face: torch.Tensor, text: torch.Tensor, text_pos: torch.Tensor,
                streams: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        return self.encoder(face, text, text_pos, streams)
