"""Convert FaceCLIP's released pickles to .safetensors.

    python -m faceclip_core.convert face_clip_encoder.pt faceclip_encoder.safetensors [--dtype bf16|fp16|fp32]
    python -m faceclip_core.convert unet.pt faceclip_sdxl_unet.safetensors [--dtype bf16|fp16|fp32]
    python -m faceclip_core.convert face_t5_encoder.pt facet5_encoder.safetensors      (FaceT5-FLUX, 12.5 GB)
    python -m faceclip_core.convert dit.pt facet5_flux_dit.safetensors                 (FaceT5-FLUX, 23.8 GB)

The kind of file (FaceCLIP-SDXL encoder, diffusers SDXL UNet, FaceT5-FLUX encoder, diffusers FLUX transformer) is
detected from its keys, and the whole key set and every shape are checked before anything is written. The
encoders are written with their official key names (minus the SDXL file's ``model.`` prefix: the loaders check
the same names); the UNet and the FLUX transformer keep their diffusers key names, which ComfyUI's UNETLoader
recognises and converts itself. The input pickle is memory-mapped and the output streamed tensor by tensor (the
process's own memory stays near one tensor; the mapped input's pages are the OS's file cache), written to a
temporary file in the destination folder, verified by reading it back, and only then renamed over the destination.
"""
from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from .. import safetensors_io
from ..atomic import atomic_path
from ..checkpoint_io import StateDict, read_state_dict, strip_prefix
from ..dtypes import WEIGHT_DTYPES
from ..errors import FaceCLIPError, FaceCLIPStateDictError, FaceCLIPWeightsError
from ..facet5 import loader as facet5_loader
from ..sdxl.loader import FACET5_KEY_PREFIXES, check_state_dict
from . import flux_dit

logger = logging.getLogger(__name__)

ENCODER = "faceclip_encoder"
UNET = "sdxl_unet_diffusers"
FACET5_ENCODER = "facet5_encoder"
FLUX_DIT = "flux_dit_diffusers"
# What check_state_dict means for each kind: refuse to write a file its loader would refuse.
_CHECKS = {ENCODER: check_state_dict, FACET5_ENCODER: facet5_loader.check_state_dict,
           FLUX_DIT: flux_dit.check_state_dict}

# Keys every diffusers UNet2DConditionModel state dict has; add_embedding is what SDXL adds (pooled + time ids).
_UNET_KEYS = ("conv_in.weight", "time_embedding.linear_1.weight", "down_blocks.0.resnets.0.conv1.weight",
              "conv_out.weight")
_SDXL_KEYS = ("add_embedding.linear_1.weight",)


class ConvertError(FaceCLIPError):
    """The conversion was refused or failed; the message says why."""


@dataclass(frozen=True)
class ConvertResult:
    kind: str
    dst: Path
    tensors: int
    bytes: int


def detect_kind(sd: Mapping[str, torch.Tensor]) -> str:
    """``faceclip_encoder``, ``sdxl_unet_diffusers``, ``facet5_encoder`` or ``flux_dit_diffusers``; anything else
    is refused."""
    if all(f"face_clip_{b}.positional_embedding" in sd for b in "lg"):
        return ENCODER
    if any(k.startswith(FACET5_KEY_PREFIXES) for k in sd):
        return FACET5_ENCODER
    if flux_dit.is_flux_dit(sd):
        return FLUX_DIT
    if any(k.startswith(("double_blocks.", "model.diffusion_model.double_blocks.")) for k in sd):
        raise ConvertError("this FLUX model is already in ComfyUI/BFL layout; ComfyUI loads it as it is (convert "
                           "only FaceT5's dit.pt, which is in diffusers layout)")
    if all(k in sd for k in _UNET_KEYS):
        if not all(k in sd for k in _SDXL_KEYS):
            raise ConvertError("this is a diffusers UNet but not an SDXL one (no add_embedding.*); FaceCLIP-SDXL's "
                               "unet.pt is an SDXL UNet")
        return UNET
    if any(k.startswith(("model.diffusion_model.", "input_blocks.")) for k in sd):
        raise ConvertError("this UNet is already in ComfyUI/LDM layout; ComfyUI loads it as it is (convert only "
                           "FaceCLIP's face_clip_encoder.pt and unet.pt)")
    sample = ", ".join(sorted(sd)[:4]) or "no keys"
    raise ConvertError(f"not a FaceCLIP encoder nor a diffusers SDXL UNet or FLUX transformer (keys like {sample}); "
                       "expected face_clip_encoder.pt (keys face_clip_l.*, face_clip_g.*), unet.pt (conv_in.*, "
                       "down_blocks.*), face_t5_encoder.pt (encoder_1.*, encoder_2.*) or dit.pt (x_embedder.*, "
                       "transformer_blocks.*)")


