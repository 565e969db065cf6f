"""SeFi-IDE at sampling time: which noise stage a timestep belongs to, and what the cross-attention keys, values
and pooled vector of an identity's prompt are at that stage.

Stages are equal ranges of the training timesteps [0, num_train_timesteps), stage 0 the least noisy, as in
ProSpect (``cond[int(t * stages / 1000)]``). Training draws a stage, then a timestep inside it; sampling maps the
model's own timestep of each row back to its stage, so both sides use this one function.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from .errors import IdentityError

if TYPE_CHECKING:
    from .embedding import IDEmbedding
    from .prompts import PromptTokens
    from .text import SDXLTextEncoder


def stage_index(timesteps: torch.Tensor, stages: int, num_train_timesteps: int = 1000) -> torch.Tensor:
    """Stage of each timestep (continuous, in [0, num_train_timesteps)): long tensor of the same shape."""
    s = torch.floor(timesteps.float() * stages / num_train_timesteps).long()
    return s.clamp(0, stages - 1)


def stage_timesteps(stages: torch.Tensor, fractions: torch.Tensor, count: int,
                    num_train_timesteps: int = 1000) -> torch.Tensor:
    """Integer training timesteps inside each stage's range, ``fractions`` in [0, 1) placing them."""
    span = num_train_timesteps / count
    t = torch.floor(stages.float() * span + fractions * span)
    return t.clamp(0, num_train_timesteps - 1)


@dataclass(eq=False)
class StageContexts:
    """One identity's prompt encoded once per stage: keys' context (key-side tokens), values' context (value-side
    tokens) and the pooled vector (from the key-side tokens, as in training), each [S, L, C] / [S, P]."""

    keys: torch.Tensor
    values: torch.Tensor
    pooled: torch.Tensor
    num_train_timesteps: int = 1000
    _cache: dict = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if self.keys.shape != self.values.shape or self.keys.dim() != 3:
            raise IdentityError(f"stage contexts must be [stages, length, width] for keys and values alike, got "
                                f"{tuple(self.keys.shape)} and {tuple(self.values.shape)}")
        if self.pooled.shape[0] != self.keys.shape[0]:
            raise IdentityError("one pooled vector per stage is needed")

    @property
    def stages(self) -> int:
        return int(self.keys.shape[0])

    @property
    def length(self) -> int:
        return int(self.keys.shape[1])

    def on(self, device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Keys, values, pooled on ``device`` in ``dtype``, moved once and kept (sampling asks every step)."""
        key = (str(device), dtype)
        if key not in self._cache:
            self._cache[key] = tuple(t.to(device=device, dtype=dtype) for t in (self.keys, self.values, self.pooled))
        return self._cache[key]


def _fit(ours: torch.Tensor, row: torch.Tensor, length: int) -> torch.Tensor:
    """Our [L, C] context in place of a [Lr, C] row: the whole row, ComfyUI's repeat-padding of it (batched with
    a longer prompt), or its first L tokens when more text was concatenated after it (ConditioningConcat)."""
    total = row.shape[0]
    if total == length:
        return ours
    if total < length:
        raise IdentityError(f"Apply ID Embedding's prompt is {length} tokens, but the conditioning reaching the "
                            f"model has only {total}: something shortened it on the way. Connect Apply ID "
                            "Embedding's positive straight to the sampler (masks and combines are fine).")
    repeats, rest = divmod(total, length)
    if rest == 0 and torch.equal(row, row[:length].repeat(repeats, 1)):
        return ours.repeat(repeats, 1)
    return torch.cat([ours, row[length:]])


def route(context: torch.Tensor, y: torch.Tensor | None, timesteps: torch.Tensor,
          rows: Sequence[StageContexts | None]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """For a batch whose row b belongs to ``rows[b]`` (None: not an identity prompt), the keys' context, the
    values' context and the ADM vector ``y`` (pooled part replaced) at each row's stage. Rows without an identity
    keep their context (as keys and values) and ``y``."""
    if len(rows) != context.shape[0]:
        raise IdentityError(f"the sampler batched {context.shape[0]} conditioning rows but the identity routing "
                            f"has {len(rows)}; this is a bug, please report it")
    keys, values = context.clone(), context.clone()
    y_out = None if y is None else y.clone()
    t = timesteps.reshape(-1)
    if t.numel() == 1:
        t = t.expand(len(rows))
    for b, stages in enumerate(rows):
        if stages is None:
            continue
        s = int(stage_index(t[b], stages.stages, stages.num_train_timesteps))
        k, v, pooled = stages.on(context.device, context.dtype)
        keys[b] = _fit(k[s], context[b], stages.length)
        values[b] = _fit(v[s], context[b], stages.length)
        if y_out is not None:
            width = pooled.shape[-1]
            y_out[b, :width] = pooled[s].to(y_out.dtype)
    return keys, values, y_out


@torch.no_grad()
def encode_stages(text: SDXLTextEncoder, tokens: PromptTokens, embedding: IDEmbedding, device: torch.device
                  ) -> tuple[torch.Tensor, torch.Tensor, StageContexts]:
    """An identity's prompt, encoded for sampling: the (context, pooled) other consumers see (the stages' mean
    tokens, what ``embedding:name`` gives) and the per-stage keys/values/pooled that ``route`` uses, on
    ``device``."""
    context, pooled = text.encode(tokens, embedding.collapsed())
    keys = [text.encode(tokens, embedding.rows(s, 0)) for s in range(embedding.stages)]
    values = [text.encode(tokens, embedding.rows(s, 1))[0] for s in range(embedding.stages)]
    stages = StageContexts(keys=torch.cat([k for k, _ in keys]).to(device), values=torch.cat(values).to(device),
                           pooled=torch.cat([p for _, p in keys]).to(device),
                           num_train_timesteps=embedding.num_train_timesteps)
    return context.to(device), pooled.to(device), stages
