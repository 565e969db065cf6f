"""The real ComfyUI frontend in Debian's Chromium, driven by playwright-core (tests/harness/provision_browser.sh).

Every browser test runs on four front ends: the frontend ComfyUI 0.30.0 pins (comfyui-frontend-package 1.47.12,
in the venv) and the newest one on PyPI (unpacked by provision_browser.sh, served with --front-end-root), each
with "Modern Node Design (Nodes 2.0)" off and on. The pinned one uses the session's ComfyUI server
(tests/e2e/conftest.py); the newest gets a server of its own. One Chromium page per variant. The fixtures are
package-scoped: Chromium (which keeps drawing the canvas while idle) and the second server stop when the browser
tests end instead of taking CPU and memory from every test after them. Node runs bridge.cjs,
a line protocol (one JSON request / reply per line) so the tests stay in Python. Screenshots go to a pytest
temporary folder and, when FACECLIP_TEST_ARTIFACTS is set, are copied to $FACECLIP_TEST_ARTIFACTS/browser.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from faceclip_headless.client import ComfyClient
from faceclip_headless.server import ComfyServer
from tests.conftest import REPO, comfyui_dir
from tests.harness.browser import (
    APP,
    LOAD_WORKFLOW,
    PINNED_FRONTEND,
    UI_VARIANTS,
    Browser,
    UIVariant,
    boot,
    load_workflow,
    missing_tools,
)
from tests.harness.fake_insightface import MarkerFace, scene, upload_scenes
from tests.harness.server_env import prepare_base, server_config

__all__ = ["APP", "LOAD_WORKFLOW", "Browser", "load_workflow"]

WORKFLOWS = REPO / "workflows"
# For the face picker: two marker faces the stand-in detector finds; "largest" picks the big one.
PICKER_PHOTO = "picker_two_faces.png"
NO_FACE_PHOTO = "picker_no_face.png"
PICKER_FACES = [MarkerFace((30, 50, 150, 190), 0.8), MarkerFace((200, 40, 250, 100), 0.95)]

@pytest.fixture(scope="session")
def artifacts(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("browser_artifacts")


@pytest.fixture(scope="package", params=UI_VARIANTS, ids=str)
def ui_variant(request) -> UIVariant:
    return request.param


@pytest.fixture(scope="package")
def frontend_servers(comfy_server, tmp_path_factory):
    """ComfyUI servers by frontend version, started when a variant first needs one; stopped at the end."""
    servers: dict[str, ComfyServer] = {PINNED_FRONTEND: comfy_server}

    def get(variant: UIVariant) -> ComfyServer:
        if variant.frontend not in servers:
            base = prepare_base(tmp_path_factory.mktemp(f"comfy_base_fe{variant.frontend}"), comfyui_dir())
            config = server_config(base, comfyui_dir(), tmp_path_factory.mktemp("custom_nodes_mount"))
            config.extra_args.extend(["--front-end-root", str(variant.static_root)])
            servers[variant.frontend] = ComfyServer(config).start()
        return servers[variant.frontend]

    yield get
    for version, server in servers.items():
        if version != PINNED_FRONTEND:
            server.stop()


@pytest.fixture(scope="package")
def ui_server(ui_variant, frontend_servers) -> ComfyServer:
    """The ComfyUI server that serves this variant's frontend."""
    problems = missing_tools(ui_variant)
    if problems:
        pytest.fail("browser tests cannot run: " + "; ".join(problems)
                    + ". `bash tests/harness/provision.sh .testenv` (run by tests/run.sh) installs them.",
                    pytrace=False)
    return frontend_servers(ui_variant)


def _upload_input_photos(server: ComfyServer, folder: Path) -> dict[str, str]:
    return upload_scenes(ComfyClient(server.url, timeout=120), folder,
                         {PICKER_PHOTO: scene(256, 288, PICKER_FACES), NO_FACE_PHOTO: scene(256, 288, [])})


@pytest.fixture(scope="package")
def input_photos(ui_server, tmp_path_factory) -> dict[str, str]:
    """Photos in the server's input folder before the page boots (the frontend lists input files once, at start):
    the face picker's two-face photo and a photo without a face. The shipped workflows' example photos are not
    provided here: the pack copies them into the input folder when it loads, as on a user's machine."""
    return _upload_input_photos(ui_server, tmp_path_factory.mktemp("browser_photos"))


@pytest.fixture(scope="package")
def browser(ui_variant, ui_server, input_photos, artifacts, tmp_path_factory) -> Browser:
    """The ComfyUI frontend of one variant, booted, with this pack's extension loaded; shared by its tests."""
    user_data = tmp_path_factory.mktemp("chromium_profile")
    page = Browser(user_data, artifacts, artifacts / f"bridge-{ui_variant}.log", ui_variant, ui_server.url)
    try:
        booted = boot(page)
        assert booted == {"version": ui_variant.frontend, "nodes2": ui_variant.nodes2}, booted
        yield page
    finally:
        page.close()
