"""The README's main-job command: it checks every model before any work and says honestly what it cannot do."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from tests.conftest import REPO, comfyui_dir
from tests.harness.fake_insightface import MarkerFace, make_pack, scene

MODEL_FILES = {
    "faceclip": "faceclip_sdxl_encoder.safetensors",
    "diffusion_models": "faceclip_sdxl_unet.safetensors",
    "vae": "sdxl_vae.safetensors",
}


def run_main_job(*args: str, timeout: float = 120, cwd: Path = REPO, home: Path | None = None
                 ) -> subprocess.CompletedProcess:
    """The command as the README runs it: from the pack's checkout (``cwd`` elsewhere: with the pack on
    PYTHONPATH, as an installed copy would be)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    if home is not None:
        env["HOME"] = str(home)
    return subprocess.run([sys.executable, "-m", "faceclip_headless", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, env=env)


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
    # a recognizer alone detects nothing: no pack for the job
    (tmp_path / "my_models" / "insightface" / "buffalo_l").mkdir()
    (tmp_path / "my_models" / "insightface" / "buffalo_l" / "w600k_r50.onnx").write_bytes(b"placeholder")
    out = tmp_path / "portrait.png"
    r = run_main_job("--face", str(photo), "--prompt", "A woman", "--out", str(out),
                     "--comfyui", str(comfyui_dir()), "--extra-model-paths-config", str(yaml))
    assert r.returncode == 3, r.stderr
    assert "3 model file(s) missing" in r.stderr
    for name in ("faceclip_sdxl_encoder.safetensors", "faceclip_sdxl_unet.safetensors", "antelopev2 or buffalo_l"):
        assert f"- {name}" in r.stderr
    assert "antelopev2/scrfd_10g_bnkps.onnx" in r.stderr and "buffalo_l/det_10g.onnx" in r.stderr
    assert "- sdxl_vae.safetensors" not in r.stderr  # found through the yaml's vae entry
    assert "huggingface.co/ByteDance/FaceCLIP" in r.stderr and "CC-BY-NC-4.0" in r.stderr
    assert f"put it in: {comfyui_dir() / 'models' / 'faceclip' / 'faceclip_sdxl_encoder.safetensors'}" in r.stderr
    assert str(tmp_path / "my_models" / "faceclip") in r.stderr  # the yaml folder was searched too
    assert not out.exists()


def face_photo(tmp_path: Path) -> Path:
    path = tmp_path / "me.png"
    Image.fromarray(scene(256, 256, [MarkerFace((60, 50, 180, 190), 0.9)])).save(path)
    return path


def assert_png(path: Path, size: tuple[int, int]) -> None:
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert Image.open(path).size == size


def test_portrait_through_a_running_server(comfy_server, tmp_path):
    out = tmp_path / "portrait.png"
    r = run_main_job("--face", str(face_photo(tmp_path)), "--prompt", "A woman on a desert plateau",
                     "--out", str(out), "--server", comfy_server.url, "--steps", "2", "--width", "64",
                     "--height", "64", "--seed", "7")
    assert r.returncode == 0, r.stderr
    assert_png(out, (64, 64))
    assert f"Wrote {out}" in r.stderr
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o666 & ~umask  # a normal file for the user, not a private temp file


def test_without_out_the_portrait_goes_to_the_current_folder_never_into_the_pack(comfy_server, tmp_path):
    settings = ["--face", str(face_photo(tmp_path)), "--prompt", "A woman", "--server", comfy_server.url,
                "--steps", "2", "--width", "64", "--height", "64"]
    in_pack = REPO / "portrait.png"
    there_before = in_pack.exists()
    home, elsewhere = tmp_path / "home", tmp_path / "my_pictures"
    home.mkdir()
    elsewhere.mkdir()
    try:
        r = run_main_job(*settings, home=home)  # from the pack's checkout, as the README's command runs
        assert r.returncode == 0, r.stderr
        assert in_pack.exists() == there_before  # nothing written into the checkout
        assert_png(home / "portrait.png", (64, 64))
        assert f"No --out given: the portrait goes to {home / 'portrait.png'}" in r.stderr
        assert f"Wrote {home / 'portrait.png'}" in r.stderr
    finally:
        if not there_before:
            in_pack.unlink(missing_ok=True)
    r = run_main_job(*settings, "--seed", "8", cwd=elsewhere, home=home)
    assert r.returncode == 0, r.stderr
    assert_png(elsewhere / "portrait.png", (64, 64))
    assert f"Wrote {elsewhere / 'portrait.png'}" in r.stderr


def test_flux_portrait_through_a_running_server(comfy_server, tmp_path):
    """--variant flux runs workflow 7 (FaceT5 Encode, FLUX DiT, ModelSamplingFlux at the output size)."""
    out = tmp_path / "flux.png"
    r = run_main_job("--variant", "flux", "--face", str(face_photo(tmp_path)), "--prompt", "A woman on a desert "
                     "plateau", "--out", str(out), "--server", comfy_server.url, "--steps", "2", "--width", "64",
                     "--height", "64", "--seed", "7", timeout=300)
    assert r.returncode == 0, r.stderr
    assert_png(out, (64, 64))


def test_flux_models_missing_are_named(photo, tmp_path):
    yaml = model_root(tmp_path, present={"vae", "insightface"})
    r = run_main_job("--variant", "flux", "--face", str(photo), "--prompt", "A woman", "--out",
                     str(tmp_path / "p.png"), "--comfyui", str(comfyui_dir()), "--extra-model-paths-config",
                     str(yaml))
    assert r.returncode == 3, r.stderr
    for name in ("facet5_encoder.safetensors", "facet5_flux_dit.safetensors", "ae.safetensors"):
        assert f"- {name}" in r.stderr, r.stderr
    assert "model/face_t5_encoder.pt" in r.stderr and "--variant flux" in r.stderr
    assert "faceclip_sdxl_encoder" not in r.stderr  # the SDXL files are not asked for


def test_portrait_starting_its_own_comfyui(comfy_base, tmp_path):
    """The README's command as a user runs it: ComfyUI started for the job, models found via their yaml. This user
    has buffalo_l and no antelopev2: the models check accepts it, and Load Face Detector's "auto" takes it."""
    models = comfy_base / "models"
    make_pack(tmp_path / "insightface" / "buffalo_l", "buffalo_l")  # apart from the shared base's antelopev2
    yaml = tmp_path / "my_paths.yaml"
    yaml.write_text(f"mine:\n  base_path: {models}\n  faceclip: faceclip\n  diffusion_models: diffusion_models\n"
                    f"  vae: vae\nfaces:\n  base_path: {tmp_path}\n  insightface: insightface\n")
    out = tmp_path / "portrait.png"
    r = run_main_job("--face", str(face_photo(tmp_path)), "--prompt", "A man in a grey coat", "--out", str(out),
                     "--comfyui", str(comfyui_dir()), "--extra-model-paths-config", str(yaml), "--steps", "2",
                     "--width", "64", "--height", "96", "--cpu", timeout=300)
    assert r.returncode == 0, r.stderr
    assert_png(out, (64, 96))


def landscape(tmp_path: Path) -> Path:
    photo = tmp_path / "landscape.png"
    Image.fromarray(scene(128, 128, [])).save(photo)
    return photo


def test_a_photo_without_a_face_is_reported(comfy_server, tmp_path):
    photo = landscape(tmp_path)
    out = tmp_path / "portrait.png"
    r = run_main_job("--face", str(photo), "--prompt", "A woman", "--out", str(out), "--server", comfy_server.url,
                     "--steps", "2", "--width", "64", "--height", "64")
    assert r.returncode == 1
    assert f"No face was found in {photo} (detector sizes tried: " in r.stderr
    # advice names only what this command offers: its own options and a better photo, not node inputs
    assert "--on-no-face text_only" in r.stderr and "--face-threshold (now 0.5)" in r.stderr
    assert "crop it around the face" in r.stderr
    assert "on_no_face" not in r.stderr and "Load Face Detector" not in r.stderr and "skip" not in r.stderr
    assert not out.exists()


def test_no_face_text_only_makes_the_image_from_the_prompt_and_says_so(comfy_server, tmp_path):
    photo = landscape(tmp_path)
    out = tmp_path / "portrait.png"
    r = run_main_job("--face", str(photo), "--prompt", "A woman", "--out", str(out), "--server", comfy_server.url,
                     "--steps", "2", "--width", "64", "--height", "64", "--on-no-face", "text_only")
    assert r.returncode == 0, r.stderr
    assert_png(out, (64, 64))
    assert f"No face was found in {photo}, so the image was made from the prompt alone" in r.stderr


def test_the_face_threshold_reaches_the_detector(comfy_server, tmp_path):
    photo = tmp_path / "faint.png"
    Image.fromarray(scene(256, 256, [MarkerFace((60, 50, 180, 190), 0.6)])).save(photo)  # scores 0.6
    r = run_main_job("--face", str(photo), "--prompt", "A woman", "--out", str(tmp_path / "p.png"),
                     "--server", comfy_server.url, "--steps", "2", "--width", "64", "--height", "64",
                     "--face-threshold", "0.7")
    assert r.returncode == 1, r.stderr
    assert "threshold 0.7)" in r.stderr and "--face-threshold (now 0.7)" in r.stderr


def test_the_test_environment_is_never_used_as_the_users_comfyui(photo, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "COMFYUI_PATH"}
    r = subprocess.run([sys.executable, "-m", "faceclip_headless", "--face", str(photo), "--prompt", "A woman",
                        "--out", str(tmp_path / "p.png")], cwd=REPO, capture_output=True, text=True, timeout=60,
                       env=env)
    assert r.returncode == 2, r.stderr
    assert "No ComfyUI found" in r.stderr and "--comfyui" in r.stderr


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


def unreachable_url() -> str:
    from faceclip_headless.server import free_port

    return f"http://127.0.0.1:{free_port()}"  # nothing listens there


def test_an_unreachable_server_is_named_as_such(photo, tmp_path):
    url = unreachable_url()
    r = run_main_job("--face", str(photo), "--prompt", "A woman", "--out", str(tmp_path / "p.png"), "--server", url)
    assert r.returncode == 1
    assert f"Cannot reach ComfyUI at {url}: connection refused" in r.stderr and "missing" not in r.stderr
    assert "Error" not in r.stderr and "Errno" not in r.stderr, r.stderr  # in words, not an exception's repr


def test_a_comfyui_without_the_pack_is_named_as_such(photo, tmp_path):
    from faceclip_headless.server import ComfyServer, ServerConfig

    config = ServerConfig(comfyui_dir=comfyui_dir(), base_directory=tmp_path / "base", env={"HOME": str(tmp_path)},
                          extra_args=["--disable-all-custom-nodes"], log_path=tmp_path / "comfyui.log")
    with ComfyServer(config) as server:
        r = run_main_job("--face", str(photo), "--prompt", "A woman", "--out", str(tmp_path / "p.png"),
                         "--server", server.url)
    assert r.returncode == 1
    assert f"This ComfyUI ({server.url}) has no FaceCLIP nodes" in r.stderr and "missing" not in r.stderr


@pytest.mark.parametrize("args,message", [
    (["--steps", "0"], "--steps must be between 1 and 10000"),
    (["--width", "100"], "--width must be a multiple of 8"),
    (["--height", "20000"], "--height must be a multiple of 8"),
    (["--seed", "-1"], "--seed must be between 0 and 2**64 - 1"),
    (["--variant", "flux", "--width", "1000"], "--width must be a multiple of 16"),
    (["--on-no-face", "skip"], "with the one --face photo nothing would be left"),
    (["--on-no-face", "ignore"], "--on-no-face must be one of raise, text_only, got 'ignore'"),
    (["--face-threshold", "0"], "--face-threshold must be between 0.05 and 0.95"),
    (["--server", "localhost:8461"], "--server localhost:8461 needs its scheme: add http:// (--server "
                                     "http://localhost:8461)"),
])
def test_bad_settings_are_refused_before_anything_is_contacted(photo, tmp_path, args, message):
    r = run_main_job("--face", str(photo), "--prompt", "A woman", "--out", str(tmp_path / "p.png"),
                     "--server", unreachable_url(), *args)
    assert r.returncode == 2, r.stderr
    assert message in r.stderr and "Cannot reach" not in r.stderr


def test_a_face_file_that_is_not_an_image_is_refused(tmp_path):
    notes = tmp_path / "face.jpg"
    notes.write_text("not a photo")
    r = run_main_job("--face", str(notes), "--prompt", "A woman", "--server", unreachable_url())
    assert r.returncode == 2
    assert "is not an image" in r.stderr and "Cannot reach" not in r.stderr


def test_the_log_named_in_a_start_up_error_is_still_there(photo, tmp_path):
    r = run_main_job("--face", str(photo), "--prompt", "A woman", "--out", str(tmp_path / "p.png"),
                     "--comfyui", str(comfyui_dir()), "--extra-model-paths-config",
                     str(model_root(tmp_path, {"faceclip", "diffusion_models", "vae", "insightface"})),
                     "--python", "/bin/false")  # a Python that cannot start ComfyUI
    assert r.returncode == 1, r.stderr
    (line,) = [ln for ln in r.stderr.splitlines() if ln.startswith("Its whole log: ")]
    log = Path(line.removeprefix("Its whole log: "))
    assert log.is_file()
    log.unlink()
