"""Training-time cross-attention hooks, as plain functions with the signatures of ComfyUI's attn2 patches.

ComfyUI calls an ``attn2_patch`` as ``p(n, context, value, extra_options) -> (n, context, value)`` before the
key/value projections, and an ``attn2`` replace patch as ``r(q, k, v, extra_options) -> out`` with the projected
tensors (out before ``to_out``). ``extra_options`` carries ``block`` (e.g. ("input", 8)) and ``n_heads``. The
nodes register these objects with the training copy of the model; nothing here imports ComfyUI.

SeFi-IDE's face-wise attention loss compares, with the same UNet queries Q, the attention scores of the training
prompt's keys with those of the reference prompt's keys ("a photo of the face of person"). The scores compared
are the pre-softmax logits Q.K/sqrt(d) per head, as the paper's figure draws A = Q.K. The softmax probabilities
would be dominated by the start token (CLIP's attention sink takes most of every query's mass), which squashes
the squared differences of the other columns to 1e-4..1e-7 and leaves the paper's lambda with no effect; the
logits keep each token's own evidence, and at lambda = 0.003 the term lands on the denoising loss's scale.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from ..layers import multi_head_attention, split_heads
from .config import AttentionTokens


@dataclass(frozen=True)
class AlignmentPlan:
    """Key column ``train[i]`` of the training prompt is aligned with the mean of the reference prompt's columns
    ``reference[i]``."""

    train: tuple[int, ...]
    reference: tuple[tuple[int, ...], ...]

    def averaging(self, length: int, device: torch.device) -> torch.Tensor:
        """[length, K]: reference logits @ this = the target of each aligned column."""
        out = torch.zeros(length, len(self.train), device=device)
        for i, cols in enumerate(self.reference):
            out[list(cols), i] = 1.0 / len(cols)
        return out


def alignment_plan(id_slots: Sequence[int], ref_slots: Sequence[int], length: int,
                   tokens: AttentionTokens) -> AlignmentPlan:
    """The identity's columns against the reference word's; with ``tokens == "all"`` also every later column
    (end token and padding) against its counterpart after the reference word. CLIP's text encoders are causal,
    so the columns before the identity are identical in both prompts and need no term."""
    train = list(id_slots)
    reference = [tuple(ref_slots)] * len(train)
    if tokens == "all":
        t0, r0 = id_slots[-1] + 1, ref_slots[-1] + 1
        for j in range(length - max(t0, r0)):
            train.append(t0 + j)
            reference.append((r0 + j,))
    return AlignmentPlan(tuple(train), tuple(reference))


def alignment_term(q: torch.Tensor, k_train: torch.Tensor, k_reference: torch.Tensor, heads: int,
                   plans: Sequence[AlignmentPlan]) -> torch.Tensor:
    """Squared difference of the aligned columns' logits: each aligned token's own term (mean over heads and
    queries, so independent of resolution and head count), summed over the tokens (row b uses ``plans[b]``); the
    reference side is a fixed target (no gradient)."""
    qh = split_heads(q, heads).float()
    scale = qh.shape[-1] ** -0.5
    kt = split_heads(k_train, heads).float()
    with torch.no_grad():
        reference_logits = (qh @ split_heads(k_reference, heads).float().transpose(-1, -2)) * scale
    total = qh.new_zeros(())
    rows_by_plan: dict[AlignmentPlan, list[int]] = {}
    for row, plan in enumerate(plans):
        rows_by_plan.setdefault(plan, []).append(row)
    for plan, rows in rows_by_plan.items():
        logits = (qh[rows] @ kt[rows][:, :, list(plan.train)].transpose(-1, -2)) * scale  # [b, H, Q, K]
        target = reference_logits[rows] @ plan.averaging(reference_logits.shape[-1], qh.device)
        per_token = (logits - target).square().mean(dim=(0, 1, 2))  # [K]
        total = total + per_token.sum() * (len(rows) / len(plans))
    return total


@dataclass
class TrainingAttention:
    """During training: feeds the value-side context (SeFi-IDE's K/V split) and measures SeFi-IDE's attention
    alignment against the frozen model's own attention to the reference prompt, with the same queries.

    The reference context rides along behind the real keys (the patch appends it, the replace patch splits it
    off again), so the reference scores cost one extra key projection, not a second UNet pass.
    """

    blocks: frozenset[tuple[str, int]] = frozenset()
    value: torch.Tensor | None = None  # [B, L, C]
    reference: torch.Tensor | None = None  # [B, L, C]
    plans: tuple[AlignmentPlan, ...] = ()
    terms: list[torch.Tensor] = field(default_factory=list)

    def arm(self, value: torch.Tensor | None, reference: torch.Tensor | None,
            plans: Sequence[AlignmentPlan] = ()) -> None:
        self.value, self.reference, self.plans = value, reference, tuple(plans)
        self.terms = []

    def disarm(self) -> list[torch.Tensor]:
        terms, self.terms = self.terms, []
        self.value = self.reference = None
        self.plans = ()
        return terms

    def _probing(self, extra: dict) -> bool:
        block = extra.get("block")
        return self.reference is not None and block is not None and (block[0], int(block[1])) in self.blocks

    @staticmethod
    def _rows(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        t = t.to(like)
        return t.expand(like.shape[0], -1, -1) if t.shape[0] == 1 else t

    def attn2_patch(self, n: torch.Tensor, context: torch.Tensor, value: torch.Tensor | None, extra: dict):
        if self.value is not None:
            value = self._rows(self.value, context)
        if value is None:
            value = context
        if self._probing(extra):
            ref = self._rows(self.reference, context)
            context, value = torch.cat([context, ref], dim=1), torch.cat([value, ref], dim=1)
        return n, context, value

    def attn2_replace(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, extra: dict) -> torch.Tensor:
        heads = int(extra["n_heads"])
        if not self._probing(extra):
            return multi_head_attention(q, k, v, heads)
        length = k.shape[1] - self.reference.shape[1]
        k_t, k_r, v_t = k[:, :length], k[:, length:], v[:, :length]
        plans = self.plans if len(self.plans) == q.shape[0] else self.plans[:1] * q.shape[0]
        self.terms.append(alignment_term(q, k_t, k_r.detach(), heads, plans))
        return multi_head_attention(q, k_t, v_t, heads)
