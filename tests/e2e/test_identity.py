"""Train / Load / Apply ID Embedding in a real ComfyUI server, with a random full-size SDXL CLIP (CLIP-L +
CLIP-G cannot be shrunk) and the tiny SDXL-layout UNet and VAE. A few steps at 64 px keep each run short."""
from __future__ import annotations

import asyncio
import json
import struct
import uuid

import aiohttp
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from faceclip_headless.client import ComfyClient
from tests.e2e.conftest import UNET_NAME, VAE_NAME
from tests.harness.sdxl_clip import CLIP_G_NAME, CLIP_L_NAME, write
from tests.support.fake_insightface import MarkerFace, scene

PROMPT = "a photo of embedding:{name} person"


@pytest.fixture(scope="module")
def sdxl_clip(comfy_base) -> None:
    write(comfy_base / "models" / "text_encoders")


@pytest.fixture(scope="module")
def photo(comfy_server, tmp_path_factory) -> str:
    folder = tmp_path_factory.mktemp("id_photos")
    Image.fromarray(scene(256, 288, [MarkerFace((60, 50, 180, 190), 0.9)])).save(folder / "id_face.png")
    return ComfyClient(comfy_server.url).upload_image(folder / "id_face.png", overwrite=True)


def loaders() -> dict:
    return {
        "unet": {"class_type": "UNETLoader", "inputs": {"unet_name": UNET_NAME, "weight_dtype": "default"}},
        "clip": {"class_type": "DualCLIPLoader", "inputs": {"clip_name1": CLIP_L_NAME, "clip_name2": CLIP_G_NAME,
                                                             "type": "sdxl", "device": "default"}},
        "vae": {"class_type": "VAELoader", "inputs": {"vae_name": VAE_NAME}},
    }


def train_graph(photo: str, name: str, method: str, steps: int = 2, resume: bool = False, overwrite: bool = False,
                stages: int = 2, seed: int = 3, gradient_checkpointing: bool = False) -> dict:
    return {
        **loaders(),
        "load": {"class_type": "LoadImage", "inputs": {"image": photo}},
        "detector": {"class_type": "FaceCLIPFaceDetectorLoader",
                     "inputs": {"pack": "antelopev2", "provider": "CPU", "det_size": 640}},
        "faces": {"class_type": "FaceCLIPPrepareFaces",
                  "inputs": {"face_models": ["detector", 0], "images": ["load", 0], "selection": "largest",
                             "index": 0, "on_no_face": "raise"}},
        "train": {"class_type": "FaceCLIPTrainIDEmbedding", "inputs": {
            "model": ["unet", 0], "clip": ["clip", 0], "vae": ["vae", 0], "faces": ["faces", 0], "method": method,
            "name": name, "steps": steps, "learning_rate": 0.01, "seed": seed, "resolution": 64, "batch_size": 1,
            "resume": resume, "overwrite": overwrite, "stages": stages, "kv_split": True,
            "attention_weight": 0.003, "attention_layers": "input:7, input:8, middle:0, output:3",
            "anchor_names": "person", "reg_weight": 8e-4, "gradient_checkpointing": gradient_checkpointing}},
    }


def saved_tensors(comfy_base, name: str) -> dict[str, torch.Tensor]:
    return load_file(str(comfy_base / "models" / "embeddings" / f"{name}.safetensors"))


def dump(graph: dict, node: str, source: list, name: str) -> None:
    graph[node] = {"class_type": "FaceCLIPTest_SaveConditioning", "inputs": {"conditioning": source, "name": name}}


def encode(graph: dict, node: str, text: str) -> list:
    graph[node] = {"class_type": "CLIPTextEncode", "inputs": {"clip": ["clip", 0], "text": text}}
    return [node, 0]


@pytest.fixture(scope="module")
def idea(client_module, photo, sdxl_clip, comfy_base) -> str:
    """One ID-EA identity trained for 2 steps (used by several tests)."""
    result = client_module.run(train_graph(photo, "alice_idea", "ID-EA", steps=2))
    assert result.ok, result.describe_error()
    return "alice_idea"


@pytest.fixture(scope="module")
def client_module(comfy_server) -> ComfyClient:
    return ComfyClient(comfy_server.url, timeout=600)


