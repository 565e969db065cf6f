"""API graphs saved by an older version of the pack, brought up to date before ComfyUI validates them."""
from __future__ import annotations

import logging
from typing import Any

from ..faceclip_core.identity import IdentityError
from ..faceclip_core.identity.node_inputs import is_flat, migrate_flat_inputs

logger = logging.getLogger(__name__)

TRAIN_NODE = "FaceCLIPTrainIDEmbedding"


def migrate_prompt(json_data: dict[str, Any]) -> dict[str, Any]:
    """ComfyUI's on-prompt hook: a Train ID Embedding node with the first release's flat inputs (``stages``,
    ``learning_rate`` 0 = the recipe's) gets the current ones (``method.stages``, the value itself), so graphs
    saved in API format keep running. One whose method cannot be read is left for validation to refuse."""
    prompt = json_data.get("prompt")
    if not isinstance(prompt, dict):
        return json_data
    for node_id, node in prompt.items():
        if not isinstance(node, dict) or node.get("class_type") != TRAIN_NODE:
            continue
        inputs = node.get("inputs")
        if not isinstance(inputs, dict) or not is_flat(inputs):
            continue
        try:
            node["inputs"] = migrate_flat_inputs(inputs)
        except IdentityError as err:
            logger.warning("FaceCLIP: node %s: %s", node_id, err)
            continue
        logger.info("FaceCLIP: Train ID Embedding node %s was saved by version 0.1.0; its inputs were converted "
                    "(method.<setting>, defaults as values). Save the workflow again to keep the new form.", node_id)
    return json_data


def register_prompt_migrations() -> bool:
    """Install :func:`migrate_prompt` on ComfyUI's server (False where nodes load without one)."""
    from server import PromptServer  # ComfyUI's; imported here so the module imports anywhere

    server = getattr(PromptServer, "instance", None)
    if server is None:
        return False
    server.add_on_prompt_handler(migrate_prompt)
    return True
