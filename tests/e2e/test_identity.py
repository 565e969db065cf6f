"""Train / Load / Apply ID Embedding in a real ComfyUI server, with a random full-size SDXL CLIP (CLIP-L +
CLIP-G cannot be shrunk) and the tiny SDXL-layout UNet and VAE. A few steps at 64 px keep each run short.

Apply ID Embedding is probed where it matters: every model call and every cross-attention of a real KSampler
run, under the classic model patcher and under the dynamic VRAM patcher (ComfyUI's default on NVIDIA GPUs)."""
from __future__ import annotations

import asyncio
import json
import math
import struct
import time
import uuid

import aiohttp
import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file

from faceclip_core.identity import IDEmbedding, save_embedding
from faceclip_headless.client import ComfyClient
from tests.conftest import REPO
from tests.e2e.conftest import UNET_NAME, VAE_NAME
from tests.harness.fake_insightface import MarkerFace, scene
from tests.harness.sdxl_clip import CLIP_G_NAME, CLIP_L_NAME, write

PROMPT = "a photo of embedding:{name} person"
# more than 75 tokens: ComfyUI makes it two 77-token chunks (154 tokens)
LONG = ("a detailed portrait photograph, soft window light from the left, shallow depth of field, film grain, "
        "a quiet cafe in the background with wooden chairs, warm colours, muted green walls, a potted plant, "
        "steam rising from a cup of coffee on the table, late afternoon, natural skin texture, sharp eyes, "
        "subtle smile, wearing a knitted wool sweater and a thin silver necklace, 85mm lens, high detail")


@pytest.fixture(scope="module")
def sdxl_clip(comfy_base) -> None:
    write(comfy_base / "models" / "text_encoders")


@pytest.fixture(scope="module")
def photo(comfy_server, tmp_path_factory) -> str:
    folder = tmp_path_factory.mktemp("id_photos")
    Image.fromarray(scene(256, 288, [MarkerFace((60, 50, 180, 190), 0.9)])).save(folder / "id_face.png")
    return ComfyClient(comfy_server.url).upload_image(folder / "id_face.png", overwrite=True)


def loaders(dynamic: bool = False) -> dict:
    unet = ({"class_type": "FaceCLIPTest_DynamicUNETLoader", "inputs": {"unet_name": UNET_NAME}} if dynamic else
            {"class_type": "UNETLoader", "inputs": {"unet_name": UNET_NAME, "weight_dtype": "default"}})
    return {
        "unet": unet,
        "clip": {"class_type": "DualCLIPLoader", "inputs": {"clip_name1": CLIP_L_NAME, "clip_name2": CLIP_G_NAME,
                                                             "type": "sdxl", "device": "default"}},
        "vae": {"class_type": "VAELoader", "inputs": {"vae_name": VAE_NAME}},
    }


def train_graph(photo: str, name: str, method: str, steps: int = 2, resume: bool = False, overwrite: bool = False,
                stages: int = 2, seed: int = 3, gradient_checkpointing: bool = False, training_dtype: str = "fp32",
                **more) -> dict:
    """The Train node's inputs in the current form: the method's own settings as ``method.<setting>``."""
    settings = {"SeFi-IDE": {"num_tokens": 1, "stages": stages, "kv_split": True, "attention_weight": 0.003,
                             "attention_tokens": "all", "attention_layers": "input:7, input:8, middle:0, output:3"},
                "ID-EA": {"num_tokens": 2, "anchor_names": "celebrities", "reg_weight": 8e-4,
                          "adapter_scale": 0.4}}[method]
    settings.update({k: more.pop(k) for k in list(more) if k in settings})
    inputs = {
        "model": ["unet", 0], "clip": ["clip", 0], "vae": ["vae", 0], "faces": ["faces", 0], "method": method,
        **{f"method.{k}": v for k, v in settings.items()},
        "name": name, "steps": steps, "learning_rate": 0.01, "seed": seed, "resolution": 64, "batch_size": 1,
        "resume": resume, "overwrite": overwrite, "gradient_checkpointing": gradient_checkpointing,
        "training_dtype": training_dtype, "framing": "head_and_shoulders", "class_word": "person", "flip": True,
        "micro_batch": 0}
    inputs.update(more)
    return {
        **loaders(),
        "load": {"class_type": "LoadImage", "inputs": {"image": photo}},
        "detector": {"class_type": "FaceCLIPFaceDetectorLoader",
                     "inputs": {"pack": "antelopev2", "provider": "CPU", "det_size": 640}},
        "faces": {"class_type": "FaceCLIPPrepareFaces",
                  "inputs": {"face_models": ["detector", 0], "images": ["load", 0], "selection": "largest",
                             "index": 0, "on_no_face": "raise"}},
        "train": {"class_type": "FaceCLIPTrainIDEmbedding", "inputs": inputs},
    }


