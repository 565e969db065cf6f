"""file_kinds: which model a weights file holds (header only), and the loaders' file order built on it."""
from __future__ import annotations

import os

import torch
from safetensors.torch import save_file

from faceclip_core.file_kinds import FACECLIP_SDXL, FACET5, file_kind, order_for_loader

SDXL_KEYS = ("face_clip_l.token_embedding.weight", "face_clip_g.token_embedding.weight")
FACET5_KEYS = ("encoder_1.text_model.embeddings.token_embedding.weight", "encoder_2.t5_encoder.embed_tokens.weight")
LORA_KEYS = ("lora_unet_input_blocks_4_1_proj_in.lora_down.weight",)


def _safetensors(path, keys):
    save_file({k: torch.zeros(1) for k in keys}, str(path))
    return path


def test_each_loader_lists_its_own_kind_first(tmp_path):
    files = {
        "a_lora.safetensors": _safetensors(tmp_path / "a_lora.safetensors", LORA_KEYS),
        "b_facet5.safetensors": _safetensors(tmp_path / "b_facet5.safetensors", FACET5_KEYS),
        "c_unknown.bin": tmp_path / "c_unknown.bin",
        "d_sdxl.safetensors": _safetensors(tmp_path / "d_sdxl.safetensors", SDXL_KEYS),
        "face_clip_encoder.pt": tmp_path / "face_clip_encoder.pt",
        "face_t5_encoder.pt": tmp_path / "face_t5_encoder.pt",
    }
    for name in ("c_unknown.bin", "face_clip_encoder.pt", "face_t5_encoder.pt"):
        files[name].write_bytes(b"not read")  # .pt files are recognised by their released names only
    pairs = list(files.items())
    assert order_for_loader(FACECLIP_SDXL, pairs) == [
        "d_sdxl.safetensors", "face_clip_encoder.pt", "c_unknown.bin",
        "a_lora.safetensors", "b_facet5.safetensors", "face_t5_encoder.pt"]
    assert order_for_loader(FACET5, pairs) == [
        "b_facet5.safetensors", "face_t5_encoder.pt", "c_unknown.bin",
        "a_lora.safetensors", "d_sdxl.safetensors", "face_clip_encoder.pt"]


def test_a_rewritten_file_is_looked_at_again_and_a_broken_one_is_unknown(tmp_path):
    path = _safetensors(tmp_path / "enc.safetensors", SDXL_KEYS)
    assert file_kind(path) == FACECLIP_SDXL
    stat = path.stat()
    _safetensors(path, FACET5_KEYS + ("pad",))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert file_kind(path) == FACET5
    path.write_bytes(b"\xff" * 16)
    assert file_kind(path) is None
    assert file_kind(tmp_path / "gone.safetensors") is None