def convert(src: str | os.PathLike, dst: str | os.PathLike, dtype: str | None = None, force: bool = False
            ) -> ConvertResult:
    """Convert ``src`` (.pt or .safetensors) to the .safetensors ``dst``. ``dtype``: "bf16", "fp16", "fp32" or
    None (keep the source dtypes: the released files are bf16)."""
    src_p, dst_p = Path(src), Path(dst)
    if dtype is not None and dtype not in WEIGHT_DTYPES:
        raise ConvertError(f"--dtype must be one of {', '.join(WEIGHT_DTYPES)}, got {dtype!r}")
    if dst_p.suffix.lower() != ".safetensors":
        raise ConvertError(f"the destination must end in .safetensors (ComfyUI picks files by extension): {dst_p}")
    if dst_p.exists() and src_p.exists() and dst_p.resolve() == src_p.resolve():
        raise ConvertError("source and destination are the same file")
    if dst_p.exists() and not force:
        raise ConvertError(f"{dst_p} already exists; pass --force to overwrite it")
    if not dst_p.parent.is_dir():
        raise ConvertError(f"destination folder does not exist: {dst_p.parent}")

    sd: StateDict = strip_prefix(read_state_dict(src_p, mmap=True))
    kind = detect_kind(sd)
    if kind in _CHECKS:
        # Refuse to write a file the loader would refuse: check the whole key set and every shape (shapes only:
        # no tensor data is read).
        try:
            _CHECKS[kind](sd)
        except FaceCLIPStateDictError as err:
            raise ConvertError(f"{src_p.name}: {err}") from err
    torch_dtype = WEIGHT_DTYPES[dtype] if dtype else None
    meta = {"format": "pt", "faceclip_kind": kind, "source": src_p.name, "converted_by": "faceclip_core.convert"}

    try:
        with atomic_path(dst_p, overwrite=force) as tmp:
            size = safetensors_io.write(tmp, sd, torch_dtype, meta)
            safetensors_io.verify(tmp, sd, torch_dtype)
    except FaceCLIPWeightsError as err:
        raise ConvertError(str(err)) from err
    except FileExistsError:
        raise ConvertError(f"{dst_p} appeared while converting; pass --force to overwrite it") from None
    logger.info("wrote %s (%s, %d tensors, %.2f GB)", dst_p, kind, len(sd), size / 1e9)
    return ConvertResult(kind=kind, dst=dst_p, tensors=len(sd), bytes=size)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m faceclip_core.convert",
        description="Convert FaceCLIP's face_clip_encoder.pt or unet.pt, or FaceT5-FLUX's face_t5_encoder.pt or "
                    "dit.pt, to .safetensors (kind detected from keys).")
    parser.add_argument("src", help="face_clip_encoder.pt, unet.pt, face_t5_encoder.pt or dit.pt (or a "
                                    ".safetensors to re-cast)")
    parser.add_argument("dst", help="output .safetensors path")
    parser.add_argument("--dtype", choices=sorted(WEIGHT_DTYPES), default=None,
                        help="cast float tensors (default: keep the source dtype, bf16 for the released files)")
    parser.add_argument("--force", action="store_true", help="overwrite dst if it exists")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        res = convert(args.src, args.dst, dtype=args.dtype, force=args.force)
    except FaceCLIPError as err:
        logger.error("error: %s", err)
        return 2
    logger.info("ok: %s -> %s", res.kind, res.dst)
    return 0

