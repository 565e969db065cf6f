"""FaceCLIP-SDXL for ComfyUI: identity-preserving portraits from a few ordinary photos.

ComfyUI entry point, V3 node API. Importing this module loads no optional dependency (insightface,
onnxruntime): those are imported by the nodes that use them, when they run, so a broken install shows up as a
clear node error instead of turning the whole pack into "IMPORT FAILED".
"""
from __future__ import annotations

import logging

from comfy_api.latest import ComfyExtension, io
from typing_extensions import override

from .faceclip_core.faces.runtime_check import onnxruntime_conflict
from .nodes import NODES, register_model_folders
from .nodes.folders import provide_example_photos
from .nodes.help_pages import serve_help_pages
from .nodes.migrations import register_prompt_migrations
from .nodes.template_cards import serve_template_cards

logger = logging.getLogger(__name__)


class FaceCLIPExtension(ComfyExtension):
    @override
    async def on_load(self) -> None:
        register_model_folders()
        provide_example_photos()
        serve_help_pages()
        register_prompt_migrations()
        serve_template_cards()
        conflict = onnxruntime_conflict()
        if conflict:
            logger.warning("FaceCLIP: %s", conflict)

    @override
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return list(NODES)


async def comfy_entrypoint() -> FaceCLIPExtension:
    return FaceCLIPExtension()
