"""The templates browser's thumbnails: the .jpg title card beside each workflow in workflows/.

The frontend (1.47 to 1.58 at least) asks for a custom node's template thumbnail at
/api/workflow_templates/<pack folder>/<template name>.jpg. ComfyUI up to about 0.3x answers it from a static
mount of the pack's workflows/ folder; newer ComfyUI replaced that mount with a route
/workflow_templates/{module_name}/{filename} that serves only names ending in .json, so every card goes blank.
The pack registers its own route for exactly its own folder and .jpg names. It wins on both backends: pack routes
are registered while custom nodes load, before the server adds its own routes, and aiohttp tries resources in
registration order (newer aiohttp also tries the longer literal prefix first, which is this one too).
"""
from __future__ import annotations

import logging
from pathlib import Path

logger = logging.getLogger(__name__)

# absolute(), not resolve(): the folder ComfyUI loaded the pack from, even when it is a link to a checkout (the
# module stands alone, without the pack's package, so tests can load it outside ComfyUI)
PACK_DIR = Path(__file__).absolute().parents[1]
WORKFLOWS = PACK_DIR / "workflows"
CARD_SUFFIX = ".jpg"


def card_path(filename: str, workflows: Path = WORKFLOWS) -> Path | None:
    """The title card ``filename`` names inside ``workflows`` (a plain .jpg file name, no folder part), or None for
    anything else: other suffixes, separators, '..', links that lead out of the folder."""
    if not filename.endswith(CARD_SUFFIX) or "/" in filename or "\\" in filename or filename.startswith("."):
        return None
    folder = workflows.resolve()
    path = (folder / filename).resolve()
    return path if path.parent == folder and path.is_file() else None


def add_card_route(routes, folder_name: str = PACK_DIR.name, workflows: Path = WORKFLOWS) -> str | None:
    """Register GET /workflow_templates/<folder_name>/<name>.jpg on ``routes`` (an aiohttp RouteTableDef, such as
    PromptServer.instance.routes, which the server also mounts under /api); returns the path pattern, or None when
    the folder name cannot be a literal route part."""
    from aiohttp import web  # ComfyUI's own dependency; imported here so the module imports anywhere

    if any(c in folder_name for c in "{}/"):
        logger.warning("FaceCLIP: template thumbnails not served: the pack's folder name %r cannot be part of a "
                       "route; rename the folder", folder_name)
        return None
    pattern = f"/workflow_templates/{folder_name}/{{filename:[^/]+\\{CARD_SUFFIX}}}"

    async def title_card(request: web.Request) -> web.StreamResponse:
        path = card_path(request.match_info["filename"], workflows)
        if path is None:
            raise web.HTTPNotFound()
        return web.FileResponse(path, headers={"Content-Type": "image/jpeg"})

    routes.get(pattern)(title_card)
    return pattern


def serve_template_cards() -> str | None:
    """Serve the title cards through ComfyUI's PromptServer, when there is one (not in scripts and unit tests)."""
    from server import PromptServer  # ComfyUI's; imported here so the module imports anywhere

    server = getattr(PromptServer, "instance", None)
    if server is None:
        return None
    return add_card_route(server.routes)
