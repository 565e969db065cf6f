"""Reading FaceCLIP encoder weights and building the encoder around them.

The architecture is inferred from the state dict (widths, depths, FFN sizes, layer counts), the model is built
on the meta device (no random full-size weights are ever allocated) and the checkpoint tensors are assigned into
it one by one, converted to the requested dtype as they are read, so peak memory stays near one copy.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from .. import safetensors_io
from ..checkpoint_io import (
    StateDict,
    check_floats,
    check_keys,
    count_indexed,
    is_safetensors,
    plain_names,
    read_state_dict,
    shape_of,
    strip_prefix,
)
from ..errors import FaceCLIPStateDictError, FaceCLIPWeightsError
from ..file_kinds import FACECLIP_SDXL, wrong_file_hint
from .checkpoint_layout import official_layout, read_dtype, to_module_state_dict
from .encoder import BRANCHES, BranchConfig, EncoderConfig, FaceCLIPEncoder
from .face_vit import FaceViTConfig
from .fuser import FuserConfig
from .text_tower import TextTowerConfig
from .tokenizer import get_tokenizer

logger = logging.getLogger(__name__)

# Official activation per branch: the G tower's open_clip config (ViT-bigG-14) has no quick_gelu flag.
ACTIVATIONS = {"face_clip_l": "quick_gelu", "face_clip_g": "gelu"}
# Keys that must exist for a state dict to be taken as a FaceCLIP encoder at all (checked before shapes).
_SIGNATURE = ("token_embedding.weight", "positional_embedding", "face_encoder.pos_embed", "proj1.weight",
              "fuser.encoder.fusion_layers.0.attn.v_proj.weight", "transformer.resblocks.0.attn.in_proj_weight")
# Key prefixes only a FaceT5-FLUX encoder has (its T5 stack), so that file can be named and sent to its loader.
FACET5_KEY_PREFIXES = ("encoder_2.t5_encoder.", "model.encoder_2.t5_encoder.", "module.encoder_2.t5_encoder.")


# ---- architecture inference ------------------------------------------------------------------------------------
def check_signature(sd: Mapping[str, torch.Tensor]) -> None:
    """Refuse early, with a readable message, a state dict that is clearly not a FaceCLIP encoder."""
    expected = [f"{b}.{k}" for b in BRANCHES for k in _SIGNATURE]
    missing = [k for k in expected if k not in sd]
    if not missing:
        return
    sample = ", ".join(sorted(sd)[:4]) or "no keys at all"
    # the actionable sentence first (which file this is, which node loads it), the key lists after
    first = wrong_file_hint(sd, FACECLIP_SDXL) or (
        "this file is not a FaceCLIP-SDXL encoder: pick face_clip_encoder.pt (or its .safetensors conversion, "
        "`python -m faceclip_core.convert`) in the \"Load FaceCLIP\" node.")
    raise FaceCLIPStateDictError(
        f"{first} Not a FaceCLIP-SDXL encoder state dict: expected keys under face_clip_l.* and face_clip_g.* (as "
        f"in face_clip_encoder.pt); found keys like {sample}", missing=missing)


def infer_face_vit_config(sd: Mapping[str, torch.Tensor], prefix: str, feature_head: bool = True) -> FaceViTConfig:
    """The arcface face ViT under ``prefix`` (e.g. ``face_clip_l.face_encoder.``), from its tensors' shapes. Raises
    KeyError / ValueError for a missing key or an inconsistent patch grid."""
    _, n_patches, vdim = shape_of(sd, prefix + "pos_embed")
    patch = shape_of(sd, prefix + "patch_embed.proj.weight")[-1]
    img_size = 112  # fixed by FaceCLIP's resize; the patch grid follows from it
    grid = img_size // patch
    if grid * grid != n_patches:
        raise ValueError(f"face ViT pos_embed has {n_patches} patches, but a {img_size}px face with patch size "
                         f"{patch} gives {grid * grid}")
    return FaceViTConfig(
        dim=vdim,
        depth=count_indexed(sd, prefix + "blocks.#.attn.qkv.weight"),
        heads=8,
        mlp_hidden=shape_of(sd, prefix + "blocks.0.mlp.fc1.weight")[0],
        img_size=img_size,
        patch_size=patch,
        embed_size=shape_of(sd, prefix + "feature.2.weight")[0],
        feature_head=feature_head,
    )


def infer_branch_config(sd: Mapping[str, torch.Tensor], branch: str) -> BranchConfig:
    p = f"{branch}."
    try:
        context, width = shape_of(sd, p + "positional_embedding")
        text = TextTowerConfig(
            width=width,
            layers=count_indexed(sd, p + "transformer.resblocks.#.attn.in_proj_weight"),
            heads=max(1, width // 64),
            mlp_width=shape_of(sd, p + "transformer.resblocks.0.mlp.c_fc.weight")[0],
            activation=ACTIVATIONS[branch],
            context_length=context,
            vocab_size=shape_of(sd, p + "token_embedding.weight")[0],
        )
        face = infer_face_vit_config(sd, p + "face_encoder.")
        grid = face.grid
        f = p + "fuser.encoder."
        deform_heads, levels = 8, 1
        fuser = FuserConfig(
            d_model=width,
            layers=count_indexed(sd, f + "fusion_layers.#.attn.v_proj.weight"),
            bi_dim=shape_of(sd, f + "fusion_layers.0.attn.v_proj.weight")[0],
            bi_heads=4,
            text_heads=4,
            text_ffn=shape_of(sd, f + "text_layers.0.linear1.weight")[0],
            deform_heads=deform_heads,
            deform_levels=levels,
            deform_points=shape_of(sd, f + "layers.0.self_attn.attention_weights.weight")[0] // (deform_heads * levels),
            deform_ffn=shape_of(sd, f + "layers.0.linear1.weight")[0],
            grid=grid,
        )
    except (KeyError, ValueError, IndexError) as err:
        raise FaceCLIPStateDictError(
            f"FaceCLIP encoder state dict is incomplete: cannot infer the {branch} architecture ({err!r})",
            missing=[str(err).strip("'")] if isinstance(err, KeyError) else ()) from err
    return BranchConfig(text=text, face=face, fuser=fuser)


def infer_config(sd: Mapping[str, torch.Tensor], share_face_encoder: bool = False) -> EncoderConfig:
    check_signature(sd)
    return EncoderConfig(l=infer_branch_config(sd, "face_clip_l"), g=infer_branch_config(sd, "face_clip_g"),
                         share_face_encoder=share_face_encoder)


# ---- building -------------------------------------------------------------------------------------------------
def build_meta(cfg: EncoderConfig, dtype: torch.dtype = torch.float32, operations: Any = None,
               compute_dtype: torch.dtype | None = None) -> FaceCLIPEncoder:
    """The encoder with every tensor on the meta device: shapes and dtypes only, no memory."""
    return FaceCLIPEncoder(cfg, device="meta", dtype=dtype, operations=operations, compute_dtype=compute_dtype)


def expected_tensors(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return dict(model.state_dict(keep_vars=True))


def face_encoders_identical(sd: StateDict) -> bool:
    """True when both branches carry bit-identical face ViTs (they were frozen during training)."""
    pl, pg = "face_clip_l.face_encoder.", "face_clip_g.face_encoder."
    lk = sorted(k[len(pl):] for k in sd if k.startswith(pl))
    gk = sorted(k[len(pg):] for k in sd if k.startswith(pg))
    if not lk or lk != gk:
        return False
    for k in lk:
        a, b = sd[pl + k], sd[pg + k]
        if a.shape != b.shape or a.dtype != b.dtype or not torch.equal(a, b):
            return False
    return True


def check_state_dict(sd: Mapping[str, torch.Tensor], dtype: torch.dtype = torch.float32, operations: Any = None,
                     compute_dtype: torch.dtype | None = None) -> tuple[EncoderConfig, dict[str, torch.Tensor]]:
    """Refuse, naming the keys, an official-layout state dict (names and shapes; tensors may be on the meta
    device) that is not a whole FaceCLIP-SDXL encoder. Returns its architecture and the model's meta tensors."""
    cfg = infer_config(sd)
    expected = expected_tensors(build_meta(cfg, dtype, operations, compute_dtype))
    check_keys(sd, official_layout(expected))
    check_floats(sd)
    return cfg, expected


