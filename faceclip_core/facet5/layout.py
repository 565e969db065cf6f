"""The released ``face_t5_encoder.pt``'s names and shapes, and how its tensors become this implementation's layers:
the one place that knows both namings (as ``checkpoint_layout`` is for FaceCLIP-SDXL).

The file is ``FaceT5FluxWrapper.state_dict()``: keys ``encoder_1.*`` / ``encoder_2.*``, no prefix. At load:

- renamed: the text layers' packed ``in_proj_weight`` / ``in_proj_bias`` become the ``in_proj`` Linear; the
  ``[1, N, d]`` tables ``encoder_2.positional_embedding`` and ``face_encoder.pos_embed`` become Embeddings;
- sliced: the face layers' packed projections keep only their value rows (``v_proj``): with one key per query the
  attention is out_proj(v_proj(x)), so the query/key rows are never used;
- folded: the BiAttention layer-scale vectors ``gamma_v`` / ``gamma_l`` scale ``attn.out_v_proj`` /
  ``attn.out_l_proj`` (in float32, then to the weights' dtype);
- not built (present in the file, never reaching the outputs): the face ViT's feature head and ``mask_token``,
  ``face_pos_proj``, the fuser's ``enc_output`` / ``enc_output_norm``, and the last face layer.
"""
from __future__ import annotations

import re
from collections.abc import Callable, MutableMapping

import torch

from ..sdxl.checkpoint_layout import apply_first_rule, fold_layer_scales
from .config import FaceT5Config

_FUSER = r"encoder_2\.fuser\.encoder"
_RENAMES: tuple[tuple[re.Pattern, str], ...] = (
    (re.compile(rf"^({_FUSER}\.text_layers\.\d+\.self_attn)\.in_proj_(weight|bias)$"), r"\1.in_proj.\2"),
    (re.compile(rf"^({_FUSER}\.layers\.\d+\.self_attn)\.in_proj_(weight|bias)$"), r"\1.v_proj.\2"),
    (re.compile(r"^encoder_2\.(positional_embedding|face_encoder\.pos_embed)$"), r"encoder_2.\1.weight"),
)
_INVERSE: tuple[tuple[re.Pattern, str], ...] = (
    (re.compile(rf"^({_FUSER}\.text_layers\.\d+\.self_attn)\.in_proj\.(weight|bias)$"), r"\1.in_proj_\2"),
    (re.compile(rf"^({_FUSER}\.layers\.\d+\.self_attn)\.v_proj\.(weight|bias)$"), r"\1.in_proj_\2"),
    (re.compile(r"^encoder_2\.(positional_embedding|face_encoder\.pos_embed)\.weight$"), r"encoder_2.\1"),
)
_UNUSED = re.compile(r"^encoder_2\.(?:face_encoder\.(?:feature\..+|mask_token)|face_pos_proj\.(?:weight|bias)"
                     r"|fuser\.enc_output(?:_norm)?\.(?:weight|bias))$")
_FACE_LAYER = re.compile(rf"^{_FUSER}\.layers\.(\d+)\.")
_GAMMA = re.compile(rf"^({_FUSER}\.fusion_layers\.\d+)\.gamma_([vl])$")
_SCALED = re.compile(rf"^{_FUSER}\.fusion_layers\.\d+\.attn\.out_[vl]_proj\.(?:weight|bias)$")
_TABLE = re.compile(r"^encoder_2\.(?:positional_embedding|face_encoder\.pos_embed)$")
_VALUE_ROWS = re.compile(rf"^{_FUSER}\.layers\.\d+\.self_attn\.in_proj_(?:weight|bias)$")


