"""python -m faceclip_core.convert: kind detection, dtype, atomic write, --force, verification by re-loading; the
FaceT5-FLUX files (encoder, diffusers FLUX transformer, which core ComfyUI then loads as FLUX-dev)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

import faceclip_core
from faceclip_core import safetensors_io
from faceclip_core.convert import (
    ENCODER,
    FACET5_ENCODER,
    FLUX_DIT,
    UNET,
    ConvertError,
    convert,
    detect_kind,
    flux_dit,
    main,
)
from tests.conftest import comfyui_dir
from tests.core import _facet5_fixture as facet5
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


# ---- FaceT5-FLUX ------------------------------------------------------------------------------------------------
def _flux_dit_like(**changes) -> dict[str, torch.Tensor]:
    """A diffusers FLUX transformer state dict of a tiny architecture (zeros: only names and shapes matter here)."""
    cfg = flux_dit.FluxDiTConfig(**{**dict(hidden=128, depth=2, depth_single=1, in_channels=64, out_channels=64,
                                           context_dim=64, pooled_dim=128, mlp_hidden=512, head_dim=128,
                                           guidance=True), **changes})
    return {k: torch.zeros(shape, dtype=torch.bfloat16) for k, shape in flux_dit.expected_layout(cfg).items()}


def test_facet5_encoder_keeps_its_keys_and_loads_with_parity(tmp_path):
    src, dst = tmp_path / "face_t5_encoder.pt", tmp_path / "facet5_encoder.safetensors"
    torch.save(facet5.fixture_state_dict(), src)  # the release: the exact keys, bf16, no prefix
    res = convert(src, dst)
    assert res.kind == FACET5_ENCODER
    written, ref = load_file(str(dst)), facet5.fixture_state_dict()
    assert set(written) == set(ref)  # what the FaceT5 loader's key/shape check expects
    assert all(torch.equal(written[k], ref[k]) and written[k].dtype == ref[k].dtype for k in ref)
    with safe_open(str(dst), "pt") as fh:
        assert fh.metadata()["faceclip_kind"] == FACET5_ENCODER
    embeds, pooled = faceclip_core.load_facet5_encoder(dst).encode_tokens(facet5.case_images("a"),
                                                                          *facet5.case_tokens("a"))
    assert max_abs(embeds, facet5.cases()["a.prompt_embeds"]) <= 1e-4
    assert max_abs(pooled, facet5.cases()["a.pooled"]) <= 1e-4


def test_an_incomplete_facet5_encoder_is_refused_before_writing(tmp_path):
    sd = facet5.fixture_state_dict()
    del sd["encoder_2.fuser.encoder.text_layers.1.linear2.bias"]
    src = tmp_path / "face_t5_encoder.pt"
    torch.save(sd, src)
    with pytest.raises(ConvertError, match="text_layers.1.linear2.bias"):
        convert(src, tmp_path / "out.safetensors")
    assert not (tmp_path / "out.safetensors").exists()


def test_flux_dit_kind_and_refusals(tmp_path):
    assert detect_kind(_flux_dit_like()) == FLUX_DIT
    missing = _flux_dit_like()
    del missing["single_transformer_blocks.0.proj_out.weight"]
    reshaped = _flux_dit_like()
    reshaped["transformer_blocks.1.ff.net.2.weight"] = torch.zeros(128, 100, dtype=torch.bfloat16)
    for broken, key in ((missing, "single_transformer_blocks.0.proj_out.weight"),
                        (reshaped, "transformer_blocks.1.ff.net.2.weight (128, 100) (expected (128, 512))")):
        src = tmp_path / "dit.pt"
        torch.save(broken, src)
        with pytest.raises(ConvertError) as err:
            convert(src, tmp_path / "dit.safetensors", force=True)
        assert key in str(err.value)
        assert not (tmp_path / "dit.safetensors").exists()
    with pytest.raises(ConvertError, match="already in ComfyUI/BFL layout"):
        detect_kind({"double_blocks.0.img_attn.qkv.weight": torch.zeros(3, 1)})


def test_the_full_size_flux_dev_layout_is_the_fact_sheets():
    cfg = flux_dit.FluxDiTConfig(hidden=3072, depth=19, depth_single=38, in_channels=64, out_channels=64,
                                 context_dim=4096, pooled_dim=768, mlp_hidden=12288, head_dim=128, guidance=True)
    layout = flux_dit.expected_layout(cfg)
    assert len(layout) == 1160 and sum(torch.Size(s).numel() for s in layout.values()) == 11_901_408_320


def test_flux_dit_keeps_diffusers_names_and_core_comfyui_loads_it_as_flux_dev(tmp_path):
    """The tiny DiT in dit.pt's form (diffusers names, bf16 pickle) -> convert -> ComfyUI's load_diffusion_model
    (what core UNETLoader calls): detected as FLUX with the guidance embedding, and it runs."""
    script = textwrap.dedent(f"""
        import json, sys
        import torch
        from tests.harness.tiny_models import import_comfy, flux_dit_state_dict
        import_comfy({str(comfyui_dir())!r})
        from faceclip_core.convert import flux_dit
        from faceclip_core.convert import convert
        from safetensors.torch import load_file
        import comfy.sd

        sd = {{k: v.to(torch.bfloat16) for k, v in flux_dit_state_dict().items()}}
        torch.save(sd, {str(tmp_path / "dit.pt")!r})
        dst = {str(tmp_path / "facet5_flux_dit.safetensors")!r}
        kind = convert({str(tmp_path / "dit.pt")!r}, dst).kind
        written = load_file(dst)
        same = set(written) == set(sd) and all(torch.equal(written[k], sd[k]) for k in sd)
        core_layout = flux_dit.expected_layout(flux_dit.infer_config(sd))
        layout_ok = core_layout == {{k: tuple(v.shape) for k, v in sd.items()}}
        model = comfy.sd.load_diffusion_model(dst)
        unet = model.model.model_config.unet_config
        x = torch.randn(1, 16, 8, 8)
        out = model.model.apply_model(x, torch.tensor([0.5]), c_crossattn=torch.randn(1, 512, 64),
                                      y=torch.randn(1, 128), guidance=torch.tensor([1.0]))
        print(json.dumps({{"kind": kind, "same": same, "layout_ok": layout_ok,
                          "model": type(model.model).__name__, "config": type(model.model.model_config).__name__,
                          "guidance_embed": unet["guidance_embed"], "context_in_dim": unet["context_in_dim"],
                          "vec_in_dim": unet["vec_in_dim"], "finite": bool(out.isfinite().all())}}))
    """)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=REPO,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report == {"kind": FLUX_DIT, "same": True, "layout_ok": True, "model": "Flux", "config": "Flux",
                      "guidance_embed": True, "context_in_dim": 64, "vec_in_dim": 128, "finite": True}
