"""Files that appear whole or not at all, and never replace a file unless asked: the one way the pack writes
what a user keeps (ID embeddings, converted weights, downloads, generated images)."""
from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def publish(tmp: str | os.PathLike, path: str | os.PathLike, overwrite: bool) -> None:
    """Move the finished file ``tmp`` to ``path`` (same folder, so the move is atomic). Without ``overwrite`` a
    file that appeared at ``path`` meanwhile is kept and FileExistsError is raised; ``tmp`` is then left for the
    caller to remove."""
    if overwrite:
        os.replace(tmp, path)
    else:
        os.link(tmp, path)  # fails when the path exists, unlike a rename
        os.unlink(tmp)


@contextmanager
def atomic_path(path: str | os.PathLike, overwrite: bool) -> Iterator[Path]:
    """A temporary path beside ``path`` to write to; when the block ends without an error the file is published
    at ``path`` (see publish), otherwise it is removed. Raises FileExistsError before anything is written when
    ``path`` exists and ``overwrite`` is False."""
    path = Path(path)
    if not overwrite and path.exists():
        raise FileExistsError(f"{path} exists already")
    path.parent.mkdir(parents=True, exist_ok=True)
    # Created 0666 minus the umask (not mkstemp's 0600): the published file gets a new file's usual permissions,
    # as ComfyUI's own outputs have them.
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    mode = tmp.stat().st_mode & 0o777
    try:
        yield tmp
        # a writer may replace the file with a private one of its own (safetensors' save_file does: 0600)
        if tmp.stat().st_mode & 0o777 != mode:
            os.chmod(tmp, mode)
        publish(tmp, path, overwrite)
    finally:
        tmp.unlink(missing_ok=True)


def write_bytes(path: str | os.PathLike, data: bytes, overwrite: bool) -> Path:
    """Write ``data`` to ``path`` atomically (see atomic_path)."""
    with atomic_path(path, overwrite) as tmp:
        tmp.write_bytes(data)
    return Path(path)
