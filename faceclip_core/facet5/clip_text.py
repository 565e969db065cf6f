"""FaceT5's CLIP-L text model (``encoder_1.text_model.*``, Hugging Face ``CLIPTextModel`` names).

The same math as the FaceCLIP-SDXL text tower (pre-norm, causal, quick_gelu, final LayerNorm, pooled at the
argmax id), but with Hugging Face's separate q/k/v projections and names; it only provides FLUX's pooled vector.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..layers import layer_norm_fp32, multi_head_attention, ops_or_default, positions
from ..sdxl.text_tower import ACTIVATIONS, TextTowerConfig


class CLIPAttention(nn.Module):
    def __init__(self, cfg: TextTowerConfig, device: Any, dtype: torch.dtype | None, operations: Any) -> None:
        super().__init__()
        w = cfg.width
        self.heads = cfg.heads
        self.q_proj = operations.Linear(w, w, bias=True, device=device, dtype=dtype)
        self.k_proj = operations.Linear(w, w, bias=True, device=device, dtype=dtype)
        self.v_proj = operations.Linear(w, w, bias=True, device=device, dtype=dtype)
        self.out_proj = operations.Linear(w, w, bias=True, device=device, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = multi_head_attention(self.q_proj(x), self.k_proj(x), self.v_proj(x), self.heads, causal=True)
        return self.out_proj(out)


class CLIPMLP(nn.Module):
    def __init__(self, cfg: TextTowerConfig, device: Any, dtype: torch.dtype | None, operations: Any) -> None:
        super().__init__()
        self.fc1 = operations.Linear(cfg.width, cfg.mlp_width, bias=True, device=device, dtype=dtype)
        self.fc2 = operations.Linear(cfg.mlp_width, cfg.width, bias=True, device=device, dtype=dtype)
        self.act = ACTIVATIONS[cfg.activation]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class CLIPLayer(nn.Module):
    def __init__(self, cfg: TextTowerConfig, device: Any, dtype: torch.dtype | None, operations: Any) -> None:
        super().__init__()
        self.layer_norm1 = operations.LayerNorm(cfg.width, eps=cfg.ln_eps, device=device, dtype=torch.float32)
        self.self_attn = CLIPAttention(cfg, device, dtype, operations)
        self.layer_norm2 = operations.LayerNorm(cfg.width, eps=cfg.ln_eps, device=device, dtype=torch.float32)
        self.mlp = CLIPMLP(cfg, device, dtype, operations)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.self_attn(layer_norm_fp32(self.layer_norm1, x))
        return x + self.mlp(layer_norm_fp32(self.layer_norm2, x))


class CLIPEmbeddings(nn.Module):
    def __init__(self, cfg: TextTowerConfig, device: Any, dtype: torch.dtype | None, operations: Any) -> None:
        super().__init__()
        self.token_embedding = operations.Embedding(cfg.vocab_size, cfg.width, device=device, dtype=dtype)
        self.position_embedding = operations.Embedding(cfg.context_length, cfg.width, device=device, dtype=dtype)

    def forward(self, ids: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        x = self.token_embedding(ids).to(dtype)
        return x + positions(self.position_embedding, x)


class CLIPEncoder(nn.Module):
    def __init__(self, cfg: TextTowerConfig, device: Any, dtype: torch.dtype | None, operations: Any) -> None:
        super().__init__()
        self.layers = nn.ModuleList(CLIPLayer(cfg, device, dtype, operations) for _ in range(cfg.layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return x


class CLIPTextTransformer(nn.Module):
    """``text_model``."""

    def __init__(self, cfg: TextTowerConfig, device: Any, dtype: torch.dtype | None, operations: Any) -> None:
        super().__init__()
        self.embeddings = CLIPEmbeddings(cfg, device, dtype, operations)
        self.encoder = CLIPEncoder(cfg, device, dtype, operations)
        self.final_layer_norm = operations.LayerNorm(cfg.width, eps=cfg.ln_eps, device=device, dtype=torch.float32)

    def forward(self, ids: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = layer_norm_fp32(self.final_layer_norm, self.encoder(self.embeddings(ids, dtype)))
        # The FLUX.1-dev text-encoder config has eos_token_id 2, which makes transformers take the legacy pooling:
        # the position of the largest id, i.e. the first EOT (49407), since rows are padded with EOT.
        eot = ids.argmax(dim=-1)
        return hidden, hidden[torch.arange(hidden.shape[0], device=hidden.device), eot]


class CLIPTextModel(nn.Module):
    """``encoder_1``: returns (last hidden state [B, 77, width], pooled [B, width], no projection)."""

    def __init__(self, cfg: TextTowerConfig, device: Any = None, dtype: torch.dtype | None = None,
                 operations: Any = None) -> None:
        super().__init__()
        self.cfg = cfg
        self.text_model = CLIPTextTransformer(cfg, device, dtype, ops_or_default(operations))

    def forward(self, ids: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        return self.text_model(ids, dtype)