def saved_tensors(comfy_base, name: str) -> dict[str, torch.Tensor]:
    return load_file(str(comfy_base / "models" / "embeddings" / f"{name}.safetensors"))


def history(comfy_base, name: str) -> list[dict]:
    with safe_open(str(comfy_base / "models" / "faceclip_identity_state" / f"{name}.safetensors"), "pt") as f:
        return json.loads(f.metadata()["history"])


def dump(graph: dict, node: str, source: list, name: str) -> None:
    graph[node] = {"class_type": "FaceCLIPTest_SaveConditioning", "inputs": {"conditioning": source, "name": name}}


def encode(graph: dict, node: str, text: str) -> list:
    graph[node] = {"class_type": "CLIPTextEncode", "inputs": {"clip": ["clip", 0], "text": text}}
    return [node, 0]


@pytest.fixture(scope="module")
def client_module(comfy_server) -> ComfyClient:
    return ComfyClient(comfy_server.url, timeout=600)


@pytest.fixture(scope="module")
def idea(client_module, photo, sdxl_clip, comfy_base) -> str:
    """One ID-EA identity trained for 2 steps (used by several tests)."""
    result = client_module.run(train_graph(photo, "alice_idea", "ID-EA", steps=2))
    assert result.ok, result.describe_error()
    text = result.outputs["train"]["text"][0]
    assert "fp32" in text and "head_and_shoulders" in text and "2 training images" in text  # photo + mirror
    return "alice_idea"


def test_idea_training_writes_a_standard_sdxl_embedding(idea, comfy_base, client):
    tensors = saved_tensors(comfy_base, idea)
    assert tensors["clip_l"].shape == (2, 768) and tensors["clip_g"].shape == (2, 1280)
    assert (comfy_base / "models" / "faceclip_identity_state" / f"{idea}.safetensors").is_file()
    assert sorted(p.name for p in (comfy_base / "models" / "embeddings").iterdir() if p.name.startswith(".")) == []
    first, _ = history(comfy_base, idea)
    assert first["regulariser"] is not None and first["attention"] is None and first["loss_scale"] is None


def test_training_with_the_unet_in_fp16_uses_loss_scaling_and_loads_once_in_the_training_dtype(client, photo,
                                                                                                sdxl_clip, comfy_base):
    """What most NVIDIA GPUs do by default (ComfyUI computes SDXL in fp16), forced on the CPU. bf16 takes the same
    path without the scaler (its gradients are checked against fp32 in the core tests). The model manager gets
    one call for everything training holds: a second load could push part of the UNet off a 12 GB card. The UNet's
    weights are in the training dtype (left in another, they would be cast again at every call, each copy kept for
    backward; the text encoders compute in fp32 on the CPU, in the training dtype on a GPU), and the copies are
    released after the run rather than left holding the card's memory."""
    client.run({"loads": {"class_type": "FaceCLIPTest_ModelLoads", "inputs": {"after": str(time.time())}}})
    graph = train_graph(photo, "half_fp16", "ID-EA", steps=1, training_dtype="fp16", overwrite=True)
    graph["loads"] = {"class_type": "FaceCLIPTest_ModelLoads", "inputs": {"after": ["train", 1]}}
    result = client.run(graph)
    assert result.ok, result.describe_error()
    (step,) = history(comfy_base, "half_fp16")
    assert torch.isfinite(torch.tensor([step["loss"], step["grad_norm"]])).all() and step["grad_norm"] > 0
    assert step["loss_scale"] == 65536.0 and not step["skipped"]
    assert all(torch.isfinite(t).all() for t in saved_tensors(comfy_base, "half_fp16").values())
    text = result.outputs["train"]["text"][0]
    assert "fp16" in text and "GB of GPU memory at the peak" in text and "min on an RTX 4090 24GB" in text
    loads = result.outputs["loads"]["loads"]
    training = [call for call in loads if "ModuleDict" in call["models"]]  # the text encoders' training copies
    assert len(training) == 1, loads
    (call,) = training
    assert sorted(call["models"]) == ["ModuleDict", "SDXL"]
    assert call["force_full_load"] and call["memory_required"] > 0
    unet_dtypes, text_dtypes = (call["weight_dtypes"][call["models"].index(m)] for m in ("SDXL", "ModuleDict"))
    assert unet_dtypes == ["torch.float16"] and text_dtypes == ["torch.float32"], call
    (held,) = result.outputs["loads"]["held"]
    assert "ModuleDict" not in held and held.count("SDXL") <= 1, held


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


