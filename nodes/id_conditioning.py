"""Apply ID Embedding's conditioning: the identity's per-stage contexts travel inside the CONDITIONING itself, and
a patch on the MODEL routes every row that carries them.

How it reaches the model: an entry's ``model_conds`` dict goes with the conditioning through ComfyUI's nodes
(masks, combines, timestep ranges copy it) and the sampler hands each ``model_conds`` value to the model call as a
keyword argument, batched row by row like the prompt itself. ``StageCond`` is such a value; the APPLY_MODEL
wrapper that Apply adds to the MODEL takes it out of the call, swaps each row's keys' context and pooled vector
for its stage's and passes the values' context on to an attn2 patch. Nothing is recognised by value, so long
prompts, long negatives, batches, masks and two identities in one graph all route exactly; rows of other
prompts (the negative) never carry it and are never touched.

Why the negative still shares the identity's UNet call: the sampler batches conditionings into one model call
only when their ``model_conds`` have the same keys (``can_concat_cond``), so a key only the positive has would
cost a second UNet call per CFG step. Apply's MODEL therefore also wraps the sampler's cond batching
(CALC_COND_BATCH) and, for that step only, gives every entry without an identity a ``StageCond`` whose rows are
None ("not an identity row"), so all entries concatenate and the routing leaves those rows as they are. Doing it
where the batching is decided changes no guider's state and covers every guider that batches through
``calc_cond_batch`` (DualCFGGuider's three prompts as well as KSampler's two).
A MODEL without the wrapper adds nothing, so Apply's positive alone still reaches it and raises ``NOT_PATCHED``.

Why not ComfyUI's conditioning hooks: under the dynamic VRAM patcher (the default on NVIDIA GPUs) a hooked
conditioning makes the sampler reload the whole model as a classic patcher (``get_non_dynamic_delegate``); a
``model_conds`` value and a model wrapper keep the dynamic patcher and its memory management.
"""
from __future__ import annotations

from collections.abc import Sequence

import comfy.patcher_extension
import torch

from ..faceclip_core.identity import IdentityError, StageContexts, route
from .conditioning import sdxl_conditioning

MODEL_COND_KEY = "faceclip_id_stages"  # the keyword the sampler passes to the model call
VALUE_KEY = "faceclip_id_values"  # the routed values' context, in transformer_options for the attn2 patch
WRAPPER_KEY = "faceclip_id"

NOT_PATCHED = ("Apply ID Embedding's positive reached a sampler whose MODEL is not Apply ID Embedding's MODEL "
               "output, so the identity would be ignored. Connect Apply ID Embedding's MODEL output to the "
               "sampler as well (or chain it after your other model nodes).")


class IdentityRows:
    """The sampler's batch of ``StageCond`` rows, as the model call receives it. Only the wrapper may consume it:
    a model without the wrapper would pass it on (ComfyUI casts extra conditions by their ``dtype``), and there
    the identity would silently be lost, so asking for a dtype is the error that says what to connect."""

    def __init__(self, rows: Sequence[StageContexts | None]) -> None:
        self.rows = tuple(rows)

    @property
    def dtype(self):
        raise IdentityError(NOT_PATCHED)


class StageCond:
    """A conditioning entry's identity, in ComfyUI's model-condition protocol (``comfy/conds.py``)."""

    def __init__(self, rows: Sequence[StageContexts | None]) -> None:
        self.rows = tuple(rows)

    def process_cond(self, batch_size: int, **kwargs) -> StageCond:
        return StageCond((self.rows * batch_size)[:batch_size] if len(self.rows) != batch_size else self.rows)

    def can_concat(self, other) -> bool:
        return isinstance(other, StageCond)

    def concat(self, others: Sequence[StageCond]) -> IdentityRows:
        return IdentityRows(self.rows + tuple(r for o in others for r in o.rows))

    def size(self) -> list[int]:
        return [len(self.rows)]


NO_IDENTITY = StageCond((None,))  # rows of a conditioning that is not an identity's: routed as they are


def identity_conditioning(stages: StageContexts, context: torch.Tensor, pooled: torch.Tensor) -> list:
    """CONDITIONING whose rows route through ``stages``; ``context``/``pooled`` are what other consumers see (the
    prompt with the stages' mean tokens, what ``embedding:name`` would give)."""
    return sdxl_conditioning(context, pooled, model_conds={MODEL_COND_KEY: StageCond((stages,))})


def _with_identity_key(entry: dict) -> dict:
    """``entry`` (a sampler conditioning) with an identity key: its own, or one that routes nothing. A new dict,
    because the sampler reuses its entries at every step."""
    model_conds = entry.get("model_conds", {})
    if MODEL_COND_KEY in model_conds:
        return entry
    return {**entry, "model_conds": {**model_conds, MODEL_COND_KEY: NO_IDENTITY}}


def _batch_with_identities(executor, model, conds: list[list[dict] | None], x_in, timestep, model_options):
    """CALC_COND_BATCH wrapper: when any entry carries an identity, every entry gets the key, so identity and
    non-identity prompts batch into the same UNet calls (see the module docstring)."""
    if any(MODEL_COND_KEY in entry.get("model_conds", {}) for cond in conds if cond for entry in cond):
        conds = [None if cond is None else [_with_identity_key(entry) for entry in cond] for cond in conds]
    return executor(model, conds, x_in, timestep, model_options)


def _route_rows(executor, x, t, c_concat, c_crossattn, control, transformer_options, **kwargs):
    rows = kwargs.pop(MODEL_COND_KEY, None)
    if rows is None or c_crossattn is None or all(r is None for r in rows.rows):  # no identity in this call
        return executor(x, t, c_concat, c_crossattn, control, transformer_options, **kwargs)
    model = executor.class_obj
    timesteps = model.model_sampling.timestep(t)
    keys, values, y = route(c_crossattn, kwargs.get("y"), timesteps, rows.rows)
    if y is not None:
        kwargs["y"] = y
    values = values.to(device=x.device, dtype=model.get_dtype_inference())
    return executor(x, t, c_concat, keys, control, {**transformer_options, VALUE_KEY: values}, **kwargs)


def _value_context(n, context, value, extra):
    values = extra.get(VALUE_KEY)
    if values is None:
        return n, context, value
    if values.shape[0] != context.shape[0]:
        raise IdentityError(f"the identity's values have {values.shape[0]} rows but this cross-attention has "
                            f"{context.shape[0]}; another node changed the batch inside the model")
    if values.shape[1] < context.shape[1]:  # a patch before this one appended tokens: keep their values
        tail = (context if value is None else value)[:, values.shape[1]:]
        values = torch.cat([values, tail.to(values)], dim=1)
    return n, context, values.to(context)


def patch_model(model):
    """A clone of MODEL that routes identity rows (once, however many Apply nodes it passes through) and batches
    them with the other prompts."""
    wrappers = comfy.patcher_extension.WrappersMP
    if model.get_wrappers(wrappers.APPLY_MODEL, WRAPPER_KEY):
        return model
    patched = model.clone()
    patched.add_wrapper_with_key(wrappers.APPLY_MODEL, WRAPPER_KEY, _route_rows)
    patched.add_wrapper_with_key(wrappers.CALC_COND_BATCH, WRAPPER_KEY, _batch_with_identities)
    patched.set_model_attn2_patch(_value_context)
    return patched