def test_idea_training_writes_a_standard_sdxl_embedding(idea, comfy_base, client):
    tensors = saved_tensors(comfy_base, idea)
    assert tensors["clip_l"].shape == (2, 768) and tensors["clip_g"].shape == (2, 1280)
    assert (comfy_base / "models" / "faceclip_identity_state" / f"{idea}.safetensors").is_file()
    assert sorted(p.name for p in (comfy_base / "models" / "embeddings").iterdir() if p.name.startswith("."))== []


def test_embedding_name_in_core_cliptextencode_changes_conditioning_exactly_at_the_tokens(idea, client, comfy_base):
    graph = loaders()
    dump(graph, "d_emb", encode(graph, "e_emb", PROMPT.format(name=idea)), "cond_emb")
    dump(graph, "d_sks", encode(graph, "e_sks", "a photo of sks sks person"), "cond_sks")
    graph["id"] = {"class_type": "FaceCLIPLoadIDEmbedding", "inputs": {"embedding_name": f"{idea}.safetensors"}}
    graph["apply"] = {"class_type": "FaceCLIPApplyIDEmbedding", "inputs": {
        "model": ["unet", 0], "clip": ["clip", 0], "id_embedding": ["id", 0], "prompt": "a photo of {id} person"}}
    dump(graph, "d_core", ["apply", 1], "cond_core")
    result = client.run(graph)
    assert result.ok, result.describe_error()
    out = comfy_base / "output"
    emb, sks, core = (load_file(str(out / f"cond_{k}.safetensors")) for k in ("emb", "sks", "core"))
    assert emb["cond"].shape == (1, 77, 2048)
    # BOS "a photo of" come before the 2 identity tokens (positions 4, 5): causal CLIP leaves them untouched
    assert torch.equal(emb["cond"][0, :4], sks["cond"][0, :4])
    assert (emb["cond"][0, 4:] - sks["cond"][0, 4:]).abs().amax(-1).min() > 1e-3
    # ComfyUI's own embedding: path gives what the trainer's differentiable encoding gives for these rows
    assert torch.allclose(emb["cond"], core["cond"], atol=1e-3, rtol=1e-4)
    assert torch.allclose(emb["pooled"], core["pooled"], atol=1e-3, rtol=1e-4)


async def _train_and_interrupt(url: str, graph: dict, after_steps: int) -> list[dict]:
    """Queue ``graph``; press interrupt once the train node reports ``after_steps`` steps done (its progress
    text, a binary websocket frame: event type, node-id length, node id, text)."""
    client_id = uuid.uuid4().hex
    events = []
    async with aiohttp.ClientSession() as s, s.ws_connect(f"{url.replace('http', 'ws', 1)}/ws?clientId={client_id}",
                                                          max_msg_size=0) as ws:
        async with s.post(f"{url}/prompt", json={"prompt": graph, "client_id": client_id}) as r:
            r.raise_for_status()
        pressed = False
        async for msg in ws:
            if msg.type == aiohttp.WSMsgType.BINARY and not pressed:
                payload = msg.data[4:]
                (n,) = struct.unpack(">I", payload[:4])
                node, text = payload[4:4 + n].decode(), payload[4 + n:].decode(errors="replace")
                if node == "train" and text.startswith(f"step {after_steps}/"):
                    pressed = True
                    async with s.post(f"{url}/interrupt", json={}) as r:
                        r.raise_for_status()
                continue
            if msg.type != aiohttp.WSMsgType.TEXT:
                continue
            event = json.loads(msg.data)
            events.append(event)
            if event["type"] in ("execution_interrupted", "execution_error", "execution_success"):
                return events
    return events


def test_interrupt_saves_and_resume_equals_an_uninterrupted_run(idea, comfy_server, client, comfy_base, photo):
    graph = train_graph(photo, "alice_resumed", "ID-EA", steps=2)
    events = asyncio.run(asyncio.wait_for(_train_and_interrupt(comfy_server.url, graph, 1), 600))
    assert events[-1]["type"] == "execution_interrupted"
    state = comfy_base / "models" / "faceclip_identity_state" / "alice_resumed.safetensors"
    from safetensors import safe_open

    with safe_open(str(state), framework="pt") as f:
        stopped_at = int(f.metadata()["step"])
    assert stopped_at == 1
    assert saved_tensors(comfy_base, "alice_resumed")["clip_l"].shape == (2, 768)  # the latest tokens are kept

    refused = client.run(train_graph(photo, "alice_resumed", "ID-EA", steps=2))
    assert refused.status == "error" and "exists already" in refused.error["exception_message"]

    resumed = client.run(train_graph(photo, "alice_resumed", "ID-EA", steps=2, resume=True))
    assert resumed.ok, resumed.describe_error()
    a, b = saved_tensors(comfy_base, "alice_resumed"), saved_tensors(comfy_base, idea)
    for key in ("clip_l", "clip_g"):
        assert torch.allclose(a[key], b[key], atol=1e-6, rtol=0), key


