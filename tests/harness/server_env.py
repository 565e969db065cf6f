"""A ComfyUI base directory with tiny random models and this pack mounted: what the end-to-end tests and the
end-to-end benchmark run against.

Nothing goes into the repo or HOME: the base directory, the mount folder and HOME are the caller's temporary
folders; the server listens on 127.0.0.1 only.
"""
from __future__ import annotations

import os
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
TINY_FACET5 = "facet5_encoder.safetensors"  # the name the FaceT5 workflows use (tiny_models: the DiT and FLUX VAE)


def prepare_base(base: Path, comfyui_dir: Path) -> Path:
    """Folders ComfyUI expects, tiny models (also under the names the shipped workflows use: FaceCLIP-SDXL's and
    FaceT5-FLUX's encoder, diffusion model and VAE), a stand-in insightface pack."""
    for sub in ("models", "input", "output", "user", "temp", "home", "custom_nodes"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, str(HARNESS / "tiny_models.py"), str(comfyui_dir), str(base / "models")],
                   check=True, capture_output=True)
    tiny_faceclip.write(base / "models" / "faceclip" / TINY_FACECLIP)
    tiny_facet5.write(base / "models" / "faceclip" / TINY_FACET5)
    make_pack(base / "models" / "insightface" / "antelopev2", "antelopev2")
    tiny = {"faceclip": TINY_FACECLIP, "diffusion_models": UNET_NAME, "vae": VAE_NAME}
    for model in MAIN_JOB_MODELS:
        if model.folder in tiny:
            os.link(base / "models" / model.folder / tiny[model.folder], base / "models" / model.folder / model.name)
    # The ID-embedding workflows name SDXL base; the frontend checks that the file is listed when a workflow opens.
    # Nothing loads it here (the tests run those graphs on tiny SDXL parts), so a link to the tiny UNet serves.
    (base / "models" / "checkpoints").mkdir(parents=True, exist_ok=True)
    os.link(base / "models" / "diffusion_models" / UNET_NAME, base / "models" / "checkpoints" / SDXL_BASE_NAME)
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
