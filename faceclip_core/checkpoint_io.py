"""Reading checkpoints of either FaceCLIP variant: safetensors or ``weights_only`` torch pickles into a flat state
dict, the ``model.`` prefix of the released files, and the key/shape/dtype checks that name what is wrong.

Shared by the SDXL encoder's loader (``sdxl/loader.py``), FaceT5's (``facet5/loader.py``) and the converter."""
from __future__ import annotations

import os
import pickle
import re
import zipfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch

from . import safetensors_io
from .errors import FaceCLIPStateDictError, FaceCLIPWeightsError

StateDict = safetensors_io.StateDict

_PREFIXES = ("model.", "module.")


def is_safetensors(path: Path) -> bool:
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
    if is_safetensors(path):
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


def count_indexed(sd: Mapping[str, Any], pattern: str) -> int:
    head, tail = pattern.split("#")
    rx = re.compile(re.escape(head) + r"(\d+)" + re.escape(tail))
    idx = {int(m.group(1)) for k in sd if (m := rx.fullmatch(k))}
    return max(idx) + 1 if idx else 0


def shape_of(sd: Mapping[str, torch.Tensor], key: str) -> tuple[int, ...]:
    return tuple(sd[key].shape)


def check_keys(sd: Mapping[str, torch.Tensor], expected: Mapping[str, tuple[int, ...]],
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


def check_floats(sd: Mapping[str, torch.Tensor]) -> None:
    """Every tensor is float except the BatchNorms' step counters."""
    bad = [k for k, v in sd.items() if v.is_floating_point() == k.endswith("num_batches_tracked")]
    if bad:
        raise FaceCLIPStateDictError("tensors with the wrong kind of dtype (integer where float expected or the "
                                     "reverse)", mismatched=[f"{k} {sd[k].dtype}" for k in bad])
