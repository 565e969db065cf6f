"""Files the pack keeps for the user get a new file's usual permissions (0666 minus the umask), as a file
ComfyUI writes with open() does, whatever the writer (safetensors' save_file makes private 0600 files)."""
from __future__ import annotations

import torch

from faceclip_core.identity import IDEmbedding, save_embedding


def test_an_embedding_has_the_mode_of_a_file_written_with_open(tmp_path):
    plain = tmp_path / "like_comfyui.png"
    with open(plain, "wb") as f:  # noqa: PTH123 - as ComfyUI's SaveImage (PIL) opens its outputs
        f.write(b"x")
    tokens = {"clip_l": torch.zeros(1, 1, 1, 768), "clip_g": torch.zeros(1, 1, 1, 1280)}
    for overwrite in (False, True):  # a new file, and one replacing an earlier
        saved = save_embedding(tmp_path / "person.safetensors", IDEmbedding("ID-EA", tokens), overwrite=overwrite)
        assert saved.stat().st_mode & 0o777 == plain.stat().st_mode & 0o777
