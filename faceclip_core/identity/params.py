"""Pluggable parameterisations: what is learned, and how it becomes the [S, P, N, D] tokens.

- StagedTokens (SeFi-IDE): one identity expanded into per-stage key/value tokens: a shared base token set
  plus a residual per (stage, side), the residuals starting at zero. The paper generates the pairs with a
  small self-attention block whose details are not published; base + residuals keeps the "one identity,
  several views" coupling with no unknown architecture (choice).
- IDEAParams (ID-EA): plain tokens plus the ID-Enhancer and the training-only ID-Adapter.
"""
from __future__ import annotations

import torch
from torch import nn

from .text import ENCODERS


class Parameterisation(nn.Module):
    """Base: ``tokens()`` -> {"clip_l": [S,P,N,768], "clip_g": [S,P,N,1280]}; optional context adaptation and
    regulariser used only during training."""

    def tokens(self) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def trainable(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def token_parameters(self) -> list[nn.Parameter]:
        """The trainable tensors the tokens are made of (what the per-term gradient norms are taken on)."""
        return self.trainable()

    def adapt_context(self, context: torch.Tensor, progress: float = 0.0) -> torch.Tensor:
        """The text context the UNet sees during training; ``progress`` = completed fraction of the run."""
        return context

    def regulariser(self) -> torch.Tensor | None:
        return None


class StagedTokens(Parameterisation):
    def __init__(self, init_rows: dict[str, torch.Tensor], stages: int = 1, parts: int = 1) -> None:
        super().__init__()
        self.stages, self.parts = stages, parts
        self.base = nn.ParameterDict({n: nn.Parameter(init_rows[n].detach().clone().float()) for n in ENCODERS})
        self.delta = nn.ParameterDict({
            n: nn.Parameter(torch.zeros(stages, parts, *init_rows[n].shape), requires_grad=stages * parts > 1)
            for n in ENCODERS})

    def tokens(self) -> dict[str, torch.Tensor]:
        return {n: self.base[n][None, None] + self.delta[n] for n in ENCODERS}


class IDEnhancer(nn.Module):
    """ID-EA's ID-Enhancer: the face-recognition embedding (query) attends to the textual ID anchor (keys and
    values); out come N fused identity tokens in the context width."""

    def __init__(self, face_dim: int, context_dim: int, heads: int) -> None:
        super().__init__()
        self.face = nn.Linear(face_dim, context_dim)
        self.text = nn.Linear(context_dim, context_dim)
        self.attn = nn.MultiheadAttention(context_dim, heads, batch_first=True)
        self.out = nn.Linear(context_dim, context_dim)

    def forward(self, face: torch.Tensor, anchor: torch.Tensor) -> torch.Tensor:
        # face [F], anchor [N, C] -> [N, C]
        n = anchor.shape[0]
        query = self.face(face).expand(n, -1).unsqueeze(0)
        kv = self.text(anchor).unsqueeze(0)
        fused, _ = self.attn(query, kv, kv, need_weights=False)
        return self.out(fused)[0]


class IDAdapter(nn.Module):
    """ID-EA's ID-Adapter (training only): the fused tokens join the text context in one self-attention, and
    the context moves by beta * tanh(gamma) * that result (gamma starts at 0, so it starts as the identity)."""

    def __init__(self, context_dim: int, heads: int, scale: float) -> None:
        super().__init__()
        self.fc1 = nn.Linear(context_dim, context_dim)
        self.attn = nn.MultiheadAttention(context_dim, heads, batch_first=True)
        self.gamma = nn.Parameter(torch.zeros(()))
        self.scale = scale

    def forward(self, context: torch.Tensor, fused: torch.Tensor, strength: float = 1.0) -> torch.Tensor:
        length = context.shape[1]
        extra = self.fc1(fused).unsqueeze(0).expand(context.shape[0], -1, -1)
        joint = torch.cat([context, extra], dim=1)
        out, _ = self.attn(joint, joint, joint, need_weights=False)
        return context + strength * self.scale * torch.tanh(self.gamma) * out[:, :length]


class IDEAParams(Parameterisation):
    """Tokens initialised at the anchor, pulled back to it by a Mahalanobis regulariser whose covariance is the
    anchor rows' own (plus ``eps`` I), as in ID-EA's code. The enhancer reads the fixed anchor, as the code does,
    so no gradient reaches the tokens through a module that inference never runs. The adapter's contribution
    fades to zero over the last ``fade`` fraction of the run, so at the end the tokens alone carry the identity."""

    def __init__(self, anchor: dict[str, torch.Tensor], face: torch.Tensor, heads: int, scale: float,
                 reg_eps: float, train_enhancer: bool, fade: float = 0.0) -> None:
        super().__init__()
        self.tokens_ = nn.ParameterDict({n: nn.Parameter(anchor[n].detach().clone().float()) for n in ENCODERS})
        context_dim = sum(int(anchor[n].shape[-1]) for n in ENCODERS)
        self.register_buffer("face", face.detach().float().reshape(-1))
        self.enhancer = IDEnhancer(int(self.face.numel()), context_dim, heads)
        self.enhancer.requires_grad_(train_enhancer)
        self.adapter = IDAdapter(context_dim, heads, scale)
        self.fade = fade
        for n in ENCODERS:
            rows = anchor[n].detach().float()
            d = rows.shape[-1]
            centered = rows - rows.mean(0)  # torch.cov's unbiased estimate, without its host-side checks
            cov = centered.T @ centered / (rows.shape[0] - 1) if rows.shape[0] > 1 else torch.zeros(d, d)
            self.register_buffer(f"anchor_{n}", rows.clone())
            # cov + eps * I is positive definite, so always invertible: inv_ex skips the check that reads the
            # result back to the host (which fake tensors, bench/regime.py, cannot)
            self.register_buffer(f"precision_{n}", torch.linalg.inv_ex(cov + reg_eps * torch.eye(d)).inverse)

    def tokens(self) -> dict[str, torch.Tensor]:
        return {n: self.tokens_[n][None, None] for n in ENCODERS}

    def token_parameters(self) -> list[nn.Parameter]:
        return [self.tokens_[n] for n in ENCODERS]

    def adapter_strength(self, progress: float) -> float:
        """1 until the fade starts, then linearly down to 0 at the end of the run."""
        if self.fade <= 0:
            return 1.0
        return min(1.0, max(0.0, (1.0 - progress) / self.fade))

    def adapt_context(self, context: torch.Tensor, progress: float = 0.0) -> torch.Tensor:
        strength = self.adapter_strength(progress)
        if strength == 0.0:
            return context
        anchor = torch.cat([getattr(self, f"anchor_{n}") for n in ENCODERS], dim=-1)
        return self.adapter(context, self.enhancer(self.face.to(context), anchor.to(context)), strength)

    def regulariser(self) -> torch.Tensor:
        terms = []
        for n in ENCODERS:
            delta = self.tokens_[n] - getattr(self, f"anchor_{n}")
            m2 = torch.einsum("nd,de,ne->n", delta, getattr(self, f"precision_{n}"), delta)
            terms.append(torch.sqrt(m2.clamp_min(1e-12)).mean())
        return torch.stack(terms).sum()
