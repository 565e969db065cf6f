"""Node help pages (web/docs/<node id>.md) wherever the pack is installed.

ComfyUI serves web/ under the project name from pyproject.toml (/extensions/comfyui-faceclip/), but the frontend
looks for a custom node's help under the name it derives from the node's python_module: the install folder's
name, cut at the first "." and "@". A GitHub ZIP gives comfyui-faceclip-main, a release ZIP
comfyui-faceclip-1.2.0 (looked up as comfyui-faceclip-1), Manager may add "@version": for every such folder the
help pages are also served where the frontend looks.
"""
from __future__ import annotations

import logging
from pathlib import Path

logger = logging.getLogger(__name__)

# absolute(), not resolve(): the folder ComfyUI loaded the pack from, even when it is a link to a checkout
PACK_DIR = Path(__file__).absolute().parents[1]
DOCS = PACK_DIR / "web" / "docs"
PROJECT_NAME = "comfyui-faceclip"  # pyproject.toml [project] name: where ComfyUI serves web/


def frontend_pack_id(folder_name: str) -> str:
    """The name the frontend gives a pack installed in ``folder_name`` when it builds help-page URLs."""
    return folder_name.split(".")[0].split("@")[0]


def serve_help_pages(folder_name: str = PACK_DIR.name) -> str | None:
    """Serve web/docs at /extensions/<the frontend's id for the install folder>/docs when that is not where ComfyUI
    serves web/ already; returns the URL prefix added, or None."""
    pack_id = frontend_pack_id(folder_name)
    if pack_id == PROJECT_NAME:
        return None
    from server import PromptServer  # ComfyUI's; imported here so the module imports anywhere

    server = getattr(PromptServer, "instance", None)
    if server is None:  # nodes loaded without a web server (a script, a test): nothing to serve
        return None
    prefix = f"/extensions/{pack_id}/docs"
    server.routes.static(prefix, DOCS)
    logger.info("FaceCLIP: help pages also served at %s (the pack's folder is %r)", prefix, folder_name)
    return prefix
