"""The README's main-job command: it checks every model before any work and says honestly what it cannot do."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, comfyui_dir

MODEL_FILES = {
    "faceclip": "faceclip_sdxl_encoder.safetensors",
    "diffusion_models": "faceclip_sdxl_unet.safetensors",
    "vae": "sdxl_vae.safetensors",
}


def run_main_job(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "faceclip_headless", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=120)


@pytest.fixture
def photo(tmp_path) -> Path:
    from PIL import Image
    from skimage import data

    path = tmp_path / "face.jpg"
    Image.fromarray(data.astronaut()).save(path)
    return path


def model_root(tmp_path: Path, present: set[str]) -> Path:
    """Model folders outside ComfyUI, registered the way users do it: an extra_model_paths.yaml."""
    root = tmp_path / "my_models"
    for folder, name in MODEL_FILES.items():
        (root / folder).mkdir(parents=True)
        if folder in present:
            (root / folder / name).write_bytes(b"placeholder")
    (root / "insightface").mkdir()
    if "insightface" in present:
        (root / "insightface" / "antelopev2").mkdir()
        (root / "insightface" / "antelopev2" / "scrfd_10g_bnkps.onnx").write_bytes(b"placeholder")
    yaml = tmp_path / "extra_model_paths.yaml"
    yaml.write_text(f"mine:\n  base_path: {root}\n  faceclip: faceclip\n  unet: diffusion_models\n"
                    "  vae: vae\n  insightface: insightface\n")
    return yaml


def test_missing_models_are_named_with_source_and_destination(photo, tmp_path):
    yaml = model_root(tmp_path, present={"vae"})
    out = tmp_path / "portrait.png"
    r = run_main_job("--face", str(photo), "--prompt", "A woman", "--out", str(out),
                     "--comfyui", str(comfyui_dir()), "--extra-model-paths-config", str(yaml))
    assert r.returncode == 3, r.stderr
    assert "3 model file(s) missing" in r.stderr
    for name in ("faceclip_sdxl_encoder.safetensors", "faceclip_sdxl_unet.safetensors", "antelopev2"):
        assert f"- {name}" in r.stderr
    assert "- sdxl_vae.safetensors" not in r.stderr  # found through the yaml's vae entry
    assert "huggingface.co/ByteDance/FaceCLIP" in r.stderr and "CC-BY-NC-4.0" in r.stderr
    assert f"put it in: {comfyui_dir() / 'models' / 'faceclip' / 'faceclip_sdxl_encoder.safetensors'}" in r.stderr
    assert str(tmp_path / "my_models" / "faceclip") in r.stderr  # the yaml folder was searched too
    assert not out.exists()


def test_with_every_model_in_place_it_says_what_it_cannot_do_yet(photo, tmp_path):
    yaml = model_root(tmp_path, present={"faceclip", "diffusion_models", "vae", "insightface"})
    r = run_main_job("--face", str(photo), "--prompt", "A woman", "--out", str(tmp_path / "p.png"),
                     "--comfyui", str(comfyui_dir()), "--extra-model-paths-config", str(yaml))
    assert "missing" not in r.stderr
    assert r.returncode == 4, r.stderr
    assert "cannot make the portrait yet" in r.stderr


def test_refuses_to_overwrite_an_existing_output(photo, tmp_path):
    out = tmp_path / "portrait.png"
    out.write_bytes(b"the user's earlier portrait")
    r = run_main_job("--face", str(photo), "--prompt", "A woman", "--out", str(out),
                     "--comfyui", str(comfyui_dir()))
    assert r.returncode == 2
    assert "--force" in r.stderr
    assert out.read_bytes() == b"the user's earlier portrait"


def test_missing_photo_is_reported(tmp_path):
    r = run_main_job("--face", str(tmp_path / "nope.jpg"), "--prompt", "A woman", "--comfyui", str(comfyui_dir()))
    assert r.returncode == 2
    assert "nope.jpg does not exist" in r.stderr
