"""Reading FaceT5-FLUX encoder weights and building the encoder around them, as ``faceclip_core.sdxl.loader`` does for
FaceCLIP-SDXL: architecture inferred from the tensors' shapes, model built on the meta device, tensors assigned one
by one in the requested dtype, names and shapes checked strictly first.
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
from ..dtypes import FP8_WEIGHT_DTYPES, WEIGHT_DTYPES
from ..errors import FaceCLIPStateDictError, FaceCLIPWeightsError
from ..file_kinds import FACET5, wrong_file_hint
from ..layers import store_linear_weights
from ..sdxl.loader import infer_face_vit_config
from ..sdxl.text_tower import TextTowerConfig
from ..sdxl.tokenizer import get_tokenizer
from .config import FaceT5Config, FaceT5FuserConfig, T5Config
from .encoder import FaceT5Encoder
from .layout import FaceT5Layout
from .tokenizer import get_t5_tokenizer

logger = logging.getLogger(__name__)

MODEL = "FaceT5-FLUX encoder"
_CLIP = "encoder_1.text_model."
_T5 = "encoder_2.t5_encoder."
_FUSER = "encoder_2.fuser.encoder."
_BIAS_TABLE = _T5 + "block.0.self_attention_layer.self_attention.pe_encoding.relative_attention_bias.weight"
# Keys that must exist for a state dict to be taken as a FaceT5 encoder at all (checked before shapes).
_SIGNATURE = (_CLIP + "embeddings.token_embedding.weight", _CLIP + "encoder.layers.0.self_attn.q_proj.weight",
              _T5 + "embed_tokens.weight", _BIAS_TABLE, "encoder_2.face_encoder.pos_embed",
              "encoder_2.positional_embedding", _FUSER + "fusion_layers.0.attn.v_proj.weight")


def check_signature(sd: Mapping[str, torch.Tensor]) -> None:
    """Refuse early, with a readable message, a state dict that is clearly not a FaceT5 encoder."""
    missing = [k for k in _SIGNATURE if k not in sd]
    if not missing:
        return
    sample = ", ".join(sorted(sd)[:4]) or "no keys at all"
    # the actionable sentence first (which file this is, which node loads it), the key lists after
    first = wrong_file_hint(sd, FACET5) or (
        "this file is not a FaceT5-FLUX encoder: pick face_t5_encoder.pt (or its .safetensors conversion, "
        "`python -m faceclip_core.convert`) in the \"Load FaceT5\" node.")
    raise FaceCLIPStateDictError(
        f"{first} Not a {MODEL} state dict: expected keys under encoder_1.* (CLIP-L) and encoder_2.* (face ViT, T5, "
        f"fuser), as in face_t5_encoder.pt; found keys like {sample}", missing=missing)


# ---- architecture inference ------------------------------------------------------------------------------------
def _divide(total: int, parts: int, what: str) -> int:
    if parts <= 0 or total % parts:
        raise ValueError(f"{what}: {total} does not split into {parts} heads")
    return total // parts


def infer_config(sd: Mapping[str, torch.Tensor]) -> FaceT5Config:
    """The architecture of a FaceT5 state dict (official names, no prefix; tensors may be on the meta device)."""
    check_signature(sd)
    try:
        vocab, width = shape_of(sd, _CLIP + "embeddings.token_embedding.weight")
        clip = TextTowerConfig(
            width=width,
            layers=count_indexed(sd, _CLIP + "encoder.layers.#.self_attn.q_proj.weight"),
            heads=max(1, width // 64),  # head_dim 64, as CLIP-L
            mlp_width=shape_of(sd, _CLIP + "encoder.layers.0.mlp.fc1.weight")[0],
            activation="quick_gelu",
            context_length=shape_of(sd, _CLIP + "embeddings.position_embedding.weight")[0],
            vocab_size=vocab,
        )
        t5_vocab, d = shape_of(sd, _T5 + "embed_tokens.weight")
        buckets, heads = shape_of(sd, _BIAS_TABLE)
        inner = shape_of(sd, _T5 + "block.0.self_attention_layer.self_attention.Wq.weight")[0]
        t5 = T5Config(
            d_model=d,
            layers=count_indexed(sd, _T5 + "block.#.self_attention_layer.self_attention.Wq.weight"),
            heads=heads,
            d_kv=_divide(inner, heads, "T5 attention width"),
            d_ff=shape_of(sd, _T5 + "block.0.ff_layer.act.wi_0.weight")[0],
            vocab_size=t5_vocab,
            buckets=buckets,
        )
        fuser = FaceT5FuserConfig(
            d_model=d,
            layers=count_indexed(sd, _FUSER + "fusion_layers.#.attn.v_proj.weight"),
            bi_dim=shape_of(sd, _FUSER + "fusion_layers.0.attn.v_proj.weight")[0],
            text_ffn=shape_of(sd, _FUSER + "text_layers.0.linear1.weight")[0],
            face_ffn=shape_of(sd, _FUSER + "layers.0.linear1.weight")[0],
        )
        _divide(fuser.bi_dim, fuser.bi_heads, "fuser BiAttention width")
        _divide(d, fuser.text_heads, "fuser text width")
        face = infer_face_vit_config(sd, "encoder_2.face_encoder.", feature_head=False)
        text_positions = shape_of(sd, "encoder_2.positional_embedding")[1]
    except (KeyError, ValueError, IndexError) as err:
        raise FaceCLIPStateDictError(
            f"{MODEL} state dict is incomplete: cannot infer its architecture ({err!r})",
            missing=[str(err).strip("'")] if isinstance(err, KeyError) else ()) from err
    return FaceT5Config(clip=clip, t5=t5, face=face, fuser=fuser, text_positions=text_positions)


# ---- building -------------------------------------------------------------------------------------------------
def build_meta(cfg: FaceT5Config, dtype: torch.dtype = torch.float32, operations: Any = None,
               compute_dtype: torch.dtype | None = None) -> FaceT5Encoder:
    """The encoder with every tensor on the meta device: shapes and dtypes only, no memory."""
    return FaceT5Encoder(cfg, device="meta", dtype=dtype, operations=operations, compute_dtype=compute_dtype)


def check_state_dict(sd: Mapping[str, torch.Tensor], dtype: torch.dtype = torch.float32, operations: Any = None,
                     compute_dtype: torch.dtype | None = None
                     ) -> tuple[FaceT5Config, FaceT5Layout, dict[str, torch.Tensor]]:
    """Refuse, naming the keys, an official-layout state dict (names and shapes) that is not a whole FaceT5
    encoder. Returns its architecture, its layout and the model's meta tensors."""
    cfg = infer_config(sd)
    expected = dict(build_meta(cfg, dtype, operations, compute_dtype).state_dict(keep_vars=True))
    layout = FaceT5Layout(cfg)
    check_keys(sd, layout.official_layout(expected), MODEL)
    check_floats(sd)
    return cfg, layout, expected


