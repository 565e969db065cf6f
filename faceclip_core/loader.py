"""Reading FaceCLIP encoder weights and building the encoder around them.

The architecture is inferred from the state dict (widths, depths, FFN sizes, layer counts), the model is built
on the meta device (no random full-size weights are ever allocated) and the checkpoint tensors are assigned into
it one by one, converted to the requested dtype as they are read, so peak memory stays near one copy.
"""
from __future__ import annotations

import logging
import os
import pickle
import re
import zipfile
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import torch

from . import safetensors_io
from .checkpoint_layout import official_layout, read_dtype, to_module_state_dict
from .encoder import BRANCHES, BranchConfig, EncoderConfig, FaceCLIPEncoder
from .errors import FaceCLIPStateDictError, FaceCLIPWeightsError
from .face_vit import FaceViTConfig
from .file_kinds import FACECLIP_SDXL, wrong_file_hint
from .fuser import FuserConfig
from .text_tower import TextTowerConfig
from .tokenizer import get_tokenizer

logger = logging.getLogger(__name__)

StateDict = safetensors_io.StateDict

# Official activation per branch: the G tower's open_clip config (ViT-bigG-14) has no quick_gelu flag.
ACTIVATIONS = {"face_clip_l": "quick_gelu", "face_clip_g": "gelu"}
# Keys that must exist for a state dict to be taken as a FaceCLIP encoder at all (checked before shapes).
_SIGNATURE = ("token_embedding.weight", "positional_embedding", "face_encoder.pos_embed", "proj1.weight",
              "fuser.encoder.fusion_layers.0.attn.v_proj.weight", "transformer.resblocks.0.attn.in_proj_weight")
_PREFIXES = ("model.", "module.")
# Key prefixes only a FaceT5-FLUX encoder has (its T5 stack), so that file can be named and sent to its loader.
FACET5_KEY_PREFIXES = ("encoder_2.t5_encoder.", "model.encoder_2.t5_encoder.", "module.encoder_2.t5_encoder.")


# ---- reading ---------------------------------------------------------------------------------------------------
def _is_safetensors(path: Path) -> bool:
    return path.suffix.lower() == ".safetensors"


def read_torch_pickle(path: Path, mmap: bool = False) -> Any:
    """A ``torch.save`` file read with ``weights_only=True``: plain containers and tensors only, never code.

    Without ``mmap`` every tensor gets its own storage, so converting them one by one frees the originals as it
    goes; with ``mmap`` nothing is read up front (good for streaming conversion) but touched pages stay resident
    until every tensor is released."""
    try:
        if mmap:
            try:
                return torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
            except RuntimeError as err:
                # Old (non-zip) torch.save format cannot be memory-mapped; read it normally.
                if "mmap" not in str(err):
                    raise
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        # torch's own text carries terminal colour codes and advice to turn the safety off: name the culprit only
        found = re.search(r"GLOBAL ([\w.]+)", str(err))
        culprit = f" (it refers to {found.group(1)})" if found else ""
        raise FaceCLIPWeightsError(
            f"{path.name} is a pickle that contains more than tensors{culprit}, so it was not loaded: only plain "
            "state dicts are read, with torch.load(weights_only=True), never code. Re-save it as "
            "torch.save(model.state_dict()) or convert it to .safetensors."
        ) from err
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError, KeyError) as err:
        raise FaceCLIPWeightsError(
            f"cannot read {path.name} as a PyTorch checkpoint ({type(err).__name__}: {str(err).splitlines()[0]}); "
            "the file is truncated or corrupt: download it again") from err


