"""Turn a UI-format workflow (what ComfyUI saves and this pack ships) into the API format `POST /prompt` takes.

Widget values are stored positionally in the UI format, so the node schemas from `/object_info` say which value
belongs to which input. This follows the frontend's own rules: every widget-type input takes the next value
(also when a link now feeds it), a seed widget with "control after generate" is followed by that control's
value, and extra trailing values (an upload button's) are ignored.
"""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any

# Nodes that exist only in the editor and never reach the server.
FRONTEND_ONLY = {"Note", "MarkdownNote", "PrimitiveNode", "Reroute"}
DYNAMIC_COMBO = "COMFY_DYNAMICCOMBO_V3"
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO", DYNAMIC_COMBO}
CONTROL_VALUES = {"fixed", "increment", "decrement", "randomize"}


class WorkflowError(ValueError):
    """The workflow cannot be turned into a prompt (unknown node, muted node, broken link)."""


def is_widget(spec: list) -> bool:
    """Whether an /object_info input spec is a widget (stored in widgets_values) rather than a socket."""
    kind = spec[0]
    return isinstance(kind, list) or kind in WIDGET_TYPES


def ordered_inputs(schema: dict) -> list[tuple[str, list]]:
    """A node schema's inputs in the order the frontend stores them: required, then optional."""
    inputs = schema.get("input", {})
    order = schema.get("input_order") or {k: list(v) for k, v in inputs.items()}
    return [(name, inputs[section][name]) for section in ("required", "optional") for name in order.get(section, [])
            if name in inputs.get(section, {})]


def _widget_values(declared: list[tuple[str, list]], values: list, by_name: dict | None,
                   prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(input name, saved value or None) in the frontend's widget order, consuming ``values``; a DynamicCombo's
    picked option's inputs follow it under ``<name>.``."""
    for name, spec in declared:
        full, value = prefix + name, None
        if is_widget(spec):
            value = by_name.get(full) if by_name is not None else (values.pop(0) if values else None)
            options = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
            if options.get("control_after_generate") and values and values[0] in CONTROL_VALUES:
                values.pop(0)
        yield full, value
        if spec[0] == DYNAMIC_COMBO:
            picked = next((o for o in spec[1]["options"] if o["key"] == value), None)
            if picked is not None:
                nested = [(n, sp) for section in ("required", "optional")
                          for n, sp in picked["inputs"].get(section, {}).items()]
                yield from _widget_values(nested, values, by_name, f"{full}.")


def _source(links: dict[int, list], nodes: dict[int, dict], link_id: int) -> list:
    """[node id, output slot] feeding a link, followed through Reroute nodes."""
    link = links.get(link_id)
    if link is None:
        raise WorkflowError(f"link {link_id} is missing from the workflow")
    from_node, from_slot = link[0], link[1]
    node = nodes.get(from_node)
    if node is not None and node["type"] == "Reroute":
        upstream = (node.get("inputs") or [{}])[0].get("link")
        if upstream is None:
            raise WorkflowError(f"Reroute node {from_node} has no input")
        return _source(links, nodes, upstream)
    return [str(from_node), from_slot]


def _from_primitive(links: dict[int, list], nodes: dict[int, dict], link_id: int) -> bool:
    link = links.get(link_id)
    return link is not None and nodes.get(link[0], {}).get("type") == "PrimitiveNode"


def to_api(workflow: dict, object_info: dict[str, Any]) -> dict[str, dict]:
    """API-format prompt for a UI-format workflow; node ids are kept, so titles and ids match the editor."""
    if "nodes" not in workflow or "links" not in workflow:
        raise WorkflowError("not a UI-format workflow (no 'nodes'/'links'); API-format graphs need no conversion")
    nodes = {n["id"]: n for n in workflow["nodes"]}
    # [link id, from node, from slot, to node, to slot, type] -> id: [from node, from slot, ...]
    links = {link[0]: link[1:] for link in workflow["links"]}
    prompt: dict[str, dict] = {}
    for node in workflow["nodes"]:
        kind = node["type"]
        if kind in FRONTEND_ONLY:
            continue
        if node.get("mode", 0) in (2, 4):
            raise WorkflowError(f"node {node['id']} ({kind}) is muted or bypassed; enable or delete it first")
        schema = object_info.get(kind)
        if schema is None:
            raise WorkflowError(f"node {node['id']} is of type {kind!r}, which this ComfyUI does not have "
                                "(a custom node pack is missing or failed to import)")
        linked = {i["name"]: i["link"] for i in node.get("inputs", []) if i.get("link") is not None}
        saved = node.get("widgets_values") or []
        by_name = saved if isinstance(saved, dict) else None  # some frontends save widgets by name
        values = [] if by_name is not None else list(saved)
        inputs: dict[str, Any] = {}
        declared = ordered_inputs(schema)
        for name, value in _widget_values(declared, values, by_name):
            if name in linked and not _from_primitive(links, nodes, linked[name]):
                inputs[name] = _source(links, nodes, linked[name])
            elif value is not None:
                inputs[name] = value  # a widget, or a widget driven by a PrimitiveNode (its value is mirrored here)
        # Inputs that grow (V3 Autogrow: "images.image0", "images.image1", ...) are saved under dotted names
        # below the schema's own input; ComfyUI nests them again when it runs the node.
        declared_names = {name for name, _ in declared}
        for name, link in linked.items():
            if "." in name and name not in inputs and name.split(".", 1)[0] in declared_names:
                inputs[name] = _source(links, nodes, link)
        prompt[str(node["id"])] = {"class_type": kind, "inputs": inputs,
                                   "_meta": {"title": node.get("title", schema.get("display_name", kind))}}
    return prompt


def find_nodes(prompt: dict[str, dict], class_type: str) -> list[str]:
    """Ids of the prompt's nodes of one type, in id order."""
    return sorted((k for k, v in prompt.items() if v["class_type"] == class_type), key=lambda k: int(k))
