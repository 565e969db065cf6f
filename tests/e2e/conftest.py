"""A real ComfyUI server for the end-to-end tests, with this pack mounted and tiny random models in place.

One server per test session: 127.0.0.1, a free port, --cpu, a temporary base directory (models, input, output,
user) and HOME, the pack mounted through --extra-model-paths-config. Stopped by PID at the end.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from faceclip_headless.client import ComfyClient
from faceclip_headless.model_files import MAIN_JOB_MODELS
from faceclip_headless.server import ComfyServer, ServerConfig
from tests.conftest import REPO, comfyui_dir
from tests.harness import tiny_faceclip
from tests.harness.tiny_models import UNET_NAME, VAE_NAME
from tests.support.fake_insightface import make_pack

HARNESS = REPO / "tests" / "harness"
PACK_DIR_NAME = "comfyui-faceclip"  # the folder name users get from a git clone / ComfyUI Manager
TESTING_PACK = Path(__file__).parent / "testing_pack" / "faceclip_testing"
TINY_FACECLIP = "tiny_faceclip.safetensors"


@pytest.fixture(scope="session")
def comfy_base(tmp_path_factory) -> Path:
    """Base directory with tiny models; made once per session, never inside the repo or HOME."""
    base = tmp_path_factory.mktemp("comfy_base")
    for sub in ("models", "input", "output", "user", "temp", "home", "custom_nodes"):
        (base / sub).mkdir()
    subprocess.run([sys.executable, str(HARNESS / "tiny_models.py"), str(comfyui_dir()), str(base / "models")],
                   check=True, capture_output=True)
    tiny_faceclip.write(base / "models" / "faceclip" / TINY_FACECLIP)
    make_pack(base / "models" / "insightface" / "antelopev2", "antelopev2")
    # The shipped workflows and the main job name the real files; here those names are the tiny models.
    tiny = {"faceclip": TINY_FACECLIP, "diffusion_models": UNET_NAME, "vae": VAE_NAME}
    for model in MAIN_JOB_MODELS:
        if model.folder in tiny:
            os.link(base / "models" / model.folder / tiny[model.folder], base / "models" / model.folder / model.name)
    return base


@pytest.fixture(scope="session")
def comfy_server(comfy_base, tmp_path_factory) -> ComfyServer:
    mount = tmp_path_factory.mktemp("custom_nodes_mount")
    (mount / PACK_DIR_NAME).symlink_to(REPO, target_is_directory=True)
    (mount / TESTING_PACK.name).symlink_to(TESTING_PACK, target_is_directory=True)
    extra_paths = comfy_base / "extra_model_paths.yaml"
    extra_paths.write_text(f"faceclip_tests:\n    custom_nodes: {mount}\n")
    config = ServerConfig(
        comfyui_dir=comfyui_dir(), base_directory=comfy_base, extra_model_paths=[extra_paths],
        python=sys.executable, launcher=[str(HARNESS / "launch_comfyui.py")],
        env={"HOME": str(comfy_base / "home")}, log_path=comfy_base / "comfyui.log",
    )
    server = ComfyServer(config).start()
    yield server
    server.stop()
    assert not server.alive(), "ComfyUI is still running after stop()"


@pytest.fixture
def client(comfy_server) -> ComfyClient:
    if not comfy_server.alive():
        pytest.fail(f"the ComfyUI server died:\n{comfy_server.log_tail()}")
    return ComfyClient(comfy_server.url, timeout=300)