def _as_state_dict(obj: Any, origin: str) -> StateDict:
    """Accept a flat {str: Tensor} mapping, or one nested under "state_dict"/"model"; refuse anything else."""
    if isinstance(obj, Mapping) and not any(isinstance(v, torch.Tensor) for v in obj.values()):
        for wrapper in ("state_dict", "model", "module"):
            if isinstance(obj.get(wrapper), Mapping):
                obj = obj[wrapper]
                break
    if not isinstance(obj, Mapping):
        raise FaceCLIPWeightsError(f"{origin} holds a {type(obj).__name__}, not a state dict (a mapping of names "
                                   "to tensors)")
    bad = [(k, type(v).__name__) for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        shown = ", ".join(f"{k!r}: {t}" for k, t in bad[:5])
        raise FaceCLIPWeightsError(f"{origin} is not a plain state dict: {len(bad)} entr(y/ies) are not named tensors "
                                   f"({shown}); save only model.state_dict()")
    return dict(obj)


def read_state_dict(source: str | os.PathLike | Mapping[str, torch.Tensor], mmap: bool = False) -> StateDict:
    """Read ``source`` (a .safetensors / torch.save path, or an in-memory mapping) into a flat dict.

    ``mmap`` (torch.save files only) maps the file instead of reading it (for streaming conversion).
    """
    if isinstance(source, Mapping):
        return _as_state_dict(source, "the given state dict")
    if not isinstance(source, (str, os.PathLike)):
        raise FaceCLIPWeightsError(f"weights source must be a file path or a state dict, got {type(source).__name__}")
    path = Path(source)
    if not path.is_file():
        raise FaceCLIPWeightsError(f"weights file not found: {path}")
    if path.stat().st_size == 0:
        raise FaceCLIPWeightsError(f"weights file is empty: {path}; download or convert it again")
    if _is_safetensors(path):
        return safetensors_io.read(path)
    return _as_state_dict(read_torch_pickle(path, mmap=mmap), path.name)


def plain_names(keys: Iterable[str]) -> dict[str, str]:
    """Each key -> the key without the ``model.`` prefix the released .pt carries (also ``module.`` from
    DataParallel saves), when every key has it."""
    names = {k: k for k in keys}
    for prefix in _PREFIXES:
        if names and all(v.startswith(prefix) for v in names.values()):
            names = {k: v[len(prefix):] for k, v in names.items()}
    return names


def strip_prefix(sd: StateDict) -> StateDict:
    """``sd`` with plain_names, renamed in place: a second dict would keep every original tensor alive while the
    converted copies are made."""
    renamed = [(plain, sd.pop(key)) for key, plain in plain_names(sd).items() if key != plain]
    sd.update(renamed)
    return sd


# ---- architecture inference ------------------------------------------------------------------------------------
def _count(sd: Mapping[str, Any], pattern: str) -> int:
    head, tail = pattern.split("#")
    rx = re.compile(re.escape(head) + r"(\d+)" + re.escape(tail))
    idx = {int(m.group(1)) for k in sd if (m := rx.fullmatch(k))}
    return max(idx) + 1 if idx else 0


def _shape(sd: Mapping[str, torch.Tensor], key: str) -> tuple[int, ...]:
    return tuple(sd[key].shape)


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
    _, n_patches, vdim = _shape(sd, prefix + "pos_embed")
    patch = _shape(sd, prefix + "patch_embed.proj.weight")[-1]
    img_size = 112  # fixed by FaceCLIP's resize; the patch grid follows from it
    grid = img_size // patch
    if grid * grid != n_patches:
        raise ValueError(f"face ViT pos_embed has {n_patches} patches, but a {img_size}px face with patch size "
                         f"{patch} gives {grid * grid}")
    return FaceViTConfig(
        dim=vdim,
        depth=_count(sd, prefix + "blocks.#.attn.qkv.weight"),
        heads=8,
        mlp_hidden=_shape(sd, prefix + "blocks.0.mlp.fc1.weight")[0],
        img_size=img_size,
        patch_size=patch,
        embed_size=_shape(sd, prefix + "feature.2.weight")[0],
        feature_head=feature_head,
    )


def infer_branch_config(sd: Mapping[str, torch.Tensor], branch: str) -> BranchConfig:
    p = f"{branch}."
    try:
        context, width = _shape(sd, p + "positional_embedding")
        text = TextTowerConfig(
            width=width,
            layers=_count(sd, p + "transformer.resblocks.#.attn.in_proj_weight"),
            heads=max(1, width // 64),
            mlp_width=_shape(sd, p + "transformer.resblocks.0.mlp.c_fc.weight")[0],
            activation=ACTIVATIONS[branch],
            context_length=context,
            vocab_size=_shape(sd, p + "token_embedding.weight")[0],
        )
        face = infer_face_vit_config(sd, p + "face_encoder.")
        grid = face.grid
        f = p + "fuser.encoder."
        deform_heads, levels = 8, 1
        fuser = FuserConfig(
            d_model=width,
            layers=_count(sd, f + "fusion_layers.#.attn.v_proj.weight"),
            bi_dim=_shape(sd, f + "fusion_layers.0.attn.v_proj.weight")[0],
            bi_heads=4,
            text_heads=4,
            text_ffn=_shape(sd, f + "text_layers.0.linear1.weight")[0],
            deform_heads=deform_heads,
            deform_levels=levels,
            deform_points=_shape(sd, f + "layers.0.self_attn.attention_weights.weight")[0] // (deform_heads * levels),
            deform_ffn=_shape(sd, f + "layers.0.linear1.weight")[0],
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


def _check_keys(sd: Mapping[str, torch.Tensor], expected: Mapping[str, tuple[int, ...]],
                model: str = "FaceCLIP-SDXL encoder") -> None:
    missing = sorted(k for k in expected if k not in sd)
    unexpected = sorted(k for k in sd if k not in expected)
    mismatched = sorted(f"{k} {tuple(sd[k].shape)} (expected {shape})" for k, shape in expected.items()
                        if k in sd and tuple(sd[k].shape) != shape)
    if missing or unexpected or mismatched:
        raise FaceCLIPStateDictError(
            f"the state dict does not match the {model} architecture inferred from it (the file is "
            "incomplete, from another FaceCLIP variant, or edited)",
            missing=missing, unexpected=unexpected, mismatched=mismatched)


def _check_floats(sd: Mapping[str, torch.Tensor]) -> None:
    """Every tensor is float except the BatchNorms' step counters."""
    bad = [k for k, v in sd.items() if v.is_floating_point() == k.endswith("num_batches_tracked")]
    if bad:
        raise FaceCLIPStateDictError("tensors with the wrong kind of dtype (integer where float expected or the "
                                     "reverse)", mismatched=[f"{k} {sd[k].dtype}" for k in bad])


def check_state_dict(sd: Mapping[str, torch.Tensor], dtype: torch.dtype = torch.float32, operations: Any = None,
                     compute_dtype: torch.dtype | None = None) -> tuple[EncoderConfig, dict[str, torch.Tensor]]:
    """Refuse, naming the keys, an official-layout state dict (names and shapes; tensors may be on the meta
    device) that is not a whole FaceCLIP-SDXL encoder. Returns its architecture and the model's meta tensors."""
    cfg = infer_config(sd)
    expected = expected_tensors(build_meta(cfg, dtype, operations, compute_dtype))
    _check_keys(sd, official_layout(expected))
    _check_floats(sd)
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
    if isinstance(source, (str, os.PathLike)) and _is_safetensors(Path(source)) and Path(source).is_file() \
            and Path(source).stat().st_size > 0:
        want, twins = _plan_from_safetensors_header(Path(source), dtype, operations, compute_dtype)
        sd = safetensors_io.read(Path(source), want, twins)
    else:
        sd = read_state_dict(source)
    encoder = encoder_from_state_dict(sd, device=device, dtype=dtype, operations=operations,
                                      compute_dtype=compute_dtype)
    get_tokenizer()  # built now (a few tenths of a second), not in the first encode
    return encoder
