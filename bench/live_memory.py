"""Peak live tensor memory of some PyTorch code, by kind, for real or fake tensors (what a GPU's allocator would
hold, before its slack).

torch's MemTracker attributes memory to modules and refuses a module that runs twice in one pass (gradient
checkpointing runs every block again in the backward pass), so this counts storages directly: every op's outputs
are added when made and subtracted when their storage dies, and the split at the peak is by what holds them:
``weights`` (registered up front), ``activations`` (saved for the backward pass outside checkpointed blocks) and
``temporaries`` (everything else: intermediate results, recomputed blocks' activations, gradients).

FLOPs are counted here too, with torch's own per-op formulas (``torch.utils.flop_counter.flop_registry``, plus the
CPU's fused attention):
FlopCounterMode's module tracking holds on to the modules' outputs through the backward pass, which inflated a
checkpointed SDXL step's peak by 2.2 GiB when both ran together.
"""
from __future__ import annotations

import heapq
import weakref
from collections.abc import Iterable

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.flop_counter import flop_registry

aten = torch.ops.aten
# torch's formulas leave out the CPU's fused attention, which is what SDPA runs on fake CPU tensors; its shapes and
# arguments are the CUDA flash kernel's, so its formulas apply (the GPU runs flash or memory-efficient attention)
FLOP_FORMULAS = {**flop_registry,
                 aten._scaled_dot_product_flash_attention_for_cpu:
                     flop_registry[aten._scaled_dot_product_flash_attention],
                 aten._scaled_dot_product_flash_attention_for_cpu_backward:
                     flop_registry[aten._scaled_dot_product_flash_attention_backward]}


class LiveMemory(TorchDispatchMode):
    """``with LiveMemory(weights) as m, torch.autograd.graph.saved_tensors_hooks(*m.saved_hooks()): ...``; then
    ``m.peak_bytes``, ``m.peak_by_kind`` and ``m.flops``."""

    def __init__(self, weights: Iterable[torch.Tensor] = ()) -> None:
        super().__init__()
        self._bytes: dict[int, int] = {}
        self._kind: dict[int, str] = {}
        self._refs: dict[int, weakref.ref] = {}
        self._made_by: dict[int, str] = {}
        self._peak_top: list[tuple[int, str, str]] = []  # at the peak: the 8 largest non-weights, what made them
        self.live = {"weights": 0, "activations": 0, "temporaries": 0}
        self.peak_bytes = 0
        self.flops = 0
        self.peak_by_kind = dict(self.live)
        for w in weights:
            self._add(w, "weights")
        self._note_peak()

    @staticmethod
    def _key(t: torch.Tensor) -> tuple[int, torch.UntypedStorage]:
        storage = t.untyped_storage()
        return id(storage), storage

    def _add(self, t: torch.Tensor, kind: str, made_by: str = "") -> None:
        key, storage = self._key(t)
        if key in self._bytes:
            return
        self._made_by[key] = made_by
        size = storage.nbytes()
        self._bytes[key], self._kind[key] = size, kind
        self.live[kind] += size
        self._refs[key] = weakref.ref(storage, lambda _, k=key: self._drop(k))

    def _drop(self, key: int) -> None:
        size, kind = self._bytes.pop(key, 0), self._kind.pop(key, None)
        self._refs.pop(key, None)
        self._made_by.pop(key, None)
        if kind is not None:
            self.live[kind] -= size

    def _note_peak(self) -> None:
        total = sum(self.live.values())
        if total > self.peak_bytes:
            self.peak_bytes, self.peak_by_kind = total, dict(self.live)
            self._peak_top = heapq.nlargest(8, ((self._bytes[k], kind, self._made_by[k])
                                                for k, kind in self._kind.items() if kind != "weights"))

    def largest_at_peak(self, n: int = 8) -> list[dict]:
        """The ``n`` (at most 8) largest non-weight storages live at the peak, and the ops that made them."""
        return [{"mib": round(b / 2 ** 20, 1), "kind": kind, "op": op}
                for b, kind, op in self._peak_top[:n]]

    def _mark_saved(self, t: torch.Tensor) -> torch.Tensor:
        key, _ = self._key(t)
        if self._kind.get(key) == "temporaries":
            self._kind[key] = "activations"
            self.live["temporaries"] -= self._bytes[key]
            self.live["activations"] += self._bytes[key]
        return t

    def saved_hooks(self):
        """The (pack, unpack) pair for ``torch.autograd.graph.saved_tensors_hooks``."""
        return self._mark_saved, lambda t: t

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        count = FLOP_FORMULAS.get(func._overloadpacket)
        if count is not None:
            self.flops += count(*args, **kwargs, out_val=out)
        if func.is_view:  # a view allocates nothing (and fake tensors' cached views may not report their base's
            return out   # storage)
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                self._add(t, "temporaries", str(func))
        self._note_peak()
        return out
