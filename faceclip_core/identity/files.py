"""ID-embedding and training-state files: safetensors, written atomically, never overwritten unless asked.

Embedding file (what ``embedding:name`` reads): ``clip_l`` [N,768] and ``clip_g`` [N,1280], ComfyUI's standard
SDXL layout. A SeFi-IDE embedding with stages or a key/value split also carries the full tokens under
``id.clip_l`` / ``id.clip_g`` [S,P,N,D] (ComfyUI's loader reads only the key it asks for, so the extra keys do
no harm) and its layout in the metadata.

Training-state file: everything a resumed run needs to continue exactly where it stopped: trainable tensors,
the AdamW state, the fp16 loss scaler's state, the step, the random generator's state and the per-step history
of the loss terms.
"""
from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file

from ..atomic import atomic_path
from .embedding import FORMAT, IDEmbedding
from .errors import IdentityError, IdentityFileError
from .text import ENCODERS

STATE_FORMAT = "faceclip-id-train-state/2"


def _save_tensors(path: str | os.PathLike, tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str],
                 overwrite: bool) -> Path:
    """Save ``tensors`` as safetensors at ``path``; readers never see half a file (see atomic_path)."""
    try:
        with atomic_path(path, overwrite) as tmp:
            save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, tmp, metadata=dict(metadata))
    except FileExistsError:
        raise IdentityFileError(f"{path} exists already. Choose another name, or allow overwriting.") from None
    return Path(path)


def save_embedding(path: str | os.PathLike, embedding: IDEmbedding, overwrite: bool = False) -> Path:
    emb = embedding.detach()
    tensors = dict(emb.collapsed())
    if not emb.is_plain:
        tensors.update({f"id.{name}": t for name, t in emb.tokens.items()})
    metadata = {"format": FORMAT, "method": emb.method, "stages": str(emb.stages), "parts": str(emb.parts),
                "num_tokens": str(emb.num_tokens), "num_train_timesteps": str(emb.num_train_timesteps),
                **{f"meta.{k}": str(v) for k, v in emb.metadata.items()}}
    return _save_tensors(path, tensors, metadata, overwrite)


def _read(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    if not path.is_file():
        raise IdentityFileError(f"{path} does not exist.")
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
        return load_file(str(path)), metadata
    except (SafetensorError, OSError, ValueError) as exc:
        raise IdentityFileError(f"{path} is not a readable safetensors file ({exc}). Train the identity again "
                                "or pick another file.") from exc


def load_embedding(path: str | os.PathLike) -> IDEmbedding:
    """An ID embedding file of ours, or any standard SDXL embedding (``clip_l`` + ``clip_g``)."""
    path = Path(path)
    tensors, metadata = _read(path)
    if all(f"id.{n}" in tensors for n in ENCODERS):
        tokens = {n: tensors[f"id.{n}"].float() for n in ENCODERS}
    elif all(n in tensors for n in ENCODERS):
        tokens = {n: tensors[n].float().reshape(1, 1, -1, tensors[n].shape[-1]) for n in ENCODERS}
    else:
        raise IdentityFileError(f"{path.name} is not an SDXL ID embedding: it has no 'clip_l' and 'clip_g' "
                                f"tensors (found {sorted(tensors)[:6]}).")
    widths = {n: t.shape[-1] for n, t in tokens.items()}
    if widths != {"clip_l": 768, "clip_g": 1280} and metadata.get("format") != FORMAT:
        raise IdentityFileError(f"{path.name}: widths {widths} are not SDXL's (768 for clip_l, 1280 for clip_g).")
    counts = {n: tuple(t.shape[:3]) for n, t in tokens.items()}
    if counts["clip_l"] != counts["clip_g"]:
        raise IdentityFileError(
            f"{path.name}: its clip_l and clip_g parts hold different numbers of tokens ({counts['clip_l'][-1]} and "
            f"{counts['clip_g'][-1]}); an SDXL embedding needs the same tokens for both encoders. The file is "
            "damaged or was made for another model: export it again or choose another embedding.")
    for name, t in tokens.items():
        if not torch.isfinite(t).all():
            raise IdentityFileError(
                f"{path.name}: its {name} tokens hold NaN or infinite values (a training run that diverged, or a "
                "damaged file), which would give black images. Train it again (a lower learning rate, or "
                "training_dtype bf16/fp32) or choose another embedding.")
    meta = {k[5:]: v for k, v in metadata.items() if k.startswith("meta.")}
    try:
        return IDEmbedding(method=metadata.get("method", "textual-inversion"), tokens=tokens,
                           num_train_timesteps=int(metadata.get("num_train_timesteps", 1000)), metadata=meta)
    except (IdentityError, ValueError) as err:
        raise IdentityFileError(f"{path.name} is not a usable ID embedding: {err}. Choose another embedding, or "
                                "train this one again.") from None


@dataclass
class TrainState:
    """The loop's complete state after ``step`` optimisation steps."""

    step: int
    params: dict[str, torch.Tensor]
    optimizer: dict  # torch.optim state_dict
    rng: torch.Tensor  # torch.Generator.get_state()
    config: dict  # MethodConfig.to_dict() of the run that made it
    history: list[dict]  # one loop.StepStats (as a dict) per step
    scaler: dict = field(default_factory=dict)  # torch.amp.GradScaler.state_dict(); empty unless fp16

    @property
    def losses(self) -> list[float]:
        return [h["loss"] for h in self.history]


def save_state(path: str | os.PathLike, state: TrainState, overwrite: bool = True) -> Path:
    tensors = {f"param.{k}": v for k, v in state.params.items()}
    tensors["rng"] = state.rng
    opt_meta = {"param_groups": state.optimizer["param_groups"], "state_keys": {}}
    for idx, entry in state.optimizer["state"].items():
        keys = []
        for key, value in entry.items():
            t = value if torch.is_tensor(value) else torch.tensor(value)
            tensors[f"optim.{idx}.{key}"] = t
            keys.append(key)
        opt_meta["state_keys"][str(idx)] = keys
    metadata = {"format": STATE_FORMAT, "step": str(state.step), "config": json.dumps(state.config),
                "optimizer": json.dumps(opt_meta), "history": json.dumps(state.history),
                "scaler": json.dumps(state.scaler)}
    return _save_tensors(path, tensors, metadata, overwrite)


def load_state(path: str | os.PathLike) -> TrainState:
    path = Path(path)
    tensors, metadata = _read(path)
    found = metadata.get("format", "")
    if found != STATE_FORMAT:
        if found.startswith(STATE_FORMAT.rsplit("/", 1)[0]):
            raise IdentityFileError(f"{path.name} is a training state of an older version of this pack, which "
                                    "trained differently; it cannot be resumed. Turn resume off to start over.")
        raise IdentityFileError(f"{path.name} is not an ID-embedding training state (format {found!r}).")
    opt_meta = json.loads(metadata["optimizer"])
    optim_state = {}
    for idx, keys in opt_meta["state_keys"].items():
        optim_state[int(idx)] = {k: tensors[f"optim.{idx}.{k}"] for k in keys}
    params = {k[6:]: v for k, v in tensors.items() if k.startswith("param.")}
    return TrainState(step=int(metadata["step"]), params=params,
                      optimizer={"state": optim_state, "param_groups": opt_meta["param_groups"]},
                      rng=tensors["rng"], config=json.loads(metadata["config"]),
                      history=json.loads(metadata.get("history", "[]")),
                      scaler=json.loads(metadata.get("scaler", "{}")))