async def _train_and_interrupt(url: str, graph: dict, after_steps: int) -> tuple[list[dict], list[str]]:
    """Queue ``graph``; press interrupt once the train node reports ``after_steps`` steps done. Returns the
    JSON events and the train node's progress texts (binary websocket frames: event type, node-id length, node
    id, text), as the frontend receives them."""
    client_id = uuid.uuid4().hex
    events, texts = [], []
    async with aiohttp.ClientSession() as s, s.ws_connect(f"{url.replace('http', 'ws', 1)}/ws?clientId={client_id}",
                                                          max_msg_size=0) as ws:
        async with s.post(f"{url}/prompt", json={"prompt": graph, "client_id": client_id}) as r:
            r.raise_for_status()
        pressed = False
        async for msg in ws:
            if msg.type == aiohttp.WSMsgType.BINARY:
                payload = msg.data[4:]
                (n,) = struct.unpack(">I", payload[:4])
                node, text = payload[4:4 + n].decode(), payload[4 + n:].decode(errors="replace")
                if node == "train":
                    texts.append(text)
                if node == "train" and text.startswith(f"step {after_steps}/") and not pressed:
                    pressed = True
                    async with s.post(f"{url}/interrupt", json={}) as r:
                        r.raise_for_status()
                continue
            if msg.type != aiohttp.WSMsgType.TEXT:
                continue
            event = json.loads(msg.data)
            events.append(event)
            if event["type"] in ("execution_interrupted", "execution_error", "execution_success"):
                return events, texts
    return events, texts


def test_interrupt_saves_and_resume_equals_an_uninterrupted_run(idea, comfy_server, client, comfy_base, photo):
    graph = train_graph(photo, "alice_resumed", "ID-EA", steps=2)
    events, texts = asyncio.run(asyncio.wait_for(_train_and_interrupt(comfy_server.url, graph, 1), 600))
    assert events[-1]["type"] == "execution_interrupted"
    # what the node says once stopped: its last text, and the event the pack's script shows again after the
    # frontend's reset of the run
    said = "saved at step 1 of 2 \u2014 turn on resume to continue"
    assert texts[-1] == said, texts
    stopped = [e for e in events if e["type"] == "faceclip.node_notice"]
    assert stopped == [{"type": "faceclip.node_notice", "data": {"node": "train", "text": said}}], events
    state = comfy_base / "models" / "faceclip_identity_state" / "alice_resumed.safetensors"
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


def test_saved_files_have_the_permissions_of_comfyuis_own_outputs(idea, client, comfy_base):
    """The embedding and the training state are ordinary files of the user, as ComfyUI's SaveImage writes them
    under the same umask (not private temporary files)."""
    result = client.run({"img": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1,
                                                                        "color": 0}},
                         "save": {"class_type": "SaveImage", "inputs": {"images": ["img", 0],
                                                                        "filename_prefix": "mode_probe"}}})
    assert result.ok, result.describe_error()
    (image,) = result.outputs["save"]["images"]
    comfy_mode = (comfy_base / "output" / image["subfolder"] / image["filename"]).stat().st_mode & 0o777
    for path in (comfy_base / "models" / "embeddings" / f"{idea}.safetensors",
                 comfy_base / "models" / "faceclip_identity_state" / f"{idea}.safetensors"):
        assert path.stat().st_mode & 0o777 == comfy_mode, (path, oct(comfy_mode))


