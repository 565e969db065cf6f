"""The learned identity: tokens per encoder shaped [stages, parts, N, D], and what it becomes on disk.

stages S: timestep ranges (equal splits of [0, num_train_timesteps), see routing.stage_index); stage 0 is the
least noisy.
parts P: 1 (the same tokens feed keys and values) or 2 (index 0 = key side, 1 = value side).
S = P = 1 is plain Textual Inversion, exported as ComfyUI's standard SDXL embedding.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .errors import IdentityError
from .text import ENCODERS

FORMAT = "faceclip-id-embedding/1"
KEY, VALUE = 0, 1


@dataclass
class IDEmbedding:
    method: str
    tokens: dict[str, torch.Tensor]  # "clip_l": [S,P,N,768], "clip_g": [S,P,N,1280]
    num_train_timesteps: int = 1000
    metadata: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if set(self.tokens) != set(ENCODERS):
            raise IdentityError(f"an SDXL ID embedding needs tokens for {ENCODERS}, got {sorted(self.tokens)}")
        shapes = {name: tuple(t.shape[:3]) for name, t in self.tokens.items()}
        if any(t.dim() != 4 for t in self.tokens.values()) or len(set(shapes.values())) != 1:
            raise IdentityError(f"ID embedding tokens must be [stages, parts, N, D] with equal stages/parts/N "
                                f"for both encoders, got {shapes}")
        if self.parts not in (1, 2):
            raise IdentityError(f"parts must be 1 (shared) or 2 (key/value), got {self.parts}")

    @property
    def stages(self) -> int:
        return int(self.tokens["clip_l"].shape[0])

    @property
    def parts(self) -> int:
        return int(self.tokens["clip_l"].shape[1])

    @property
    def num_tokens(self) -> int:
        return int(self.tokens["clip_l"].shape[2])

    @property
    def is_plain(self) -> bool:
        """One stage, no key/value split: an ordinary Textual-Inversion embedding."""
        return self.stages == 1 and self.parts == 1

    def rows(self, stage: int, part: int) -> dict[str, torch.Tensor]:
        """[N, D] per encoder for one stage and side (side ignored without a key/value split)."""
        p = min(part, self.parts - 1)
        return {name: t[stage, p] for name, t in self.tokens.items()}

    def collapsed(self) -> dict[str, torch.Tensor]:
        """[N, D] per encoder: the tokens themselves when plain, else their mean over stages and sides (an
        approximation that lets ``embedding:name`` use a full SeFi-IDE embedding without the Apply node)."""
        return {name: t.mean(dim=(0, 1)).contiguous() for name, t in self.tokens.items()}

    def detach(self) -> IDEmbedding:
        return IDEmbedding(self.method, {k: v.detach().float().cpu().contiguous() for k, v in self.tokens.items()},
                           self.num_train_timesteps, dict(self.metadata))
