"""The released FaceCLIP-SDXL checkpoint's names and shapes, and how its tensors become this implementation's
layers: the one place that knows both namings.

- renamed: the packed attention projections (``in_proj_weight`` / ``in_proj_bias``) become the ``in_proj`` Linear;
  the text towers' ``positional_embedding`` and the face ViTs' ``pos_embed`` become Embedding tables (pos_embed
  loses its leading 1);
- folded: the fusion layers' layer-scale vectors ``gamma_v`` / ``gamma_l`` scale the rows and bias of
  ``attn.out_v_proj`` / ``attn.out_l_proj`` (in float32, then to the weights' dtype): gamma * (Wx + b) =
  (gamma W) x + gamma b;
- not built: ``text_projection``, ``logit_scale``, ``logit_bias``, the face ViTs' ``mask_token`` and the fuser's
  ``enc_output`` / ``enc_output_norm`` are in the file but never used for FaceCLIP-SDXL's outputs.

Everything else keeps its official name.
"""
from __future__ import annotations

import re
from collections.abc import Callable, MutableMapping

import torch

_RENAMES: tuple[tuple[re.Pattern, str], ...] = (
    (re.compile(r"^(.+\.(?:attn|self_attn))\.in_proj_(weight|bias)$"), r"\1.in_proj.\2"),
    (re.compile(r"^(face_clip_[lg])\.positional_embedding$"), r"\1.positional_embedding.weight"),
    (re.compile(r"^(.+\.face_encoder)\.pos_embed$"), r"\1.pos_embed.weight"),
)
_INVERSE: tuple[tuple[re.Pattern, str], ...] = (
    (re.compile(r"^(.+\.(?:attn|self_attn))\.in_proj\.(weight|bias)$"), r"\1.in_proj_\2"),
    (re.compile(r"^(face_clip_[lg])\.positional_embedding\.weight$"), r"\1.positional_embedding"),
    (re.compile(r"^(.+\.face_encoder)\.pos_embed\.weight$"), r"\1.pos_embed"),
)
UNUSED = re.compile(r"^face_clip_[lg]\.(?:text_projection|logit_scale|logit_bias|face_encoder\.mask_token"
                    r"|fuser\.enc_output(?:_norm)?\.(?:weight|bias))$")
_GAMMA = re.compile(r"^(face_clip_[lg]\.fuser\.encoder\.fusion_layers\.\d+)\.gamma_([vl])$")
_POS_EMBED = re.compile(r"^.+\.face_encoder\.pos_embed$")
_SCALED = re.compile(r"^face_clip_[lg]\.fuser\.encoder\.fusion_layers\.\d+\.attn\.out_[vl]_proj\.(?:weight|bias)$")
BRANCHES = ("face_clip_l", "face_clip_g")


def apply_first_rule(rules: tuple[tuple[re.Pattern, str], ...], name: str) -> str:
    """``name`` rewritten by the first rule whose pattern matches it (unchanged when none does)."""
    for pattern, replacement in rules:
        if pattern.match(name):
            return pattern.sub(replacement, name)
    return name


def module_name(official: str) -> str:
    """The layer parameter an official tensor loads into (unused and folded tensors have none: check first)."""
    return apply_first_rule(_RENAMES, official)


def official_name(module: str) -> str:
    return apply_first_rule(_INVERSE, module)


def read_dtype(official: str, file_dtype: torch.dtype, layer_dtype: Callable[[str], torch.dtype]) -> torch.dtype:
    """The dtype to read an official tensor in: its layer's, float32 for what is folded (gammas and the
    projections they scale, multiplied before the final cast), the file's for tensors that are not built."""
    if UNUSED.match(official):
        return file_dtype
    if _GAMMA.match(official):
        return torch.float32
    name = module_name(official)
    return torch.float32 if _SCALED.match(name) else layer_dtype(name)


def official_layout(model_tensors: dict[str, torch.Tensor]) -> dict[str, tuple[int, ...]]:
    """Names and shapes of the released checkpoint for a model whose (meta) state dict is ``model_tensors``."""
    layout = {}
    for name, t in model_tensors.items():
        official = official_name(name)
        layout[official] = (1, *t.shape) if _POS_EMBED.match(official) else tuple(t.shape)
    for b in BRANCHES:
        width = model_tensors[f"{b}.positional_embedding.weight"].shape[1]
        dim = model_tensors[f"{b}.face_encoder.pos_embed.weight"].shape[1]
        layout.update({f"{b}.text_projection": (width, width), f"{b}.logit_scale": (), f"{b}.logit_bias": (),
                       f"{b}.face_encoder.mask_token": (1, 1, dim), f"{b}.fuser.enc_output.weight": (width, width),
                       f"{b}.fuser.enc_output.bias": (width,), f"{b}.fuser.enc_output_norm.weight": (width,),
                       f"{b}.fuser.enc_output_norm.bias": (width,)})
        layers = {m.group(1) for k in model_tensors
                  if (m := re.match(rf"^({re.escape(b)}\.fuser\.encoder\.fusion_layers\.\d+)\.", k))}
        for layer in layers:
            layout[f"{layer}.gamma_v"] = layout[f"{layer}.gamma_l"] = (width,)
    return layout


def to_module_state_dict(sd: MutableMapping[str, torch.Tensor], dtype_of: Callable[[str], torch.dtype],
                         device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
    """The model's state dict from an official one (checked against ``official_layout`` already). ``sd`` is
    consumed tensor by tensor, so at most one converted tensor beyond the result is alive; ``dtype_of(name)``
    is the dtype of the model's parameter ``name``."""
    out: dict[str, torch.Tensor] = {}
    gammas: dict[str, torch.Tensor] = {}
    for official in list(sd):
        tensor = sd.pop(official)
        if UNUSED.match(official):
            continue
        if _GAMMA.match(official):
            gammas[official] = tensor.float()
            continue
        name = module_name(official)
        if _POS_EMBED.match(official):
            tensor = tensor.reshape(tensor.shape[1:])
        # the projections a gamma scales wait for it (below), in the file's precision
        out[name] = tensor if _SCALED.match(name) else tensor.to(device=device, dtype=dtype_of(name))
    fold_layer_scales(out, gammas, _GAMMA, dtype_of, device)
    return out


def fold_layer_scales(out: MutableMapping[str, torch.Tensor], gammas: dict[str, torch.Tensor], pattern: re.Pattern,
                      dtype_of: Callable[[str], torch.dtype], device: torch.device | str) -> None:
    """Scale each BiAttention output projection in ``out`` (still in the file's precision) by its layer-scale
    vector, in float32, then cast it to its layer's dtype. ``pattern`` matches a gamma's official name and captures
    (its fusion layer's name, "v" or "l")."""
    for official, gamma in gammas.items():
        layer, stream = pattern.match(official).groups()
        for part in ("weight", "bias"):
            name = f"{layer}.attn.out_{stream}_proj.{part}"
            scale = gamma[:, None] if part == "weight" else gamma
            out[name] = (out[name].float() * scale).to(device=device, dtype=dtype_of(name))