# ------------------------------------------------------------------ Apply ID Embedding: routing in the sampler

# stage of a sigma on SDXL's schedule (ComfyUI's model_sampling.timestep: the nearest log-sigma)
_BETAS = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=torch.float64) ** 2
_CUMPROD = torch.cumprod(1 - _BETAS, 0)
_LOG_SIGMAS = (((1 - _CUMPROD) / _CUMPROD) ** 0.5).log()


def stage_of(sigma: float, stages: int) -> int:
    t = int((_LOG_SIGMAS - torch.tensor(sigma, dtype=torch.float64).log()).abs().argmin())
    return min(int(t * stages / 1000), stages - 1)


@pytest.fixture(scope="module")
def synthetic_identities(comfy_base) -> dict[str, str]:
    """Two SeFi-IDE-layout identities (2 stages, key/value tokens) with distinct random tokens, as files."""
    names = {}
    for key, seed in (("a", 11), ("b", 12)):
        g = torch.Generator().manual_seed(seed)
        tokens = {"clip_l": torch.randn(2, 2, 1, 768, generator=g) * 0.02,
                  "clip_g": torch.randn(2, 2, 1, 1280, generator=g) * 0.02}
        names[key] = f"synthetic_{key}.safetensors"
        save_embedding(comfy_base / "models" / "embeddings" / names[key], IDEmbedding("SeFi-IDE", tokens),
                       overwrite=True)
    return names


