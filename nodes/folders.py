"""Model folders of this pack, registered by merging with what ComfyUI already knows.

ComfyUI applies extra_model_paths.yaml before custom nodes load, so a folder name may already carry the user's
paths: keep them and add the default models/<name> folder, never replace the entry.
"""
from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import folder_paths

from ..faceclip_core.atomic import atomic_path
from ..faceclip_core.file_kinds import order_for_loader

logger = logging.getLogger(__name__)

# Photos the shipped workflows' Load Image nodes name (see workflows/input/README.md).
EXAMPLE_PHOTOS = Path(__file__).resolve().parents[1] / "workflows" / "input"

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


def encoder_files(kind: str) -> list[str]:
    """The files in models/faceclip for a loader of ``kind`` (faceclip_core.file_kinds): its own kind first, so a
    freshly added node defaults to a file it can load (the SDXL and FaceT5 encoders share the folder)."""
    names = folder_paths.get_filename_list(FACECLIP)
    return order_for_loader(kind, [(n, folder_paths.get_full_path(FACECLIP, n)) for n in names])


def embeddings_dir() -> Path:
    """Where ID embeddings are written: the first embeddings folder (what ``embedding:name`` reads)."""
    return Path(folder_paths.get_folder_paths("embeddings")[0])


def identity_state_dir() -> Path:
    return Path(folder_paths.get_folder_paths(IDENTITY_STATE)[0])


def provide_example_photos() -> list[Path]:
    """Copy the example photos into ComfyUI's input folder where no file of that name exists, so the shipped
    workflows open without a "missing input" error. Returns the files written; never replaces a file, and a
    read-only or full input folder only costs a log line."""
    written = []
    target = Path(folder_paths.get_input_directory())
    for photo in sorted(EXAMPLE_PHOTOS.glob("*.jpg")):
        dest = target / photo.name
        if dest.exists():
            continue
        try:
            with atomic_path(dest, overwrite=False) as tmp:
                shutil.copyfile(photo, tmp)
            written.append(dest)
        except OSError as exc:  # FileExistsError included: a file that appeared meanwhile is kept
            logger.warning("FaceCLIP: could not copy the example photo %s to %s (%s); the example workflows "
                           "will ask for it", photo.name, target, exc)
    if written:
        logger.info("FaceCLIP: example photos for the shipped workflows copied to %s: %s", target,
                    ", ".join(p.name for p in written))
    return written
