"""A real ComfyUI server for the end-to-end tests, with this pack mounted and tiny random models in place.

One server per test session: 127.0.0.1, a free port, --cpu, a temporary base directory (models, input, output,
user) and HOME, the pack mounted through --extra-model-paths-config. Stopped by PID at the end.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from faceclip_headless.client import ComfyClient
from faceclip_headless.server import ComfyServer
from tests.conftest import comfyui_dir
from tests.harness.server_env import PACK_DIR_NAME, STORE_ENV, TINY_FACECLIP, prepare_base, server_config
from tests.harness.tiny_models import UNET_NAME, VAE_NAME

__all__ = ["PACK_DIR_NAME", "TINY_FACECLIP", "UNET_NAME", "VAE_NAME"]


@pytest.fixture(scope="session", autouse=True)
def tiny_model_store(tmp_path_factory) -> Path:
    """One copy of the tiny models per session: every base folder (servers, help pages, the GPU check's child
    process) links to it, which keeps the suite's disk use to a few GB."""
    store = tmp_path_factory.getbasetemp() / "tiny_model_store"
    os.environ[STORE_ENV] = str(store)
    return store


@pytest.fixture(scope="session")
def comfy_base(tmp_path_factory) -> Path:
    """Base directory with tiny models; made once per session, never inside the repo or HOME."""
    return prepare_base(tmp_path_factory.mktemp("comfy_base"), comfyui_dir())


@pytest.fixture(scope="session")
def comfy_server(comfy_base, tmp_path_factory) -> ComfyServer:
    config = server_config(comfy_base, comfyui_dir(), tmp_path_factory.mktemp("custom_nodes_mount"))
    server = ComfyServer(config).start()
    yield server
    server.stop()
    assert not server.alive(), "ComfyUI is still running after stop()"


@pytest.fixture
def client(comfy_server) -> ComfyClient:
    if not comfy_server.alive():
        pytest.fail(f"the ComfyUI server died:\n{comfy_server.log_tail()}")
    return ComfyClient(comfy_server.url, timeout=300)
