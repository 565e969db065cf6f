"""A small ComfyUI client: post API-format graphs, follow the websocket, collect outputs and errors."""
from __future__ import annotations

import asyncio
import json
import logging
import struct
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

logger = logging.getLogger(__name__)

_PROGRESS_TEXT = 3  # protocol.BinaryEventTypes.TEXT
_DONE = {"execution_success": "success", "execution_error": "error", "execution_interrupted": "interrupted"}


@dataclass
class PromptResult:
    """What happened to one queued graph."""

    prompt_id: str | None
    status: str  # "success" | "error" | "interrupted" | "rejected" (validation failed, nothing ran)
    outputs: dict[str, dict] = field(default_factory=dict)  # node id -> ui output (images, text, ...)
    node_errors: dict = field(default_factory=dict)  # validation errors by node id (HTTP 400)
    error: dict | None = None  # execution_error payload, or the /prompt "error" object
    events: list[dict] = field(default_factory=list)  # this prompt's websocket messages, in order

    @property
    def ok(self) -> bool:
        return self.status == "success"

    @property
    def executed(self) -> list[str]:
        return [e["data"]["node"] for e in self.events if e["type"] == "executing" and e["data"].get("node")]

    @property
    def cached(self) -> list[str]:
        return [n for e in self.events if e["type"] == "execution_cached" for n in e["data"].get("nodes", [])]

    def node_seconds(self) -> dict[str, float]:
        """Wall time of each executed node, from one 'executing' message to the next (as seen by the client)."""
        marks = [(e["data"].get("node") if e["type"] == "executing" else None, e["received"])
                 for e in self.events if e["type"] in ("executing", "execution_success")]
        return {node: round(t1 - t0, 4)
                for (node, t0), (_, t1) in zip(marks, marks[1:], strict=False) if node is not None}

    def node_texts(self, node_id: str) -> list[str]:
        """The texts the node showed on itself while this prompt ran (ComfyUI's progress text), in order."""
        return [e["data"]["text"] for e in self.events
                if e["type"] == "progress_text" and e["data"]["node"] == node_id]

    def images(self, node_id: str | None = None) -> list[dict]:
        nodes = [node_id] if node_id is not None else list(self.outputs)
        return [img for n in nodes for img in self.outputs.get(n, {}).get("images", [])]

    def describe_error(self) -> str:
        if self.status == "rejected":
            parts = [str((self.error or {}).get("message", "prompt rejected"))]
            for node, err in self.node_errors.items():
                for e in err.get("errors", []):
                    parts.append(f"node {node} ({err.get('class_type')}): {e.get('message')}: {e.get('details')}")
            return "\n".join(parts)
        if self.error:
            e = self.error
            return (f"node {e.get('node_id')} ({e.get('node_type')}): {e.get('exception_type')}: "
                    f"{e.get('exception_message')}")
        return self.status


def _progress_text(frame: bytes) -> dict | None:
    """A binary websocket frame of ComfyUI's progress text (event type 3: node-id length, node id, text) as an
    event {"type": "progress_text", "data": {"node", "text"}}; None for other binary frames (previews)."""
    if len(frame) < 8 or struct.unpack(">I", frame[:4])[0] != _PROGRESS_TEXT:
        return None
    (n,) = struct.unpack(">I", frame[4:8])
    return {"type": "progress_text",
            "data": {"node": frame[8:8 + n].decode(), "text": frame[8 + n:].decode(errors="replace")}}


