"""Cross-attention hooks, as plain functions with the signatures of ComfyUI's attn2 patches.

ComfyUI calls an ``attn2_patch`` as ``p(n, context, value, extra_options) -> (n, context, value)`` before the
key/value projections, and an ``attn2`` replace patch as ``r(q, k, v, extra_options) -> out`` with the projected
tensors (out before ``to_out``). ``extra_options`` carries ``block`` (e.g. ("input", 8)), ``n_heads``,
``sigmas`` and ``cond_or_uncond`` (0 = conditional chunk of the batch). The nodes register these objects with a
cloned model; nothing here imports ComfyUI.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F


def attention_output(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int) -> torch.Tensor:
    b, n, d = q.shape
    dh = d // heads
    q, k, v = (t.reshape(t.shape[0], -1, heads, dh).transpose(1, 2) for t in (q, k, v))
    out = F.scaled_dot_product_attention(q, k, v)
    return out.transpose(1, 2).reshape(b, n, d)


def attention_probs(q: torch.Tensor, k: torch.Tensor, heads: int) -> torch.Tensor:
    """softmax(q k^T / sqrt(d)) averaged over heads: [B, queries, keys]."""
    b, n, d = q.shape
    dh = d // heads
    qh = q.reshape(b, n, heads, dh).transpose(1, 2).float()
    kh = k.reshape(k.shape[0], -1, heads, dh).transpose(1, 2).float()
    return torch.softmax(qh @ kh.transpose(-1, -2) / math.sqrt(dh), dim=-1).mean(dim=1)


@dataclass
class TrainingAttention:
    """During training: feeds the value-side context (SeFi-IDE's K/V split) and measures SeFi-IDE's attention
    alignment against the frozen model's own attention to the reference prompt, with the same queries.

    The reference context rides along behind the real keys (the patch appends it, the replace patch splits it
    off again), so the reference map costs one extra key projection, not a second UNet pass.
    """

    blocks: frozenset[tuple[str, int]] = frozenset()
    value: torch.Tensor | None = None
    reference: torch.Tensor | None = None
    id_slots: Sequence[int] = ()
    ref_slots: Sequence[int] = ()
    align_prefix: bool = False
    terms: list[torch.Tensor] = field(default_factory=list)

    def arm(self, value: torch.Tensor | None, reference: torch.Tensor | None, id_slots: Sequence[int],
            ref_slots: Sequence[int]) -> None:
        self.value, self.reference = value, reference
        self.id_slots, self.ref_slots = tuple(id_slots), tuple(ref_slots)
        self.terms = []

    def disarm(self) -> list[torch.Tensor]:
        terms, self.terms = self.terms, []
        self.value = self.reference = None
        return terms

    def _probing(self, extra: dict) -> bool:
        block = extra.get("block")
        return self.reference is not None and block is not None and (block[0], int(block[1])) in self.blocks

    def attn2_patch(self, n: torch.Tensor, context: torch.Tensor, value: torch.Tensor | None, extra: dict):
        if self.value is not None:
            value = self.value.to(context).expand(context.shape[0], -1, -1)
        if value is None:
            value = context
        if self._probing(extra):
            ref = self.reference.to(context).expand(context.shape[0], -1, -1)
            context, value = torch.cat([context, ref], dim=1), torch.cat([value, ref], dim=1)
        return n, context, value

    def attn2_replace(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, extra: dict) -> torch.Tensor:
        heads = int(extra["n_heads"])
        if not self._probing(extra):
            return attention_output(q, k, v, heads)
        length = k.shape[1] - self.reference.shape[1]
        k_t, k_r, v_t = k[:, :length], k[:, length:], v[:, :length]
        a_t = attention_probs(q, k_t, heads)
        with torch.no_grad():  # the frozen model's map is the target
            a_r = attention_probs(q.detach(), k_r.detach(), heads)
        target = a_r[..., list(self.ref_slots)].mean(dim=-1, keepdim=True)
        term = (a_t[..., list(self.id_slots)] - target).square().mean()
        if self.align_prefix and self.id_slots[0] > 1:
            prefix = list(range(1, self.id_slots[0]))  # the words before the identity, BOS left out
            term = term + (a_t[..., prefix] - a_r[..., prefix]).square().mean()
        self.terms.append(term)
        return attention_output(q, k_t, v_t, heads)


@dataclass
class StageRouter:
    """At sampling time: on the conditional rows that carry this identity's prompt, swap keys' and values'
    context for the stage's own, chosen by the current noise level. Unconditional rows and other prompts pass
    through untouched.

    contexts_k / contexts_v: per stage, [1, L, C] encodings of the prompt with the key-side / value-side tokens.
    marker: the context handed to KSampler as CONDITIONING; rows equal to it are ours.
    timestep_of: sigma -> timestep in [0, num_train_timesteps) (the model's own schedule).
    """

    contexts_k: Sequence[torch.Tensor]
    contexts_v: Sequence[torch.Tensor]
    marker: torch.Tensor
    timestep_of: Callable[[torch.Tensor], torch.Tensor]
    num_train_timesteps: int = 1000
    calls: int = 0

    @property
    def stages(self) -> int:
        return len(self.contexts_k)

    def stage_for_sigma(self, sigma: torch.Tensor) -> int:
        t = float(self.timestep_of(sigma.reshape(1).float()).reshape(-1)[0])
        s = int(t * self.stages / self.num_train_timesteps)
        return min(max(s, 0), self.stages - 1)

    def _is_ours(self, row: torch.Tensor) -> bool:
        m = self.marker[0]
        if row.shape != m.shape:
            return False
        m = m.to(row)
        return bool(torch.allclose(row, m, rtol=1e-2, atol=1e-2 * float(m.abs().max()) + 1e-6))

    def attn2_patch(self, n: torch.Tensor, context: torch.Tensor, value: torch.Tensor | None, extra: dict):
        cond_or_uncond = extra.get("cond_or_uncond")
        sigmas = extra.get("sigmas")
        if value is None:
            value = context
        if not cond_or_uncond or sigmas is None or context.shape[0] % len(cond_or_uncond):
            return n, context, value
        chunk = context.shape[0] // len(cond_or_uncond)
        new_context, new_value = None, None
        for row in range(context.shape[0]):
            if cond_or_uncond[row // chunk] != 0 or not self._is_ours(context[row]):
                continue
            sigma = sigmas[row] if sigmas.numel() == context.shape[0] else sigmas.reshape(-1)[0]
            stage = self.stage_for_sigma(sigma)
            if new_context is None:
                new_context, new_value = context.clone(), value.clone()
            new_context[row] = self.contexts_k[stage][0].to(context)
            new_value[row] = self.contexts_v[stage][0].to(value)
        self.calls += 1
        if new_context is None:
            return n, context, value
        return n, new_context, new_value
