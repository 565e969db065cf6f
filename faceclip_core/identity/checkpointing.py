"""Gradient checkpointing of arbitrary modules, for models whose forward passes carry mutable option dicts."""
from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.utils.checkpoint


def checkpoint_modules(modules: Iterable[torch.nn.Module]) -> int:
    """Make each module recompute its activations in the backward pass instead of keeping them (only its inputs
    are kept). Returns how many modules were wrapped; a module already wrapped is left as it is."""
    count = 0
    for module in modules:
        if getattr(module, "_faceclip_checkpointed", False):
            continue
        forward = module.forward

        def checkpointed(*args, _forward=forward, **kwargs):
            # ComfyUI's UNet updates one transformer_options dict in place as it walks its blocks ("block",
            # "block_index"); the recomputation must see the values of this call, so it gets a snapshot.
            args = tuple(dict(a) if isinstance(a, dict) else a for a in args)
            kwargs = {k: dict(v) if isinstance(v, dict) else v for k, v in kwargs.items()}
            if not torch.is_grad_enabled():
                return _forward(*args, **kwargs)
            return torch.utils.checkpoint.checkpoint(_forward, *args, use_reentrant=False, **kwargs)

        module.forward = checkpointed
        module._faceclip_checkpointed = True
        count += 1
    return count