class FaceT5Layout:
    """Name and shape mapping for one architecture (the unused last face layer depends on the layer count)."""

    def __init__(self, cfg: FaceT5Config) -> None:
        self.cfg = cfg
        self.last_face_layer = cfg.fuser.layers - 1

    def unused(self, official: str) -> bool:
        """True for a tensor of the file that nothing reads (not built, dropped at load)."""
        if _UNUSED.match(official):
            return True
        m = _FACE_LAYER.match(official)
        return m is not None and int(m.group(1)) == self.last_face_layer

    @staticmethod
    def module_name(official: str) -> str:
        """The layer parameter an official tensor loads into (unused and folded tensors have none: check first)."""
        return apply_first_rule(_RENAMES, official)

    @staticmethod
    def official_name(module: str) -> str:
        return apply_first_rule(_INVERSE, module)

    def read_dtype(self, official: str, file_dtype: torch.dtype,
                   layer_dtype: Callable[[str], torch.dtype]) -> torch.dtype:
        """The dtype to read an official tensor in: its layer's; float32 for what is folded (gammas and the
        projections they scale); the file's for tensors not built and for packed projections that are sliced
        before conversion (so only the kept rows are ever converted)."""
        if self.unused(official) or _VALUE_ROWS.match(official):
            return file_dtype
        if _GAMMA.match(official):
            return torch.float32
        name = self.module_name(official)
        return torch.float32 if _SCALED.match(name) else layer_dtype(name)

    def official_layout(self, model_tensors: dict[str, torch.Tensor]) -> dict[str, tuple[int, ...]]:
        """Names and shapes of the released checkpoint for a model whose (meta) state dict is ``model_tensors``."""
        cfg = self.cfg
        d, vd = cfg.t5.d_model, cfg.face.dim
        layout: dict[str, tuple[int, ...]] = {}
        for name, t in model_tensors.items():
            official = self.official_name(name)
            shape = tuple(t.shape)
            if _TABLE.match(official):
                shape = (1, *shape)
            elif _VALUE_ROWS.match(official):
                shape = (3 * shape[0], *shape[1:])
            layout[official] = shape
        fe, f = "encoder_2.face_encoder", "encoder_2.fuser"
        layout.update({f"{fe}.mask_token": (1, 1, vd), f"{fe}.feature.0.weight": (vd, cfg.face.num_patches * vd),
                       f"{fe}.feature.2.weight": (cfg.face.embed_size, vd),
                       "encoder_2.face_pos_proj.weight": (d, vd), "encoder_2.face_pos_proj.bias": (d,),
                       f"{f}.enc_output.weight": (d, d), f"{f}.enc_output.bias": (d,),
                       f"{f}.enc_output_norm.weight": (d,), f"{f}.enc_output_norm.bias": (d,)})
        for j, n in ((1, vd), (3, cfg.face.embed_size)):
            for part in ("weight", "bias", "running_mean", "running_var"):
                layout[f"{fe}.feature.{j}.{part}"] = (n,)
            layout[f"{fe}.feature.{j}.num_batches_tracked"] = ()
        last = f"{f}.encoder.layers.{self.last_face_layer}"
        ff = cfg.fuser.face_ffn
        layout.update({f"{last}.self_attn.in_proj_weight": (3 * d, d), f"{last}.self_attn.in_proj_bias": (3 * d,),
                       f"{last}.self_attn.out_proj.weight": (d, d), f"{last}.self_attn.out_proj.bias": (d,),
                       f"{last}.linear1.weight": (ff, d), f"{last}.linear1.bias": (ff,),
                       f"{last}.linear2.weight": (d, ff), f"{last}.linear2.bias": (d,)})
        for norm in ("norm1", "norm2"):
            layout[f"{last}.{norm}.weight"] = layout[f"{last}.{norm}.bias"] = (d,)
        for i in range(cfg.fuser.layers):
            layout[f"{f}.encoder.fusion_layers.{i}.gamma_v"] = layout[f"{f}.encoder.fusion_layers.{i}.gamma_l"] = (d,)
        return layout

    def to_module_state_dict(self, sd: MutableMapping[str, torch.Tensor], dtype_of: Callable[[str], torch.dtype],
                             device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
        """The model's state dict from an official one (checked against ``official_layout`` already). ``sd`` is
        consumed tensor by tensor; ``dtype_of(name)`` is the dtype of the model's parameter ``name``."""
        out: dict[str, torch.Tensor] = {}
        gammas: dict[str, torch.Tensor] = {}
        for official in list(sd):
            tensor = sd.pop(official)
            if self.unused(official):
                continue
            if _GAMMA.match(official):
                gammas[official] = tensor.float()
                continue
            name = self.module_name(official)
            if _TABLE.match(official):
                tensor = tensor.reshape(tensor.shape[1:])
            if _VALUE_ROWS.match(official):
                # A copy, so the query/key rows (two thirds of the tensor) are freed, not kept alive by a view.
                rows = tensor.shape[0] // 3
                out[name] = tensor[2 * rows:].to(device=device, dtype=dtype_of(name), copy=True)
                continue
            # the projections a gamma scales wait for it (below), in the file's precision
            out[name] = tensor if _SCALED.match(name) else tensor.to(device=device, dtype=dtype_of(name))
        fold_layer_scales(out, gammas, _GAMMA, dtype_of, device)
        return out
