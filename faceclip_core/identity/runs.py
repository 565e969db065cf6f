"""The rules of a named training run: what a name may be, how many photos, which files it writes, and when an
existing embedding may be replaced or a saved run resumed."""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from .errors import IdentityError, IdentityFileError

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
MAX_PHOTOS = 5


def check_name(name: str) -> str:
    """The embedding's name as ``embedding:<name>`` will spell it (a trailing .safetensors is dropped)."""
    name = name.strip()
    if name.endswith(".safetensors"):
        name = name[: -len(".safetensors")]
    if not _NAME.match(name):
        raise IdentityError(f"name {name!r} can't be used: use letters, digits, '_', '-' or '.', no spaces or "
                            "slashes (it becomes embedding:<name> in prompts)")
    return name


def check_photo_count(count: int) -> None:
    if not 1 <= count <= MAX_PHOTOS:
        raise IdentityError(f"give 1 to {MAX_PHOTOS} photos of the person, got {count}")


@dataclass(frozen=True)
class RunFiles:
    name: str
    embedding: Path  # models/embeddings/<name>.safetensors
    state: Path  # the resumable training state


def run_files(name: str, embeddings_dir: Path, state_dir: Path, resume: bool, overwrite: bool) -> RunFiles:
    """The run's two files, after checking that what is asked is possible: resume needs a saved run; starting
    over never replaces an existing embedding unless ``overwrite``."""
    name = check_name(name)
    files = RunFiles(name, embeddings_dir / f"{name}.safetensors", state_dir / f"{name}.safetensors")
    if resume:
        if not files.state.is_file():
            raise IdentityFileError(f"there is no saved run named {name!r} to resume (looked for {files.state}). "
                                    "Turn resume off to start a new run.")
    elif files.embedding.exists() and not overwrite:
        raise IdentityFileError(f"an embedding named {name!r} exists already ({files.embedding}). Turn on "
                                "overwrite to replace it, resume to continue its run, or choose another name.")
    return files
