"""The fusion encoder of each FaceCLIP branch (GroundingDINO "feature enhancer" layout, text stream returned).

Per layer: bi-directional cross-attention between the face patch stream and the text stream, then a post-norm
text self-attention layer, then a post-norm deformable-attention layer on the face stream. The official code
passes no masks anywhere (padding tokens take part), and only the text stream is returned.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..layers import PackedAttention, layer_norm_fp32, merge_heads, ops_or_default, split_heads


@dataclass(frozen=True)
class FuserConfig:
    d_model: int
    layers: int = 6
    bi_dim: int = 1024
    bi_heads: int = 4
    text_heads: int = 4
    text_ffn: int = 1024
    deform_heads: int = 8
    deform_levels: int = 1
    deform_points: int = 4
    deform_ffn: int = 2048
    grid: int = 12  # the face ViT's patch grid: the single deformable-attention level is grid x grid
    ln_eps: float = 1e-5
    # GroundingDINO clamps the bi-attention logits to this range (matters for fp16 only).
    logit_clamp: float = 50000.0


class BiAttention(nn.Module):
    """Dual cross-attention: each face token attends over text, each text token over face, from one logit map."""

    def __init__(self, cfg: FuserConfig, device: Any, dtype: torch.dtype | None, operations: Any) -> None:
        super().__init__()
        d, e = cfg.d_model, cfg.bi_dim
        self.heads = cfg.bi_heads
        self.clamp = cfg.logit_clamp
        self.v_proj = operations.Linear(d, e, bias=True, device=device, dtype=dtype)
        self.l_proj = operations.Linear(d, e, bias=True, device=device, dtype=dtype)
        self.values_v_proj = operations.Linear(d, e, bias=True, device=device, dtype=dtype)
        self.values_l_proj = operations.Linear(d, e, bias=True, device=device, dtype=dtype)
        self.out_v_proj = operations.Linear(e, d, bias=True, device=device, dtype=dtype)
        self.out_l_proj = operations.Linear(e, d, bias=True, device=device, dtype=dtype)

    def forward(self, v: torch.Tensor, l: torch.Tensor, need_v: bool = True
                ) -> tuple[torch.Tensor | None, torch.Tensor]:
        q = split_heads(self.v_proj(v), self.heads)
        k = split_heads(self.l_proj(l), self.heads)
        logits = (q * q.shape[-1] ** -0.5) @ k.transpose(-1, -2)  # [B, h, Nv, Nl]
        # Official: subtract the max over the whole tensor (all rows, heads and batch), then clamp. Softmax is
        # shift-invariant, so this only matters through the clamp, but it is cheap to copy exactly.
        logits = (logits - logits.max()).clamp(-self.clamp, self.clamp)
        logits_t = logits.transpose(-1, -2)
        logits_t = (logits_t - logits_t.amax(dim=-1, keepdim=True)).clamp(-self.clamp, self.clamp)
        dl = merge_heads(logits_t.softmax(dim=-1) @ split_heads(self.values_v_proj(v), self.heads))
        dl = self.out_l_proj(dl)
        if not need_v:
            return None, dl
        dv = merge_heads(logits.softmax(dim=-1) @ split_heads(self.values_l_proj(l), self.heads))
        return self.out_v_proj(dv), dl


class BiAttentionBlock(nn.Module):
    """The checkpoint's layer-scale vectors gamma_v / gamma_l multiply the attention's output projections; they are
    folded into out_v_proj / out_l_proj at load (``checkpoint_layout``), so every weight sits in a layer."""

    def __init__(self, cfg: FuserConfig, device: Any, dtype: torch.dtype | None, operations: Any) -> None:
        super().__init__()
        d = cfg.d_model
        self.layer_norm_v = operations.LayerNorm(d, eps=cfg.ln_eps, device=device, dtype=torch.float32)
        self.layer_norm_l = operations.LayerNorm(d, eps=cfg.ln_eps, device=device, dtype=torch.float32)
        self.attn = BiAttention(cfg, device, dtype, operations)

    def forward(self, v: torch.Tensor, l: torch.Tensor, need_v: bool = True
                ) -> tuple[torch.Tensor | None, torch.Tensor]:
        # The residual is added to the normalised inputs (official quirk), not to the raw streams.
        v = layer_norm_fp32(self.layer_norm_v, v)
        l = layer_norm_fp32(self.layer_norm_l, l)
        dv, dl = self.attn(v, l, need_v=need_v)
        if dv is None:
            return None, l + dl
        return v + dv, l + dl


class TextLayer(nn.Module):
    """Post-norm transformer layer over the text stream; q = k = text + positions, v = text; no mask."""

    def __init__(self, cfg: FuserConfig, device: Any, dtype: torch.dtype | None, operations: Any) -> None:
        super().__init__()
        d = cfg.d_model
        self.self_attn = PackedAttention(d, cfg.text_heads, device=device, dtype=dtype, operations=operations)
        self.linear1 = operations.Linear(d, cfg.text_ffn, bias=True, device=device, dtype=dtype)
        self.linear2 = operations.Linear(cfg.text_ffn, d, bias=True, device=device, dtype=dtype)
        self.norm1 = operations.LayerNorm(d, eps=cfg.ln_eps, device=device, dtype=torch.float32)
        self.norm2 = operations.LayerNorm(d, eps=cfg.ln_eps, device=device, dtype=torch.float32)

    def forward(self, l: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        l = layer_norm_fp32(self.norm1, l + self.self_attn(l + pos, value=l))
        return layer_norm_fp32(self.norm2, l + self.linear2(F.relu(self.linear1(l))))


class DeformableAttention(nn.Module):
    """Multi-scale deformable attention, single level, in plain PyTorch (bilinear grid_sample, zero padding,
    align_corners=False), the official fallback path of GroundingDINO."""

    def __init__(self, cfg: FuserConfig, device: Any, dtype: torch.dtype | None, operations: Any) -> None:
        super().__init__()
        d = cfg.d_model
        self.heads, self.levels, self.points = cfg.deform_heads, cfg.deform_levels, cfg.deform_points
        if self.levels != 1:
            raise ValueError("FaceCLIP's deformable attention has a single feature level")
        self.grid = cfg.grid
        n = self.heads * self.levels * self.points
        self.sampling_offsets = operations.Linear(d, n * 2, bias=True, device=device, dtype=dtype)
        self.attention_weights = operations.Linear(d, n, bias=True, device=device, dtype=dtype)
        self.value_proj = operations.Linear(d, d, bias=True, device=device, dtype=dtype)
        self.output_proj = operations.Linear(d, d, bias=True, device=device, dtype=dtype)

    def reference_points(self, device: torch.device) -> torch.Tensor:
        """Patch centres in [0, 1], (x, y), row-major: [grid*grid, 2]. Built like GroundingDINO (linspace / size)
        so the values match bit for bit."""
        g = self.grid
        c = torch.linspace(0.5, g - 0.5, g, dtype=torch.float32, device=device) / g
        ref_y, ref_x = torch.meshgrid(c, c, indexing="ij")
        return torch.stack([ref_x.reshape(-1), ref_y.reshape(-1)], dim=-1)

    def forward(self, query: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        b, nq, d = query.shape
        h, p, g = self.heads, self.points, self.grid
        hd = d // h
        val = self.value_proj(value)  # [B, g*g, d]
        # Head-major value maps, one image per (batch, head): [B*h, hd, g, g].
        val = val.view(b, g * g, h, hd).permute(0, 2, 3, 1).reshape(b * h, hd, g, g)
        offsets = self.sampling_offsets(query).view(b, nq, h, p, 2).float()
        weights = self.attention_weights(query).view(b, nq, h, p).float().softmax(dim=-1)
        # Offsets are in patch units; the normaliser is (W, H) to match the (x, y) order.
        loc = self.reference_points(query.device)[None, :, None, None, :] + offsets / g
        grid = (2 * loc - 1).permute(0, 2, 1, 3, 4).reshape(b * h, nq, p, 2)
        # Sampling runs in float32 whatever the weights: it is tiny (B*h maps of 12x12), and CPU grid_sample in
        # bfloat16 (torch 2.13) is both inaccurate (errors ~0.3 on unit-scale maps) and gave NaN outputs on the
        # full-size model.
        sampled = F.grid_sample(val.float(), grid, mode="bilinear", padding_mode="zeros",
                                align_corners=False)  # [B*h, hd, nq, p]
        w = weights.permute(0, 2, 1, 3).reshape(b * h, 1, nq, p)
        out = (sampled * w).sum(-1).view(b, h * hd, nq).transpose(1, 2)
        return self.output_proj(out.to(query.dtype))


class DeformableLayer(nn.Module):
    """Post-norm layer over the face stream: deformable self-attention (query = face + positions), ReLU FFN."""

    def __init__(self, cfg: FuserConfig, device: Any, dtype: torch.dtype | None, operations: Any) -> None:
        super().__init__()
        d = cfg.d_model
        self.self_attn = DeformableAttention(cfg, device, dtype, operations)
        self.norm1 = operations.LayerNorm(d, eps=cfg.ln_eps, device=device, dtype=torch.float32)
        self.linear1 = operations.Linear(d, cfg.deform_ffn, bias=True, device=device, dtype=dtype)
        self.linear2 = operations.Linear(cfg.deform_ffn, d, bias=True, device=device, dtype=dtype)
        self.norm2 = operations.LayerNorm(d, eps=cfg.ln_eps, device=device, dtype=torch.float32)

    def forward(self, v: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        v = layer_norm_fp32(self.norm1, v + self.self_attn(v + pos, v))
        return layer_norm_fp32(self.norm2, v + self.linear2(F.relu(self.linear1(v))))


class FusionEncoder(nn.Module):
    """``encoder.{fusion_layers,text_layers,layers}.N`` in the checkpoint."""

    def __init__(self, cfg: FuserConfig, device: Any, dtype: torch.dtype | None, operations: Any) -> None:
        super().__init__()
        self.fusion_layers = nn.ModuleList(BiAttentionBlock(cfg, device, dtype, operations)
                                           for _ in range(cfg.layers))
        self.text_layers = nn.ModuleList(TextLayer(cfg, device, dtype, operations) for _ in range(cfg.layers))
        self.layers = nn.ModuleList(DeformableLayer(cfg, device, dtype, operations) for _ in range(cfg.layers))

    def forward(self, v: torch.Tensor, v_pos: torch.Tensor, l: torch.Tensor, l_pos: torch.Tensor) -> torch.Tensor:
        last = len(self.layers) - 1
        for i, (fusion, text, deform) in enumerate(
                zip(self.fusion_layers, self.text_layers, self.layers, strict=True)):
            # Only the text stream is returned, so the face-stream work of the last layer is skipped:
            # its output would never be read.
            v, l = fusion(v, l, need_v=i < last)
            l = text(l, l_pos)
            if i < last:
                v = deform(v, v_pos)
        return l


class Fuser(nn.Module):
    """``fuser.*``: the encoder. The checkpoint's two training-only heads (enc_output, enc_output_norm:
    GroundingDINO two-stage leftovers) are not built."""

    def __init__(self, cfg: FuserConfig, device: Any = None, dtype: torch.dtype | None = None,
                 operations: Any = None) -> None:
        super().__init__()
        self.encoder = FusionEncoder(cfg, device, dtype, ops_or_default(operations))

    def forward(self, v: torch.Tensor, v_pos: torch.Tensor, l: torch.Tensor, l_pos: torch.Tensor) -> torch.Tensor:
        return self.encoder(v, v_pos, l, l_pos)
