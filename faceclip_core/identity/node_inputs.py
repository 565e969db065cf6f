"""The Train node's settings per method, and the migration of graphs saved by the first release.

The node shows the settings of the picked method only (a V3 DynamicCombo: ``method`` carries its method's inputs,
which API graphs spell ``method.<name>``) and shows every default as its value. The first release (0.1.0) had one
flat list of inputs with 0 meaning "the method's / the recipe's default" for the learning rate, the batch and the
number of tokens, and a ``recipe`` input; :func:`migrate_flat_inputs` turns such an API graph's inputs into the
current ones with the values that release would have trained with.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .config import METHOD_DEFAULTS, METHODS, SEFI_ATTENTION_BLOCKS, IDEAConfig, SeFiConfig, blocks_text
from .errors import IdentityError
from .recipes import DEFAULT_RECIPE, RECIPES
from .recipes import recipe as recipe_of

# Each method's own inputs, in the order the node shows them (their defaults: the config dataclasses').
SEFI_SETTINGS: dict[str, Any] = {
    "num_tokens": SeFiConfig.num_tokens, "stages": SeFiConfig.stages, "kv_split": SeFiConfig.kv_split,
    "attention_weight": SeFiConfig.attention_weight, "attention_tokens": SeFiConfig.attention_tokens,
    "attention_layers": blocks_text(SEFI_ATTENTION_BLOCKS)}
IDEA_SETTINGS: dict[str, Any] = {
    "num_tokens": IDEAConfig.num_tokens, "anchor_names": IDEAConfig.anchor_names,
    "reg_weight": IDEAConfig.reg_weight, "adapter_scale": IDEAConfig.adapter_scale}
METHOD_SETTINGS: dict[str, dict[str, Any]] = {"SeFi-IDE": SEFI_SETTINGS, "ID-EA": IDEA_SETTINGS}

# What both methods train with by default: the quick recipe (the same for both).
DEFAULT_LR = RECIPES[DEFAULT_RECIPE]["ID-EA"].lr
DEFAULT_BATCH = RECIPES[DEFAULT_RECIPE]["ID-EA"].batch_size
assert all(r == RECIPES[DEFAULT_RECIPE]["ID-EA"] for r in RECIPES[DEFAULT_RECIPE].values())

# Inputs of the first release that the current node no longer has at its top level.
FLAT_METHOD_INPUTS = frozenset(SEFI_SETTINGS) | frozenset(IDEA_SETTINGS)
RETIRED_INPUTS = frozenset({"recipe"})


def method_settings(method: str, chosen: Mapping[str, Any]) -> dict[str, Any]:
    """Every method setting method_config takes: the picked method's from ``chosen`` (the DynamicCombo's nested
    values, ``method`` itself included or not), the other method's at their defaults (unused by the run)."""
    if method not in METHODS:
        raise IdentityError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    values = {**IDEA_SETTINGS, **SEFI_SETTINGS}
    values.update({k: v for k, v in chosen.items() if k in METHOD_SETTINGS[method]})
    values["num_tokens"] = chosen.get("num_tokens", METHOD_SETTINGS[method]["num_tokens"])
    return values


def is_flat(inputs: Mapping[str, Any]) -> bool:
    """Whether a Train node's API inputs are the first release's flat ones (``stages``, not ``method.stages``)."""
    return (not any(k.startswith("method.") for k in inputs)
            and any(k in FLAT_METHOD_INPUTS or k in RETIRED_INPUTS for k in inputs))


def migrate_flat_inputs(inputs: Mapping[str, Any]) -> dict[str, Any]:
    """The first release's flat inputs as the current node's: the method's settings under ``method.``, the other
    method's dropped, and every "0 = default" replaced by the value that release trained with (the recipe's
    learning rate and batch, the method's number of tokens). Inputs fed by links stay links."""
    method = inputs.get("method")
    if method not in METHODS:
        raise IdentityError(
            f"This Train ID Embedding node is from an older version and its method is {method!r}: set method to "
            f"{' or '.join(METHODS)} on the node (a linked method cannot be converted).")
    recipe_name = inputs.get("recipe", DEFAULT_RECIPE)
    recipe = recipe_of(recipe_name if isinstance(recipe_name, str) else DEFAULT_RECIPE, method)
    out: dict[str, Any] = {}
    for name, value in inputs.items():
        if name in RETIRED_INPUTS:
            continue
        if name in FLAT_METHOD_INPUTS:
            if name in METHOD_SETTINGS[method]:
                out[f"method.{name}"] = value
            continue
        out[name] = value
    for name, default in METHOD_SETTINGS[method].items():  # optional in 0.1.0: absent in graphs from before
        out.setdefault(f"method.{name}", default)
    zero_means_default = {"learning_rate": recipe.lr, "batch_size": recipe.batch_size,
                          "method.num_tokens": METHOD_DEFAULTS[method]["num_tokens"]}
    for name, default in zero_means_default.items():
        if out.get(name, 0) == 0:  # absent (saved before the input existed) or 0: what that release used
            out[name] = default
    return out
