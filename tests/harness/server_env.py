"""A ComfyUI base directory with tiny random models and this pack mounted: what the end-to-end tests and the
end-to-end benchmark run against.

Nothing goes into the repo or HOME: the base directory, the mount folder and HOME are the caller's temporary
folders; the server listens on 127.0.0.1 only.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from faceclip_headless.model_files import MAIN_JOB_MODELS
from faceclip_headless.server import ServerConfig
from tests.harness import tiny_faceclip, tiny_facet5
from tests.harness.fake_insightface import make_pack
from tests.harness.tiny_models import UNET_NAME, VAE_NAME

HARNESS = Path(__file__).resolve().parent
REPO = HARNESS.parents[1]
PACK_DIR_NAME = "comfyui-faceclip"  # the folder name users get from a git clone / ComfyUI Manager
TESTING_PACK = HARNESS / "testing_pack" / "faceclip_testing"
TINY_FACECLIP = "tiny_faceclip.safetensors"
SDXL_BASE_NAME = "sd_xl_base_1.0.safetensors"  # the checkpoint the ID-embedding workflows name
STORE_ENV = "FACECLIP_TINY_MODEL_STORE"
TINY_FACET5 = "facet5_encoder.safetensors"  # the name the FaceT5 workflows use (tiny_models: the DiT and FLUX VAE)


def make_model_store(store: Path, comfyui_dir: Path) -> Path:
    """The tiny models every base folder links to, written once into ``store`` (its ``models`` layout): a session's
    bases and the GPU check's share one copy on disk instead of ~0.8 GB each. A marker written last makes a
    half-written store (an interrupted run) be rebuilt."""
    done = store / ".complete"
    if done.is_file():
        return store
    shutil.rmtree(store, ignore_errors=True)
    store.mkdir(parents=True)
    subprocess.run([sys.executable, str(HARNESS / "tiny_models.py"), str(comfyui_dir), str(store)],
                   check=True, capture_output=True)
    tiny_faceclip.write(store / "faceclip" / TINY_FACECLIP)
    tiny_facet5.write(store / "faceclip" / TINY_FACET5)
    make_pack(store / "insightface" / "antelopev2", "antelopev2")
    for path in store.rglob("*"):
        if path.is_file():
            path.chmod(0o444)  # linked into every base: a test writing into one must not change the others'
    done.write_text("")
    return store


def _link_or_copy(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)
    except OSError:  # another file system
        shutil.copyfile(source, target)


def prepare_base(base: Path, comfyui_dir: Path, store: Path | None = None) -> Path:
    """Folders ComfyUI expects, tiny models (also under the names the shipped workflows use: FaceCLIP-SDXL's and
    FaceT5-FLUX's encoder, diffusion model and VAE), a stand-in insightface pack.

    The models are links into ``store`` (default: $FACECLIP_TINY_MODEL_STORE, which the test session sets, else a
    store inside ``base``)."""
    for sub in ("models", "input", "output", "user", "temp", "home", "custom_nodes"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    if store is None:
        store = Path(os.environ.get(STORE_ENV) or base / "tiny_model_store")
    make_model_store(store, comfyui_dir)
    models = base / "models"
    for source in store.rglob("*"):
        if source.is_file() and source.name != ".complete":
            _link_or_copy(source, models / source.relative_to(store))
    tiny = {"faceclip": TINY_FACECLIP, "diffusion_models": UNET_NAME, "vae": VAE_NAME}
    for model in MAIN_JOB_MODELS:
        if model.folder in tiny:
            os.link(models / model.folder / tiny[model.folder], models / model.folder / model.name)
    # The ID-embedding workflows name SDXL base; the frontend checks that the file is listed when a workflow opens.
    # Nothing loads it here (the tests run those graphs on tiny SDXL parts), so a link to the tiny UNet serves.
    (models / "checkpoints").mkdir(parents=True, exist_ok=True)
    os.link(models / "diffusion_models" / UNET_NAME, models / "checkpoints" / SDXL_BASE_NAME)
    return base


def server_config(base: Path, comfyui_dir: Path, mount: Path, pack_dir_name: str = PACK_DIR_NAME) -> ServerConfig:
    """--cpu, the base directory, HOME inside it, and this pack (in a folder named ``pack_dir_name``) plus the
    testing pack mounted from ``mount``."""
    mount.mkdir(parents=True, exist_ok=True)
    (mount / pack_dir_name).symlink_to(REPO, target_is_directory=True)
    (mount / TESTING_PACK.name).symlink_to(TESTING_PACK, target_is_directory=True)
    extra_paths = base / "extra_model_paths.yaml"
    extra_paths.write_text(f"faceclip_tests:\n    custom_nodes: {mount}\n")
    return ServerConfig(
        comfyui_dir=comfyui_dir, base_directory=base, extra_model_paths=[extra_paths], python=sys.executable,
        env={"HOME": str(base / "home")},
        log_path=base / "comfyui.log",
        # ComfyUI computes text encoders in fp32 on every device; on the CPU it stores them in fp16 and casts every
        # weight at every call, which is most of a CLIP encode here. The test weights are fp16 values, so storing
        # them in fp32 computes exactly the same numbers, only faster.
        extra_args=["--fp32-text-enc"],
    )