def encoder_from_state_dict(sd: StateDict, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
                            operations: Any = None, compute_dtype: torch.dtype | None = None) -> FaceT5Encoder:
    """Build the encoder for ``sd`` (official key names). ``sd`` is consumed: its tensors are converted one at a
    time and end up owned by the model."""
    sd = strip_prefix(sd)
    cfg, layout, expected = check_state_dict(sd, dtype, operations, compute_dtype)
    model = build_meta(cfg, dtype, operations, compute_dtype)
    weights = layout.to_module_state_dict(sd, lambda name: expected[name].dtype, torch.device(device))
    model.load_state_dict(weights, strict=True, assign=True)
    model.eval()
    model.requires_grad_(False)
    logger.info("FaceT5 encoder loaded: T5 %d x %d (%d heads), CLIP-L %d x %d, face ViT %d x %d, fuser %d layers, "
                "%s", cfg.t5.d_model, cfg.t5.layers, cfg.t5.heads, cfg.clip.width, cfg.clip.layers, cfg.face.dim,
                cfg.face.depth, cfg.fuser.layers, dtype)
    return model


def _plan_from_safetensors_header(path: Path, dtype: torch.dtype, operations: Any,
                                  compute_dtype: torch.dtype | None) -> Callable[[str, torch.dtype], torch.dtype]:
    """Check a .safetensors file's names and shapes against the architecture before reading any tensor data, and
    return the dtype to read each tensor in (that of the layer it loads into)."""
    _, index = safetensors_io.read_index(path)
    names = plain_names(index)
    meta = {names[k]: torch.empty(shape, dtype=dt, device="meta") for k, (dt, shape, _, _) in index.items()}
    _, layout, expected = check_state_dict(meta, dtype, operations, compute_dtype)

    def want(name: str, file_dtype: torch.dtype) -> torch.dtype:
        return layout.read_dtype(names[name], file_dtype, lambda module: expected[module].dtype)

    return want