def apply_graph(identities: dict[str, str], scenario: str, dynamic: bool, applied: bool = True) -> dict:
    """``applied=False``: the same graph with plain prompts (CLIPTextEncode, "person" for {id}) and no Apply."""
    graph = loaders(dynamic)
    prompt = "a photo of {id} wearing sunglasses" + (", " + LONG if scenario == "long_positive" else "")
    negative = "blurry" + (", " + LONG if scenario == "long_negative" else "")
    model = ["unet", 0]
    positives = []
    for key in ("a", "b") if scenario == "two_identities" else ("a",):
        if not applied:
            positives.append(encode(graph, f"plain_{key}", prompt.replace("{id}", "person")))
            continue
        graph[f"id_{key}"] = {"class_type": "FaceCLIPLoadIDEmbedding", "inputs": {"embedding_name": identities[key]}}
        graph[f"apply_{key}"] = {"class_type": "FaceCLIPApplyIDEmbedding", "inputs": {
            "model": model, "clip": ["clip", 0], "id_embedding": [f"id_{key}", 0], "prompt": prompt}}
        model = [f"apply_{key}", 0]
        graph[f"stages_{key}"] = {"class_type": "FaceCLIPTest_SaveStageContexts",
                                  "inputs": {"conditioning": [f"apply_{key}", 1], "name": f"stages_{scenario}_{key}"}}
        positives.append([f"apply_{key}", 1])
    if scenario == "two_identities":  # the left half is a, the right half b
        for i, key in enumerate(("a", "b")):
            graph[f"mask_{key}"] = {"class_type": "SolidMask", "inputs": {"value": 1.0, "width": 32, "height": 64}}
            graph[f"canvas_{key}"] = {"class_type": "SolidMask", "inputs": {"value": 0.0, "width": 64, "height": 64}}
            graph[f"place_{key}"] = {"class_type": "MaskComposite", "inputs": {
                "destination": [f"canvas_{key}", 0], "source": [f"mask_{key}", 0], "x": 32 * i, "y": 0,
                "operation": "add"}}
            graph[f"region_{key}"] = {"class_type": "ConditioningSetMask", "inputs": {
                "conditioning": positives[i], "mask": [f"place_{key}", 0], "strength": 1.0,
                "set_cond_area": "default"}}
        graph["both"] = {"class_type": "ConditioningCombine", "inputs": {
            "conditioning_1": ["region_a", 0], "conditioning_2": ["region_b", 0]}}
        positive = ["both", 0]
    else:
        positive = positives[0]
    batch = 4 if scenario == "batch_4" else 1
    graph["latent"] = {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": batch}}
    graph["probe"] = {"class_type": "FaceCLIPTest_ProbeSample", "inputs": {
        "model": model, "positive": positive, "negative": encode(graph, "neg", negative), "latent": ["latent", 0],
        "steps": 3, "cfg": 5.0}}
    return graph


@pytest.mark.parametrize(("scenario", "patcher"), [
    ("long_negative", "classic"), ("long_positive", "classic"), ("two_identities", "classic"), ("batch_4", "classic"),
    ("long_negative", "dynamic"), ("two_identities", "dynamic")])
def test_apply_routes_every_row_of_its_prompt_at_every_step_and_never_the_negative(
        client, sdxl_clip, comfy_base, synthetic_identities, scenario, patcher):
    result = client.run(apply_graph(synthetic_identities, scenario, patcher == "dynamic"))
    assert result.ok, result.describe_error()
    probe = result.outputs["probe"]
    given = probe["given"][0]
    assert given["patcher"] == ("ModelPatcherDynamic" if patcher == "dynamic" else "ModelPatcher")
    keys = ("a", "b") if scenario == "two_identities" else ("a",)
    stages = {k: load_file(str(comfy_base / "output" / f"stages_{scenario}_{k}.safetensors")) for k in keys}
    count = stages["a"]["keys"].shape[0]
    length = 154 if scenario == "long_positive" else 77
    negative_length = 154 if scenario == "long_negative" else 77
    assert stages["a"]["keys"].shape == (2, length, 2048)

    # Batched with a longer prompt, a row is repeated to the batch's length (ComfyUI's padding, which leaves
    # cross-attention unchanged): its sum is its own times the repeats, and the routed rows must follow it.
    def sums(k: str, s: int, batch_length: int) -> dict[str, float]:
        repeats = batch_length // length
        return {f: float(stages[k][f][s].sum()) * (1 if f == "pooled" else repeats)
                for f in ("keys", "values", "pooled")}

    def negative(batch_length: int) -> float:
        return given["negative"] * (batch_length // negative_length)

    seen_stages, seen_ids, identity_rows = set(), set(), 0
    for call in probe["model_calls"]:
        s = stage_of(call["sigma"], count)
        chunk = len(call["rows"]) // len(call["cond_or_uncond"])
        for i, row in enumerate(call["rows"]):
            if call["cond_or_uncond"][i // chunk] == 1:  # the negative: exactly as CLIPTextEncode made it
                assert row["context"] == pytest.approx(negative(row["length"]), rel=1e-5)
                continue
            match = [k for k in keys if row["context"] == pytest.approx(sums(k, s, row["length"])["keys"], rel=1e-5)]
            assert match, (scenario, call["sigma"], row)  # every conditional row is an identity's, at its stage
            assert row["pooled"] == pytest.approx(sums(match[0], s, row["length"])["pooled"], rel=1e-5)
            seen_stages.add(s)
            seen_ids.update(match)
            identity_rows += 1
    assert seen_stages == set(range(count)) and seen_ids == set(keys)
    assert identity_rows >= 3 * (4 if scenario == "batch_4" else len(keys))
    for call in probe["calls"]:  # and inside every cross-attention: the stage's keys and values
        s = stage_of(call["sigma"], count)
        chunk = len(call["rows"]) // len(call["cond_or_uncond"])
        for i, row in enumerate(call["rows"]):
            if call["cond_or_uncond"][i // chunk] == 1:
                assert row["same"] and row["context"] == pytest.approx(negative(call["length"]), rel=1e-5)
            else:
                expected = {k: sums(k, s, call["length"]) for k in keys}
                k = next(k for k in keys if row["context"] == pytest.approx(expected[k]["keys"], rel=1e-5))
                assert row["value"] == pytest.approx(expected[k]["values"], rel=1e-5) and not row["same"]


@pytest.mark.parametrize(("scenario", "patcher"), [("long_negative", "classic"), ("two_identities", "dynamic")])
def test_sampling_with_apply_calls_the_unet_as_often_as_without_it(client, sdxl_clip, synthetic_identities,
                                                                   scenario, patcher):
    """Apply's positive batches with the negative (and with other prompts) into the same UNet calls as plain
    prompts do: one forward per step at cfg > 1, not one for the identity and one for the rest."""
    unet_calls = {}
    for applied in (True, False):
        result = client.run(apply_graph(synthetic_identities, scenario, patcher == "dynamic", applied=applied))
        assert result.ok, result.describe_error()
        unet_calls[applied] = result.outputs["probe"]["unet_calls"]
    rows = 3 if scenario == "two_identities" else 2  # every positive entry and the negative
    assert [c["batch"] for c in unet_calls[False]] == [rows] * 3  # 3 euler steps, cond and uncond in one call
    assert unet_calls[True] == unet_calls[False]


def test_apply_positive_with_a_model_that_is_not_applys_is_an_error_not_silence(client, sdxl_clip,
                                                                                synthetic_identities):
    graph = apply_graph(synthetic_identities, "long_negative", False)
    graph["probe"]["inputs"]["model"] = ["unet", 0]  # Apply's MODEL output left unconnected
    result = client.run(graph)
    assert result.status == "error"
    assert "Connect Apply ID Embedding's MODEL output" in result.error["exception_message"]
    assert client.run(apply_graph(synthetic_identities, "long_negative", False)).ok  # the server keeps serving


def test_sefi_training_reports_both_loss_terms_and_apply_uses_what_it_learned(client, photo, sdxl_clip, comfy_base):
    graph = train_graph(photo, "alice_sefi", "SeFi-IDE", steps=2, stages=2, overwrite=True)
    graph["apply"] = {"class_type": "FaceCLIPApplyIDEmbedding", "inputs": {
        "model": ["unet", 0], "clip": ["clip", 0], "id_embedding": ["train", 0],
        "prompt": "a photo of {id} wearing sunglasses"}}
    graph["stages"] = {"class_type": "FaceCLIPTest_SaveStageContexts",
                       "inputs": {"conditioning": ["apply", 1], "name": "stages_trained"}}
    result = client.run(graph)
    assert result.ok, result.describe_error()
    tensors = saved_tensors(comfy_base, "alice_sefi")
    assert tensors["id.clip_l"].shape == (2, 2, 1, 768) and tensors["id.clip_g"].shape == (2, 2, 1, 1280)
    steps = history(comfy_base, "alice_sefi")
    assert steps[0]["attention"] == pytest.approx(0.0, abs=1e-6)  # the tokens start as the class word
    last = steps[-1]
    assert last["loss"] == pytest.approx(last["denoising"] + last["attention"], rel=1e-5)
    assert 1e-2 < last["attention"] / last["denoising"] < 1e2  # the paper's lambda is not a rounding error
    stages = load_file(str(comfy_base / "output" / "stages_trained.safetensors"))
    assert not torch.equal(stages["keys"][0], stages["keys"][1]) or not torch.equal(stages["keys"][0],
                                                                                     stages["values"][0])


def test_gradient_checkpointing_learns_the_same_tokens(client, photo, sdxl_clip, comfy_base):
    """Recomputing the UNet blocks in the backward pass (with SeFi-IDE's attention hooks in them) changes memory,
    not the result. AdamW's first step is about lr * sign(gradient), so the tokens alone would compare only the
    gradients' signs: the raw gradients are compared too, from the saved optimiser state (its first moment after
    one step is 0.1 * the gradient), and each loss term's gradient norm from the history."""
    learned, moments, stats = {}, {}, {}
    for checkpointing in (False, True):
        name = f"ckpt_{int(checkpointing)}"
        result = client.run(train_graph(photo, name, "SeFi-IDE", steps=1, gradient_checkpointing=checkpointing))
        assert result.ok, result.describe_error()
        learned[checkpointing] = saved_tensors(comfy_base, name)
        state = load_file(str(comfy_base / "models" / "faceclip_identity_state" / f"{name}.safetensors"))
        moments[checkpointing] = {k: v for k, v in state.items() if k.endswith(".exp_avg")}
        (stats[checkpointing],) = history(comfy_base, name)
    assert learned[False].keys() == learned[True].keys()
    for key, value in learned[False].items():
        assert torch.allclose(value, learned[True][key], atol=1e-5, rtol=1e-4), key
    assert moments[False] and moments[False].keys() == moments[True].keys()
    for key, value in moments[False].items():
        assert value.abs().sum() > 0, key
        assert torch.allclose(moments[True][key], value, rtol=1e-3, atol=1e-3 * float(value.abs().max())), key
    for key in ("grad_norm", "grad_norm_denoise"):
        assert stats[True][key] == pytest.approx(stats[False][key], rel=1e-3), key


# ------------------------------------------------------------------ graphs saved by release 0.1.0, float inputs

RELEASE = REPO / "tests" / "fixtures" / "release_0.1.0"


def release_graph(method: str, photo: str, name: str) -> dict:
    """The API form of release 0.1.0's workflow for ``method`` (flat inputs, 0 = the recipe's learning rate and
    batch, the method's tokens), test-sized: tiny model parts, our photo, one step at 64 px."""
    (path,) = RELEASE.glob(f"* ({method}).api.json")
    graph = json.loads(path.read_text())
    for node in graph.values():
        kind, inputs = node["class_type"], node["inputs"]
        if kind == "CheckpointLoaderSimple":
            node.update(class_type="FaceCLIPTest_SDXLParts", inputs={})
        elif kind == "LoadImage":
            inputs["image"] = photo
        elif kind == "KSampler":
            inputs["steps"] = 1
        elif kind == "EmptyLatentImage":
            inputs.update(width=64, height=64)
        elif kind == "FaceCLIPTrainIDEmbedding":
            inputs.update(name=name, steps=1, resolution=64, stages=2, overwrite=True)
    return graph


@pytest.mark.parametrize("method", ["ID-EA", "SeFi-IDE"])
def test_an_api_graph_saved_by_release_0_1_0_runs_with_the_values_it_trained_with(client, photo, sdxl_clip,
                                                                                    comfy_base, method):
    graph = release_graph(method, photo, f"release_{method}")
    (train,) = [k for k, n in graph.items() if n["class_type"] == "FaceCLIPTrainIDEmbedding"]
    assert graph[train]["inputs"]["learning_rate"] == 0 and graph[train]["inputs"]["batch_size"] == 0
    result = client.run(graph)
    assert not result.node_errors and result.ok, result.describe_error()
    text = result.outputs[train]["text"][0]
    assert f"release_{method}: {method}, 1 steps, lr 0.005, batch 1" in text, text
    tensors = saved_tensors(comfy_base, f"release_{method}")
    if method == "ID-EA":  # the method's 2 tokens
        assert tensors["clip_l"].shape == (2, 768)
    else:  # 2 stages (the flat "stages" input), key and value, 1 token
        assert tensors["id.clip_l"].shape == (2, 2, 1, 768)


def test_an_api_graph_saved_before_the_optional_inputs_still_validates(client, photo, sdxl_clip):
    """A 0.1.0 graph from before its optional inputs existed passes ComfyUI's validation (and here stops at the
    node's own check of the name, before any training)."""
    graph = release_graph("ID-EA", photo, "not a valid name")
    (train,) = [n for n in graph.values() if n["class_type"] == "FaceCLIPTrainIDEmbedding"]
    for added in ("training_dtype", "framing", "class_word", "num_tokens", "attention_tokens", "adapter_scale",
                  "flip", "micro_batch", "recipe"):
        del train["inputs"][added]
    result = client.run(graph)
    assert not result.node_errors
    assert result.status == "error" and "can't be used" in result.error["exception_message"]


@pytest.mark.parametrize(("method", "name", "value"), [
    ("ID-EA", "learning_rate", float("nan")), ("ID-EA", "reg_weight", float("nan")),
    ("ID-EA", "adapter_scale", float("nan")), ("SeFi-IDE", "attention_weight", float("nan")),
    ("ID-EA", "learning_rate", float("inf"))])
def test_a_nan_or_infinite_setting_is_refused_by_its_name(client, photo, sdxl_clip, method, name, value):
    """ComfyUI's range check refuses an infinity (above the input's max) by name but lets NaN through: the node
    refuses NaN itself, naming the input, before anything is loaded."""
    result = client.run(train_graph(photo, "never_written", method, **{name: value}))
    assert not result.ok
    if math.isnan(value):
        assert result.status == "error", result.describe_error()
        assert result.error["exception_message"].startswith(f"{name} is nan: enter a finite number"), result.error
    else:
        assert result.status == "rejected" and name in result.describe_error(), result.describe_error()
