"""python -m faceclip_core.convert: kind detection, dtype, atomic write, --force, verification by re-loading."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

import faceclip_core
from faceclip_core import safetensors_io
from faceclip_core.convert import ENCODER, UNET, ConvertError, convert, detect_kind, main
from tests.core._encoder_fixture import case_inputs, cases, fixture_state_dict, max_abs

REPO = Path(__file__).resolve().parents[2]


def _unet_like() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    shapes = {
        "conv_in.weight": (8, 4, 3, 3), "conv_in.bias": (8,),
        "time_embedding.linear_1.weight": (16, 8), "add_embedding.linear_1.weight": (16, 12),
        "down_blocks.0.resnets.0.conv1.weight": (8, 8, 3, 3),
        "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight": (8, 20),
        "conv_out.weight": (4, 8, 3, 3),
    }
    return {k: torch.randn(s, generator=g).to(torch.bfloat16) for k, s in shapes.items()}


def _official_pt(tmp_path: Path) -> Path:
    path = tmp_path / "face_clip_encoder.pt"
    torch.save({f"model.{k}": v for k, v in fixture_state_dict().items()}, path)
    return path


def test_encoder_round_trip_keeps_bf16_and_loads(tmp_path):
    src = _official_pt(tmp_path)
    dst = tmp_path / "faceclip_encoder.safetensors"
    res = convert(src, dst)
    assert res.kind == ENCODER and dst.is_file()
    written = load_file(str(dst))
    ref = fixture_state_dict()
    assert set(written) == set(ref)  # "model." prefix stripped
    assert all(torch.equal(written[k], ref[k]) and written[k].dtype == ref[k].dtype for k in ref)
    with safe_open(str(dst), "pt") as fh:
        assert fh.metadata()["faceclip_kind"] == ENCODER
    enc = faceclip_core.load_encoder(dst)
    faces, prompts, mask = case_inputs("d")
    emb, pooled = enc.encode(faces, prompts, mask)
    assert max_abs(emb, cases()["d.embeddings"]) <= 1e-4 and max_abs(pooled, cases()["d.pooled"]) <= 1e-4
    assert not list(tmp_path.glob(".*.tmp"))  # no temp file left behind


@pytest.mark.parametrize("name,dtype", [("fp32", torch.float32), ("fp16", torch.float16), ("bf16", torch.bfloat16)])
def test_encoder_dtype_option(tmp_path, name, dtype):
    dst = tmp_path / f"enc_{name}.safetensors"
    convert(_official_pt(tmp_path), dst, dtype=name)
    written = load_file(str(dst))
    assert written["face_clip_l.proj1.weight"].dtype == dtype
    assert written["face_clip_l.face_encoder.feature.1.num_batches_tracked"].dtype == torch.int64


def test_unet_kind_detection_and_round_trip(tmp_path):
    src = tmp_path / "unet.pt"
    sd = _unet_like()
    torch.save(sd, src)
    dst = tmp_path / "faceclip_unet.safetensors"
    res = convert(src, dst, dtype="fp16")
    assert res.kind == UNET
    written = load_file(str(dst))
    assert set(written) == set(sd)  # diffusers names kept: ComfyUI converts them itself
    assert all(written[k].dtype == torch.float16 and torch.equal(written[k], sd[k].half()) for k in sd)


def test_refuses_to_overwrite_without_force(tmp_path):
    src = tmp_path / "unet.pt"
    torch.save(_unet_like(), src)
    dst = tmp_path / "out.safetensors"
    dst.write_bytes(b"precious")
    with pytest.raises(ConvertError, match="--force"):
        convert(src, dst)
    assert dst.read_bytes() == b"precious"
    convert(src, dst, force=True)
    assert set(load_file(str(dst))) == set(_unet_like())


def test_failed_write_leaves_destination_untouched(tmp_path, monkeypatch):
    """A failure after writing (here: verification) removes the temp file and keeps the old destination."""
    src = tmp_path / "unet.pt"
    torch.save(_unet_like(), src)
    dst = tmp_path / "out.safetensors"
    dst.write_bytes(b"old")

    write = safetensors_io.write

    def corrupt_write(path, sd, dtype, metadata):
        n = write(path, sd, dtype, metadata)
        with open(path, "r+b") as fh:  # flip the last byte of tensor data
            fh.seek(-1, os.SEEK_END)
            b = fh.read(1)
            fh.seek(-1, os.SEEK_END)
            fh.write(bytes([b[0] ^ 0xFF]))
        return n

    monkeypatch.setattr("faceclip_core.safetensors_io.write", corrupt_write)
    with pytest.raises(ConvertError, match="verification failed"):
        convert(src, dst, force=True)
    assert dst.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.safetensors", "unet.pt"]


def test_refusals(tmp_path):
    other = tmp_path / "other.pt"
    torch.save({"encoder.layer.0.weight": torch.zeros(2)}, other)
    with pytest.raises(ConvertError, match="not a FaceCLIP encoder nor a diffusers SDXL UNet"):
        convert(other, tmp_path / "x.safetensors")
    src = _official_pt(tmp_path)
    with pytest.raises(ConvertError, match=r"\.safetensors"):
        convert(src, tmp_path / "x.ckpt")
    with pytest.raises(ConvertError, match="does not exist"):
        convert(src, tmp_path / "no_dir" / "x.safetensors")
    with pytest.raises(ConvertError, match="dtype"):
        convert(src, tmp_path / "x.safetensors", dtype="int8")
    # an incomplete encoder is refused before anything is written
    sd = fixture_state_dict()
    del sd["face_clip_g.proj1.bias"]
    bad = tmp_path / "bad.pt"
    torch.save(sd, bad)
    with pytest.raises(ConvertError, match="face_clip_g.proj1.bias"):
        convert(bad, tmp_path / "bad.safetensors")
    assert not (tmp_path / "bad.safetensors").exists()
    # a non-SDXL diffusers UNet
    sd15 = {k: v for k, v in _unet_like().items() if not k.startswith("add_embedding")}
    with pytest.raises(ConvertError, match="not an SDXL"):
        detect_kind(sd15)
    # corrupt source
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"PK\x03\x04garbage")
    with pytest.raises(faceclip_core.FaceCLIPWeightsError):
        convert(junk, tmp_path / "y.safetensors")


def test_cli(tmp_path):
    src = _official_pt(tmp_path)
    dst = tmp_path / "enc.safetensors"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    run = [sys.executable, "-m", "faceclip_core.convert", str(src), str(dst), "--dtype", "fp16"]
    ok = subprocess.run(run, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert ok.returncode == 0, ok.stderr
    assert load_file(str(dst))["face_clip_g.proj1.weight"].dtype == torch.float16
    again = subprocess.run(run, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert again.returncode == 2 and "--force" in again.stderr
    assert main([str(src), str(dst), "--force"]) == 0