def encoder_from_state_dict(sd: StateDict, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
                            operations: Any = None, compute_dtype: torch.dtype | None = None,
                            share_face_encoder: bool | None = None) -> FaceCLIPEncoder:
    """Build the encoder for ``sd`` (official key names, no prefix). ``sd`` is consumed: its tensors are converted
    one at a time and end up owned by the model. ``share_face_encoder=None`` shares when the ViTs are identical."""
    sd = strip_prefix(sd)
    cfg, expected = check_state_dict(sd, dtype, operations, compute_dtype)
    share = face_encoders_identical(sd) if share_face_encoder is None else share_face_encoder
    if share:
        cfg = EncoderConfig(l=cfg.l, g=cfg.g, share_face_encoder=True)
        for key in [k for k in sd if k.startswith("face_clip_g.face_encoder.")]:
            del sd[key]  # the L branch's ViT serves both
    model = build_meta(cfg, dtype, operations, compute_dtype)
    weights = to_module_state_dict(sd, lambda name: expected[name].dtype, torch.device(device))
    if share:
        for key in [k for k in weights if k.startswith("face_clip_l.face_encoder.")]:
            weights["face_clip_g" + key[len("face_clip_l"):]] = weights[key]
    result = model.load_state_dict(weights, strict=True, assign=True)
    if result.missing_keys or result.unexpected_keys:  # pragma: no cover - strict=True raises first
        raise FaceCLIPStateDictError("state dict did not load", result.missing_keys, result.unexpected_keys)
    model.eval()
    model.requires_grad_(False)
    logger.info("FaceCLIP encoder loaded: L width %d x %d layers, G width %d x %d layers, %s, face ViT %s",
             cfg.l.width, cfg.l.text.layers, cfg.g.width, cfg.g.text.layers, dtype,
             "shared" if share else "per branch")
    return model