def load_facet5_encoder(source: str | os.PathLike | Mapping[str, torch.Tensor], device: str | torch.device = "cpu",
                        dtype: torch.dtype = torch.float32, operations: Any = None,
                        compute_dtype: torch.dtype | None = None,
                        t5_tokenizer: str | os.PathLike | None = None,
                        linear_dtype: torch.dtype | None = None) -> FaceT5Encoder:
    """Load a FaceT5-FLUX encoder (FaceCLIP's FLUX variant).

    ``source``: the official ``face_t5_encoder.pt`` (read with ``torch.load(weights_only=True)``; keys
    ``encoder_1.*`` / ``encoder_2.*``), a ``.safetensors`` file with the same keys, or an in-memory state dict (its
    tensors are used directly where no dtype conversion is needed; the dict itself is not modified). ``dtype``: the
    weights' dtype (float32, bfloat16 or float16); norm parameters stay float32. ``operations``: a ComfyUI-style
    ops namespace (default: torch.nn). ``compute_dtype``: the activations' dtype (default: ``dtype``; another one
    needs ops that cast weights per layer, such as comfy.ops.manual_cast). ``t5_tokenizer``: the T5
    tokenizer.json :meth:`FaceT5Encoder.encode` uses (checked now; default: ComfyUI's, looked up when needed).
    ``linear_dtype``: store the Linear layers' weights (nearly all of the ~6 G parameters) in this 8-bit float
    instead (``torch.float8_e4m3fn``; the rest stays ``dtype``); needs ``operations`` that cast weights per layer
    and a ``compute_dtype``. Loading passes through ``dtype`` first, one layer converted at a time.
    Raises :class:`FaceCLIPWeightsError` for unreadable files and :class:`FaceCLIPStateDictError` for state dicts
    that are not a FaceT5 encoder (naming the right loader for a FaceCLIP-SDXL file).
    """
    if dtype not in WEIGHT_DTYPES.values():
        raise FaceCLIPWeightsError(f"dtype must be torch.float32, torch.bfloat16 or torch.float16, got {dtype}")
    if linear_dtype is not None:
        if linear_dtype not in FP8_WEIGHT_DTYPES.values():
            raise FaceCLIPWeightsError(f"linear_dtype must be one of {list(FP8_WEIGHT_DTYPES.values())}, "
                                       f"got {linear_dtype}")
        if operations is None or compute_dtype is None:
            raise FaceCLIPWeightsError("8-bit weights need operations that cast weights at compute (such as "
                                       "comfy.ops.manual_cast) and a compute_dtype")
    if isinstance(source, (str, os.PathLike)) and is_safetensors(Path(source)) and Path(source).is_file() \
            and Path(source).stat().st_size > 0:
        want = _plan_from_safetensors_header(Path(source), dtype, operations, compute_dtype)
        sd = safetensors_io.read(Path(source), want)
    else:
        sd = read_state_dict(source)
    encoder = encoder_from_state_dict(sd, device=device, dtype=dtype, operations=operations,
                                      compute_dtype=compute_dtype)
    if linear_dtype is not None:
        clamped = store_linear_weights(encoder, linear_dtype)
        if clamped:
            logger.warning("FaceT5 8-bit weights: %d values beyond %s's range were clamped", clamped, linear_dtype)
    if t5_tokenizer is not None:
        get_t5_tokenizer(t5_tokenizer)  # a wrong path fails at load, not in the first encode
        encoder.t5_tokenizer = t5_tokenizer
    get_tokenizer()  # the CLIP BPE table, built now (a few tenths of a second), not in the first encode
    return encoder