class ComfyClient:
    """Synchronous facade over ComfyUI's HTTP API and websocket (one event loop run per call)."""

    def __init__(self, base_url: str, timeout: float = 600.0):
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.client_id = uuid.uuid4().hex

    # -- plain HTTP ---------------------------------------------------------------------------------------------
    def get_json(self, path: str) -> Any:
        return asyncio.run(self._request("GET", path))

    def get_bytes(self, path: str) -> bytes:
        return asyncio.run(self._request("GET", path, raw=True))

    def post_json(self, path: str, body: dict) -> Any:
        return asyncio.run(self._request("POST", path, json_body=body))

    def object_info(self, node_class: str | None = None) -> dict:
        return self.get_json("/object_info" + (f"/{node_class}" if node_class else ""))

    def interrupt(self) -> None:
        asyncio.run(self._request("POST", "/interrupt", json_body={}))

    def free(self, unload_models: bool = True, free_memory: bool = True) -> None:
        asyncio.run(self._request("POST", "/free", json_body={"unload_models": unload_models,
                                                               "free_memory": free_memory}))

    def view(self, image: dict) -> bytes:
        """Bytes of an output file described by an `images` entry ({filename, subfolder, type})."""
        params = {k: image.get(k, "") for k in ("filename", "subfolder", "type")}
        return asyncio.run(self._request("GET", "/view", params=params, raw=True))

    def upload_image(self, path: Path | str, name: str | None = None, overwrite: bool = False) -> str:
        """Copy a local image into the server's input folder; returns the name LoadImage should use."""
        path = Path(path)
        return asyncio.run(self._upload(path.read_bytes(), name or path.name, overwrite))

    async def _upload(self, data: bytes, name: str, overwrite: bool) -> str:
        form = aiohttp.FormData()
        form.add_field("image", data, filename=name)
        form.add_field("overwrite", "true" if overwrite else "false")
        async with aiohttp.ClientSession() as s, s.post(self.base_url + "/upload/image", data=form) as r:
            r.raise_for_status()
            body = await r.json()
        return f"{body['subfolder']}/{body['name']}" if body.get("subfolder") else body["name"]

    async def _request(self, method: str, path: str, json_body: dict | None = None, params: dict | None = None,
                       raw: bool = False) -> Any:
        async with aiohttp.ClientSession() as s, s.request(method, self.base_url + path, json=json_body,
                                                          params=params) as r:
            r.raise_for_status()
            if raw:
                return await r.read()
            text = await r.text()
            return json.loads(text) if text else None

    # -- running graphs -----------------------------------------------------------------------------------------
    def run(self, graph: dict, timeout: float | None = None, extra_data: dict | None = None) -> PromptResult:
        """Queue an API-format graph and wait until it finishes, fails or is interrupted."""
        return self.run_all([graph], timeout, extra_data)[0]

    def run_all(self, graphs: list[dict], timeout: float | None = None,
                extra_data: dict | None = None) -> list[PromptResult]:
        """Queue every graph at once (back to back, as a user clicking Queue repeatedly) and wait for all."""
        return asyncio.run(self._run_all(graphs, timeout or self.timeout, extra_data or {}))

    async def _run_all(self, graphs: list[dict], timeout: float, extra_data: dict) -> list[PromptResult]:
        ws_url = self.base_url.replace("http", "ws", 1) + f"/ws?clientId={self.client_id}"
        async with aiohttp.ClientSession() as session, session.ws_connect(ws_url, max_msg_size=0) as ws:
            results = [await self._queue(session, graph, extra_data) for graph in graphs]
            pending = {r.prompt_id: r for r in results if r.status == "running"}
            await asyncio.wait_for(self._follow(ws, pending), timeout)
            for r in results:
                if r.prompt_id is not None:
                    r.outputs = await self._history_outputs(session, r.prompt_id)
            return results

    async def _queue(self, session: aiohttp.ClientSession, graph: dict, extra_data: dict) -> PromptResult:
        body = {"prompt": graph, "client_id": self.client_id, "extra_data": extra_data}
        async with session.post(self.base_url + "/prompt", json=body) as r:
            answer = await r.json(content_type=None)
            if r.status == 400:
                return PromptResult(None, "rejected", node_errors=answer.get("node_errors", {}),
                                    error=answer.get("error"))
            r.raise_for_status()
        return PromptResult(answer["prompt_id"], "running", node_errors=answer.get("node_errors", {}))

    async def _follow(self, ws: aiohttp.ClientWebSocketResponse, pending: dict[str, PromptResult]) -> None:
        """Route websocket events to their prompts until none is pending."""
        if not pending:
            return
        running: str | None = None  # the prompt whose nodes execute now: binary frames do not name their prompt
        async for msg in ws:
            if msg.type == aiohttp.WSMsgType.BINARY:
                event = _progress_text(msg.data)  # other binary frames carry previews
                if event is not None and running in pending:
                    event["received"] = time.monotonic()
                    pending[running].events.append(event)
                continue
            if msg.type != aiohttp.WSMsgType.TEXT:
                continue
            event = json.loads(msg.data)
            data = event.get("data") or {}
            if event.get("type") == "executing":
                running = data.get("prompt_id")
            result = pending.get(data.get("prompt_id"))
            if result is None:
                continue
            event["received"] = time.monotonic()  # lets callers time nodes from the event stream
            result.events.append(event)
            kind = event.get("type")
            if kind in _DONE:
                result.status = _DONE[kind]
                if kind == "execution_error":
                    result.error = data
            elif kind == "executing" and data.get("node") is None:
                result.status = "success"
            if result.status != "running":
                del pending[result.prompt_id]
                if not pending:
                    return
        raise ConnectionError("the ComfyUI websocket closed before every prompt finished")

    async def _history_outputs(self, session: aiohttp.ClientSession, prompt_id: str) -> dict:
        for _ in range(50):  # history is written just after the last websocket message
            async with session.get(f"{self.base_url}/history/{prompt_id}") as r:
                history = await r.json()
            if prompt_id in history:
                return history[prompt_id].get("outputs", {})
            await asyncio.sleep(0.1)
        return {}