def _plan_from_safetensors_header(path: Path, dtype: torch.dtype, operations: Any,
                                  compute_dtype: torch.dtype | None
                                  ) -> tuple[Callable[[str, torch.dtype], torch.dtype | None], dict[str, str]]:
    """Check a .safetensors file's names and shapes against the architecture before reading any tensor data, and
    return the per-tensor target dtype (that of the layer it loads into) and the G-branch face-ViT tensors with
    their L-branch twins."""
    _, index = safetensors_io.read_index(path)
    names = plain_names(index)
    meta = {names[k]: torch.empty(shape, dtype=dt, device="meta") for k, (dt, shape, _, _) in index.items()}
    _, expected = check_state_dict(meta, dtype, operations, compute_dtype)
    by_plain = {v: k for k, v in names.items()}
    twins = {}
    for plain, orig in by_plain.items():
        if plain.startswith("face_clip_g.face_encoder."):
            l_name = by_plain.get("face_clip_l" + plain[len("face_clip_g"):])
            if l_name is not None:
                twins[orig] = l_name

    def want(name: str, file_dtype: torch.dtype) -> torch.dtype:
        return read_dtype(names[name], file_dtype, lambda module: expected[module].dtype)

    return want, twins


def load_encoder(source: str | os.PathLike | Mapping[str, torch.Tensor], device: str | torch.device = "cpu",
                 dtype: torch.dtype = torch.float32, operations: Any = None,
                 compute_dtype: torch.dtype | None = None) -> FaceCLIPEncoder:
    """Load a FaceCLIP-SDXL encoder.

    ``source``: a ``.safetensors`` file (see ``python -m faceclip_core.convert``), the official
    ``face_clip_encoder.pt`` (read with ``torch.load(weights_only=True)``; its ``model.`` prefix is removed), or an
    in-memory state dict (its tensors are used directly where no dtype conversion is needed; the dict itself is
    not modified). ``dtype``: the weights' dtype (float32, bfloat16 or float16); LayerNorm/BatchNorm parameters
    stay float32. ``operations``: a ComfyUI-style ops namespace (default: torch.nn).
    Raises :class:`FaceCLIPWeightsError` for unreadable files and :class:`FaceCLIPStateDictError` for state dicts
    that are not a FaceCLIP encoder.
    """
    if dtype not in (torch.float32, torch.bfloat16, torch.float16):
        raise FaceCLIPWeightsError(f"dtype must be torch.float32, torch.bfloat16 or torch.float16, got {dtype}")
    if isinstance(source, (str, os.PathLike)) and is_safetensors(Path(source)) and Path(source).is_file() \
            and Path(source).stat().st_size > 0:
        want, twins = _plan_from_safetensors_header(Path(source), dtype, operations, compute_dtype)
        sd = safetensors_io.read(Path(source), want, twins)
    else:
        sd = read_state_dict(source)
    encoder = encoder_from_state_dict(sd, device=device, dtype=dtype, operations=operations,
                                      compute_dtype=compute_dtype)
    get_tokenizer()  # built now (a few tenths of a second), not in the first encode
    return encoder
