"""What kind of model a weights file holds, from its tensor names alone.

Used twice: a loader that is handed the wrong file says first which file it is and which node loads it, and the
loaders' file lists put the files of their own kind first. Recognising a .safetensors file reads only its JSON
header (cached per path, size and modification time); a .pt file would have to be unpickled, so only its name is
looked at.
"""
from __future__ import annotations

import json
import os
import re
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

FACECLIP_SDXL = "faceclip_sdxl"
FACET5 = "facet5"


@dataclass(frozen=True)
class Kind:
    key: str
    what: str  # "a FaceT5-FLUX encoder"
    load_with: str  # the node that loads it, as the user sees it


KINDS = {k.key: k for k in (
    Kind(FACECLIP_SDXL, "a FaceCLIP-SDXL encoder (face_clip_encoder.pt)", 'the "Load FaceCLIP" node'),
    Kind(FACET5, "a FaceT5-FLUX encoder (face_t5_encoder.pt, FaceCLIP's FLUX variant)", 'the "Load FaceT5" node'),
    Kind("lora", "a LoRA", "ComfyUI's Load LoRA node"),
    Kind("checkpoint", "a Stable Diffusion / SDXL checkpoint (UNet, text encoders and VAE in one file)",
         "ComfyUI's Load Checkpoint node"),
    Kind("flux_dit", "a FLUX diffusion model (such as FaceT5's dit.pt)", "ComfyUI's Load Diffusion Model node"),
    Kind("unet", "a UNet (diffusion model)", "ComfyUI's Load Diffusion Model node"),
    Kind("t5", "a stock T5 text encoder", "ComfyUI's Load CLIP node"),
    Kind("clip", "a stock CLIP text encoder", "ComfyUI's Load CLIP node"),
    Kind("vae", "a VAE", "ComfyUI's Load VAE node"),
)}

# Checked in this order: the first rule any tensor name matches decides (a checkpoint holds a UNet and a CLIP, so
# it comes before them; a LoRA names the layers of what it patches, so it comes first of the stock kinds).
_RULES: tuple[tuple[str, re.Pattern[str]], ...] = tuple((key, re.compile(rx)) for key, rx in (
    (FACET5, r"^(model\.|module\.)?encoder_2\.t5_encoder\."),
    (FACECLIP_SDXL, r"^(model\.|module\.)?face_clip_[lg]\."),
    ("lora", r"(^lora_|\.lora_(up|down|A|B)\b|\.lora\.(up|down)\b)"),
    ("checkpoint", r"^(conditioner\.embedders\.|cond_stage_model\.)"),
    ("flux_dit", r"^(model\.diffusion_model\.)?(double_blocks|single_blocks|transformer_blocks|"
                 r"single_transformer_blocks)\.\d+\."),
    ("unet", r"^(model\.diffusion_model\.|down_blocks\.\d+\.|input_blocks\.\d+\.)"),
    ("t5", r"^(encoder\.block\.\d+\.layer\.|shared\.weight$)"),
    ("clip", r"^(transformer\.)?text_model\."),
    ("vae", r"^(first_stage_model\.)?(encoder\.down\.|decoder\.up\.|encoder\.down_blocks\.)"),
))


def kind_of_keys(keys: Iterable[str]) -> Kind | None:
    """The kind of a state dict with these tensor names, or None when none is recognised."""
    names = list(keys)
    for key, rule in _RULES:
        if any(rule.search(name) for name in names):
            return KINDS[key]
    return None


def wrong_file_hint(keys: Iterable[str], expected: str) -> str:
    """The sentence to put first when a loader for kind ``expected`` is handed a state dict with ``keys``:
    "this is a FaceT5-FLUX encoder ...: load it with the "Load FaceT5" node, not the "Load FaceCLIP" node." ("" when
    the file is of the expected kind or not recognised)."""
    kind = kind_of_keys(keys)
    if kind is None or kind.key == expected:
        return ""
    return f"this file is {kind.what}: load it with {kind.load_with}, not {KINDS[expected].load_with}."


def _header_keys(path: Path) -> list[str]:
    with open(path, "rb") as fh:
        (n,) = struct.unpack("<Q", fh.read(8))
        if n > 100 * 1024 * 1024:  # a real header is kilobytes to a few megabytes
            raise ValueError("implausible safetensors header size")
        return [k for k in json.loads(fh.read(n)) if k != "__metadata__"]


@lru_cache(maxsize=512)
def _kind_cached(path: str, size: int, mtime_ns: int) -> str | None:
    p = Path(path)
    if p.suffix.lower() == ".safetensors":
        try:
            kind = kind_of_keys(_header_keys(p))
        except (OSError, ValueError, struct.error):  # unreadable: the loader will say why when it is picked
            return None
        return kind.key if kind else None
    stem = p.stem.lower()  # the released files are face_clip_encoder.pt and face_t5_encoder.pt
    if "t5" in stem and "face" in stem:
        return FACET5
    if "face_clip" in stem or "faceclip" in stem:
        return FACECLIP_SDXL
    return None


def file_kind(path: str | os.PathLike) -> str | None:
    """The kind key of the weights file at ``path`` (None: unknown or unreadable); reads at most its header."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return _kind_cached(str(path), st.st_size, st.st_mtime_ns)


def order_for_loader(expected: str, files: Sequence[tuple[str, str | os.PathLike | None]]) -> list[str]:
    """The names of ``files`` ((name, path) pairs) for a loader of kind ``expected``: files of that kind first,
    then unrecognised ones, then files of other kinds, each group in its given order. The first name is the
    default of a freshly added node, so it must be a file that node can load."""
    def rank(item: tuple[str, str | os.PathLike | None]) -> int:
        kind = file_kind(item[1]) if item[1] is not None else None
        return 0 if kind == expected else 1 if kind is None else 2

    return [name for name, _ in sorted(files, key=rank)]
