"""Every node's help page reaches the frontend whatever the pack's folder is called.

The frontend asks for a custom node's help at /extensions/<id>/docs/<node id>.md, where <id> is the node's
python_module cut as below; a GitHub ZIP or release download gives the folder another name than a git clone.
"""
from __future__ import annotations

import importlib.util
import urllib.error
import urllib.request

import pytest

from faceclip_headless.client import ComfyClient
from faceclip_headless.server import ComfyServer
from tests.conftest import REPO, comfyui_dir
from tests.harness.server_env import PACK_DIR_NAME, prepare_base, server_config

NODE_IDS = sorted(p.stem for p in (REPO / "web" / "docs").glob("*.md"))


def _help_pages_module():
    """nodes/help_pages.py on its own (the nodes package imports ComfyUI; this module imports it only to serve)."""
    spec = importlib.util.spec_from_file_location("faceclip_help_pages", REPO / "nodes" / "help_pages.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


frontend_pack_id = _help_pages_module().frontend_pack_id


def frontend_help_url(server_url: str, python_module: str, node_id: str) -> str:
    """The URL the frontend (1.47 and 1.58 alike) fetches for a custom node's help page."""
    parts = python_module.split(".")
    assert parts[0] == "custom_nodes", python_module
    return f"{server_url}/extensions/{parts[1].split('@')[0]}/docs/{node_id}.md"


def fetch_help(server_url: str) -> dict[str, int]:
    info = ComfyClient(server_url).object_info()
    status = {}
    for node_id in NODE_IDS:
        url = frontend_help_url(server_url, info[node_id]["python_module"], node_id)
        try:
            with urllib.request.urlopen(url, timeout=30) as r:  # noqa: S310 - the local test server
                status[node_id] = r.status if r.read().strip() else 204
        except urllib.error.HTTPError as exc:
            status[node_id] = exc.code
    return status


def test_every_node_has_a_help_page():
    assert len(NODE_IDS) >= 9


def test_help_pages_resolve_for_a_git_clone(comfy_server):
    assert fetch_help(comfy_server.url) == {n: 200 for n in NODE_IDS}


@pytest.mark.parametrize("folder,frontend_id", [("comfyui-faceclip-main", "comfyui-faceclip-main"),
                                                ("comfyui-faceclip-1.2.0", "comfyui-faceclip-1"),
                                                ("comfyui-faceclip@1.2.0", "comfyui-faceclip"),
                                                ("comfyui-faceclip", "comfyui-faceclip")])
def test_the_pack_knows_where_the_frontend_looks(folder, frontend_id):
    assert frontend_pack_id(folder) == frontend_id
    assert frontend_help_url("", f"custom_nodes.{folder}", "X") == f"/extensions/{frontend_id}/docs/X.md"


def test_help_pages_resolve_for_a_zip_download(tmp_path):
    """A release's ZIP unpacks to comfyui-faceclip-1.2.0, which the frontend cuts to comfyui-faceclip-1 (GitHub's
    "Download ZIP", comfyui-faceclip-main, takes the same path: any name but the project's)."""
    folder = "comfyui-faceclip-1.2.0"
    assert frontend_pack_id(folder) != PACK_DIR_NAME
    base = prepare_base(tmp_path / "base", comfyui_dir())
    server = ComfyServer(server_config(base, comfyui_dir(), tmp_path / "mount", pack_dir_name=folder)).start()
    try:
        info = ComfyClient(server.url).object_info()
        assert info["FaceCLIPEncode"]["python_module"] == f"custom_nodes.{folder}"
        assert fetch_help(server.url) == {n: 200 for n in NODE_IDS}
    finally:
        server.stop()
