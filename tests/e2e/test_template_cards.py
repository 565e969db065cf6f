"""The templates browser's thumbnails: each workflow's .jpg title card is served where the frontend asks for it,
on the pinned ComfyUI (a static mount of workflows/) and under newer ComfyUI's routing, which serves a custom
node's templates through one route that answers 404 unless the name ends in .json."""
from __future__ import annotations

import asyncio
import importlib.util
import json
import urllib.request
from pathlib import Path
from urllib.parse import quote

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from faceclip_headless.shipped_workflows import SHIPPED
from tests.conftest import REPO

WORKFLOWS = REPO / "workflows"


def _cards_module():
    """nodes/template_cards.py on its own (the nodes package imports ComfyUI; this module imports it only to
    serve)."""
    spec = importlib.util.spec_from_file_location("faceclip_template_cards", REPO / "nodes" / "template_cards.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


cards = _cards_module()


def thumbnail_path(module: str, name: str) -> str:
    """The path the frontend (1.47.12 and 1.58.1: useTemplateWorkflows.getTemplateThumbnailUrl) requests for a
    custom node's template thumbnail: api.apiURL(`/workflow_templates/${module}/${name}`) + '.jpg', as the browser
    encodes it."""
    return "/api/workflow_templates/" + quote(f"{module}/{name}.jpg", safe="/()")


def test_the_pinned_server_serves_every_title_card_where_the_frontend_asks(comfy_server):
    with urllib.request.urlopen(f"{comfy_server.url}/api/workflow_templates", timeout=30) as reply:  # noqa: S310
        listing = json.load(reply)
    (module,) = [m for m, names in listing.items() if SHIPPED[0].file_stem in names]
    for workflow in SHIPPED:
        url = comfy_server.url + thumbnail_path(module, workflow.file_stem)
        with urllib.request.urlopen(url, timeout=30) as reply:  # noqa: S310 - loopback test server
            assert reply.headers["Content-Type"] == "image/jpeg", url
            assert reply.read() == workflow.path.with_suffix(".jpg").read_bytes(), url


def newer_core_routes(routes: web.RouteTableDef, templates: dict[str, Path]) -> None:
    """Custom-node templates as newer ComfyUI serves them (app/custom_node_manager.py after the static mount was
    removed): GET /workflow_templates lists them; GET /workflow_templates/{module_name}/{filename} answers 404
    unless the name ends in .json and is a listed template, else sends that file."""
    @routes.get("/workflow_templates")
    async def listing(request):
        return web.json_response({m: sorted(p.stem for p in d.glob("*.json")) for m, d in templates.items()})

    @routes.get("/workflow_templates/{module_name}/{filename}")
    async def template_file(request):
        filename = request.match_info["filename"]
        folder = templates.get(request.match_info["module_name"])
        if not filename.endswith(".json") or folder is None or not (folder / filename).is_file():
            raise web.HTTPNotFound()
        return web.FileResponse(folder / filename)


def newer_server_app(module: str, with_pack_route: bool, pack_first: bool = True) -> web.Application:
    """An aiohttp app routed as ComfyUI's PromptServer does: one RouteTableDef that custom nodes add to while they
    load (before the server's own add_routes), mounted under /api and at the root, in that order."""
    routes = web.RouteTableDef()
    if with_pack_route and pack_first:
        assert cards.add_card_route(routes, module, WORKFLOWS)
    newer_core_routes(routes, {module: WORKFLOWS})
    if with_pack_route and not pack_first:
        assert cards.add_card_route(routes, module, WORKFLOWS)
    api = web.RouteTableDef()
    for route in routes:
        api.route(route.method, "/api" + route.path)(route.handler, **route.kwargs)
    app = web.Application()
    app.add_routes(api)
    app.add_routes(routes)
    return app


async def _get_all(app_args: dict, paths: list[str]) -> list[tuple[int, str, bytes]]:
    async with TestClient(TestServer(newer_server_app(**app_args))) as client:
        out = []
        for path in paths:
            reply = await client.get(path)
            out.append((reply.status, reply.headers.get("Content-Type", ""), await reply.read()))
        return out


def fetch(paths: list[str], **app_args) -> list[tuple[int, str, bytes]]:
    """GET each path from a fresh newer_server_app(**app_args) (made inside the event loop that serves it)."""
    return asyncio.run(_get_all(app_args, paths))


MODULE = "comfyui-faceclip"


def test_under_newer_routing_the_cards_are_blank_without_the_packs_route():
    """What users of newer ComfyUI saw: the workflow loads, its thumbnail is a 404."""
    name = SHIPPED[0].file_stem
    (card, workflow) = fetch([thumbnail_path(MODULE, name), f"/api/workflow_templates/{MODULE}/{quote(name)}.json"],
                             module=MODULE, with_pack_route=False)
    assert card[0] == 404 and workflow[0] == 200


def test_under_newer_routing_the_packs_route_serves_every_card_and_leaves_the_json_to_core():
    for pack_first in (True, False):  # registered while the pack loads (ComfyUI's order), and the other way round
        app = {"module": MODULE, "with_pack_route": True, "pack_first": pack_first}
        paths = [thumbnail_path(MODULE, w.file_stem) for w in SHIPPED]
        for workflow, (status, kind, body) in zip(SHIPPED, fetch(paths, **app), strict=True):
            assert (status, kind) == (200, "image/jpeg"), (pack_first, workflow.file_stem)
            assert body == workflow.path.with_suffix(".jpg").read_bytes()
        listing, template = fetch(["/api/workflow_templates",
                                   f"/api/workflow_templates/{MODULE}/{quote(SHIPPED[0].file_stem)}.json"], **app)
        assert listing[0] == 200 and json.loads(listing[2])[MODULE] == sorted(w.file_stem for w in SHIPPED)
        assert template[0] == 200 and json.loads(template[2])["nodes"]


def test_the_card_route_serves_nothing_outside_the_workflows_folder():
    paths = [f"/api/workflow_templates/{MODULE}/..%2F..%2Fetc%2Fpasswd.jpg",
             f"/api/workflow_templates/{MODULE}/..%2Fweb%2Fdocs%2Fnothing.jpg",
             f"/api/workflow_templates/{MODULE}/input%2Ffaceclip_example.jpg",  # a photo, not a card
             f"/api/workflow_templates/{MODULE}/no such card.jpg",
             f"/api/workflow_templates/other-pack/{quote(SHIPPED[0].file_stem)}.jpg"]
    assert [status for status, _, _ in fetch(paths, module=MODULE, with_pack_route=True)] == [404] * len(paths)
    assert cards.card_path("../README.jpg", WORKFLOWS) is None
    assert cards.card_path("..", WORKFLOWS) is None
    assert cards.card_path(f"{SHIPPED[0].file_stem}.json", WORKFLOWS) is None
    assert cards.card_path(f"{SHIPPED[0].file_stem}.jpg", WORKFLOWS) == SHIPPED[0].path.with_suffix(".jpg").resolve()
