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

# The column groups of an alignment plan, in the order alignment_parts returns them.
GROUPS: tuple[str, ...] = ("identity", "later")


@dataclass(frozen=True)
class AlignmentPlan:
    """Key column ``train[i]`` of the training prompt is aligned with the mean of the reference prompt's columns
    ``reference[i]``; its squared logit difference counts with ``weights[i]`` in group ``groups[i]`` (an index
    into GROUPS)."""

    train: tuple[int, ...]
    reference: tuple[tuple[int, ...], ...]
    weights: tuple[float, ...]
    groups: tuple[int, ...]

    def averaging(self, length: int, device: torch.device) -> torch.Tensor:
        """[length, K]: reference logits @ this = the target of each aligned column."""
        out = torch.zeros(length, len(self.train), device=device)
        for i, cols in enumerate(self.reference):
            out[list(cols), i] = 1.0 / len(cols)
        return out

    def weighting(self, device: torch.device) -> torch.Tensor:
        """[K, len(GROUPS)]: per-column terms @ this = each group's weighted sum."""
        out = torch.zeros(len(self.train), len(GROUPS), device=device)
        out[range(len(self.train)), list(self.groups)] = torch.tensor(self.weights, device=device)
        return out


def alignment_plan(id_slots: Sequence[int], ref_slots: Sequence[int], length: int,
                   tokens: AttentionTokens) -> AlignmentPlan:
    """The identity's columns against the reference word's; with ``tokens == "all"`` also every later column
    (end token and padding) against its counterpart after the reference word. CLIP's text encoders are causal,
    so the columns before the identity are identical in both prompts and need no term.

    Each group is averaged over its columns, so the identity's columns weigh as much as all the later ones
    together: summed, the ~70 end and padding columns of a short prompt would leave the identity ~1/70 of the
    term and mostly pin SDXL's padding columns (which carry much of a prompt's global meaning) to the class word.
    """
    train = list(id_slots)
    reference = [tuple(ref_slots)] * len(train)
    weights = [1.0 / len(train)] * len(train)
    if tokens == "all":
        t0, r0 = id_slots[-1] + 1, ref_slots[-1] + 1
        later = length - max(t0, r0)
        train.extend(t0 + j for j in range(later))
        reference.extend((r0 + j,) for j in range(later))
        weights.extend([1.0 / later] * later)
    groups = [0] * len(id_slots) + [1] * (len(train) - len(id_slots))
    return AlignmentPlan(tuple(train), tuple(reference), tuple(weights), tuple(groups))


def alignment_parts(q: torch.Tensor, k_train: torch.Tensor, k_reference: torch.Tensor, heads: int,
                    plans: Sequence[AlignmentPlan]) -> torch.Tensor:
    """[len(GROUPS)]: each column group's part of the alignment term. Per aligned column, the squared difference
    of its logits from the reference's (mean over heads and queries, so independent of resolution and head
    count), weighted as the plan says (row b uses ``plans[b]``).

    Only the training keys carry gradient: the reference side is a fixed target, and the queries are detached
    because they belong to the frozen image path; with them attached, the loss could also fall by moving the
    queries (through the value tokens and earlier layers) instead of the identity's keys, which is what the
    paper's loss is meant to move."""
    qh = split_heads(q.detach(), heads).float()
    scale = qh.shape[-1] ** -0.5
    kt = split_heads(k_train, heads).float()
    with torch.no_grad():
        reference_logits = (qh @ split_heads(k_reference, heads).float().transpose(-1, -2)) * scale
    total = qh.new_zeros(len(GROUPS))
    rows_by_plan: dict[AlignmentPlan, list[int]] = {}
    for row, plan in enumerate(plans):
        rows_by_plan.setdefault(plan, []).append(row)
    for plan, rows in rows_by_plan.items():
        logits = (qh[rows] @ kt[rows][:, :, list(plan.train)].transpose(-1, -2)) * scale  # [b, H, Q, K]
        target = reference_logits[rows] @ plan.averaging(reference_logits.shape[-1], qh.device)
        per_column = (logits - target).square().mean(dim=(0, 1, 2))  # [K]
        total = total + (per_column @ plan.weighting(qh.device)) * (len(rows) / len(plans))
    return total