def test_sefi_apply_swaps_keys_and_values_by_stage_on_the_positive_only(client, photo, sdxl_clip, comfy_base):
    graph = train_graph(photo, "alice_sefi", "SeFi-IDE", steps=2, stages=2)
    graph["apply"] = {"class_type": "FaceCLIPApplyIDEmbedding", "inputs": {
        "model": ["unet", 0], "clip": ["clip", 0], "id_embedding": ["train", 0],
        "prompt": "a photo of {id} wearing sunglasses"}}
    neg = encode(graph, "neg", "blurry")
    graph["latent"] = {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}}
    graph["probe"] = {"class_type": "FaceCLIPTest_ProbeSample", "inputs": {
        "model": ["apply", 0], "positive": ["apply", 1], "negative": neg, "latent": ["latent", 0], "steps": 4,
        "cfg": 5.0}}
    result = client.run(graph)
    assert result.ok, result.describe_error()
    tensors = saved_tensors(comfy_base, "alice_sefi")
    assert tensors["id.clip_l"].shape == (2, 2, 1, 768) and tensors["id.clip_g"].shape == (2, 2, 1, 1280)
    calls = result.outputs["probe"]["calls"]
    given = result.outputs["probe"]["given"][0]
    # stage of a sigma on SDXL's schedule (as ComfyUI's model_sampling.timestep: nearest log-sigma), and whether
    # that stage's key and value tokens differ (a stage never drawn in 2 training steps keeps K == V)
    betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=torch.float64) ** 2
    cumprod = torch.cumprod(1 - betas, 0)
    log_sigmas = (((1 - cumprod) / cumprod) ** 0.5).log()

    def stage_of(sigma: float) -> int:
        return int(int((log_sigmas - torch.tensor(sigma, dtype=torch.float64).log()).abs().argmin()) * 2 / 1000)

    split = [not (torch.equal(tensors["id.clip_l"][s, 0], tensors["id.clip_l"][s, 1])
                  and torch.equal(tensors["id.clip_g"][s, 0], tensors["id.clip_g"][s, 1])) for s in range(2)]
    assert any(split)
    contexts: dict[int, set] = {0: set(), 1: set()}
    for call in calls:
        assert sorted(call["cond_or_uncond"]) == [0, 1]
        for i, row in enumerate(call["rows"]):
            if call["cond_or_uncond"][i] == 1:  # unconditional: exactly the negative prompt, keys = values
                assert row["same"] and row["context"] == pytest.approx(given["negative"], rel=1e-5)
            else:  # conditional: the stage's own key context, and its value context where it differs
                stage = stage_of(call["sigma"])
                assert row["same"] != split[stage], (call["sigma"], stage)
                assert row["context"] != pytest.approx(given["positive"], rel=1e-6)
                contexts[stage].add(round(row["context"], 2))
    assert all(len(v) == 1 for v in contexts.values())  # both stages ran, each with one context in every layer
    assert contexts[0] != contexts[1]  # the keys follow sigma


def test_gradient_checkpointing_learns_the_same_tokens(client, photo, sdxl_clip, comfy_base):
    """Recomputing the UNet blocks in the backward pass (with SeFi-IDE's attention hooks in them) changes memory,
    not the result."""
    learned = {}
    for checkpointing in (False, True):
        name = f"ckpt_{int(checkpointing)}"
        result = client.run(train_graph(photo, name, "SeFi-IDE", steps=1, gradient_checkpointing=checkpointing))
        assert result.ok, result.describe_error()
        learned[checkpointing] = saved_tensors(comfy_base, name)
    assert learned[False].keys() == learned[True].keys()
    for key, value in learned[False].items():
        assert torch.allclose(value, learned[True][key], atol=1e-5, rtol=1e-4), key
