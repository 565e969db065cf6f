"""Model folders of this pack, registered by merging with what ComfyUI already knows.

ComfyUI applies extra_model_paths.yaml before custom nodes load, so a folder name may already carry the user's
paths: keep them and add the default models/<name> folder, never replace the entry.
"""
from __future__ import annotations

import os
from pathlib import Path

import folder_paths

FACECLIP = "faceclip"  # FaceCLIP encoder weights (.safetensors, or the official .pt read with weights_only)
INSIGHTFACE = "insightface"  # roots holding insightface model-pack folders (antelopev2/, buffalo_l/, ...)
IDENTITY_STATE = "faceclip_identity_state"  # resumable training state of ID embeddings (optimizer, step, RNG)

_FOLDERS = {
    FACECLIP: set(folder_paths.supported_pt_extensions),
    INSIGHTFACE: {".onnx"},
    IDENTITY_STATE: {".safetensors"},
}


def register_model_folders() -> None:
    for name, extensions in _FOLDERS.items():
        default = os.path.join(folder_paths.models_dir, name)
        paths, known_ext = folder_paths.folder_names_and_paths.get(name, ([], set()))
        paths = [*paths, *([default] if default not in paths else [])]
        folder_paths.folder_names_and_paths[name] = (paths, set(known_ext) | extensions)


def embeddings_dir() -> Path:
    """Where ID embeddings are written: the first embeddings folder (what ``embedding:name`` reads)."""
    return Path(folder_paths.get_folder_paths("embeddings")[0])


def identity_state_dir() -> Path:
    return Path(folder_paths.get_folder_paths(IDENTITY_STATE)[0])