def alignment_term(q: torch.Tensor, k_train: torch.Tensor, k_reference: torch.Tensor, heads: int,
                   plans: Sequence[AlignmentPlan]) -> torch.Tensor:
    """The alignment term of one layer: the sum of its groups' parts (see alignment_parts)."""
    return alignment_parts(q, k_train, k_reference, heads, plans).sum()


@dataclass
class TrainingAttention:
    """During training: feeds the value-side context (SeFi-IDE's K/V split) and measures SeFi-IDE's attention
    alignment against the frozen model's own attention to the reference prompt, with the same queries.

    The reference context rides along behind the real keys (the patch appends it, the replace patch splits it
    off again), so the reference scores cost one extra key projection, not a second UNet pass. So does
    ``aligned``, the key-side training context the alignment reads: the caller passes a detached copy of the
    UNet's context, so that the attention term's gradient collects there, apart from the denoising loss's
    (None: the alignment reads the UNet's own keys).
    """

    blocks: frozenset[tuple[str, int]] = frozenset()
    value: torch.Tensor | None = None  # [B, L, C]
    reference: torch.Tensor | None = None  # [B, L, C]
    aligned: torch.Tensor | None = None  # [B, L, C]
    plans: tuple[AlignmentPlan, ...] = ()
    terms: list[torch.Tensor] = field(default_factory=list)  # per probed layer, alignment_parts

    def arm(self, value: torch.Tensor | None, reference: torch.Tensor | None,
            plans: Sequence[AlignmentPlan] = (), aligned: torch.Tensor | None = None) -> None:
        self.value, self.reference, self.plans, self.aligned = value, reference, tuple(plans), aligned
        self.terms = []

    def disarm(self) -> list[torch.Tensor]:
        terms, self.terms = self.terms, []
        self.value = self.reference = self.aligned = None
        self.plans = ()
        return terms

    def _probing(self, extra: dict) -> bool:
        block = extra.get("block")
        return self.reference is not None and block is not None and (block[0], int(block[1])) in self.blocks

    @staticmethod
    def _rows(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        t = t.to(like)
        return t.expand(like.shape[0], -1, -1) if t.shape[0] == 1 else t

    def _riders(self, like: torch.Tensor) -> list[torch.Tensor]:
        """The contexts appended behind the UNet's own: the aligned copy (if any), then the reference."""
        riders = [] if self.aligned is None else [self._rows(self.aligned, like)]
        return riders + [self._rows(self.reference, like)]

    def attn2_patch(self, n: torch.Tensor, context: torch.Tensor, value: torch.Tensor | None, extra: dict):
        if self.value is not None:
            value = self._rows(self.value, context)
        if value is None:
            value = context
        if self._probing(extra):
            riders = self._riders(context)
            context, value = torch.cat([context, *riders], dim=1), torch.cat([value, *riders], dim=1)
        return n, context, value

    def attn2_replace(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, extra: dict) -> torch.Tensor:
        heads = int(extra["n_heads"])
        if not self._probing(extra):
            return multi_head_attention(q, k, v, heads)
        k_r = k[:, k.shape[1] - self.reference.shape[1]:]
        length = k.shape[1] - self.reference.shape[1] - (0 if self.aligned is None else self.aligned.shape[1])
        k_t, v_t = k[:, :length], v[:, :length]
        k_a = k_t if self.aligned is None else k[:, length:length + self.aligned.shape[1]]
        plans = self.plans if len(self.plans) == q.shape[0] else self.plans[:1] * q.shape[0]
        self.terms.append(alignment_parts(q, k_a, k_r.detach(), heads, plans))
        return multi_head_attention(q, k_t, v_t, heads)
