"""First end-to-end job: FaceCLIP conditioning into ComfyUI's native SDXL sampling, in a real server."""
from __future__ import annotations

import io

import numpy as np
from PIL import Image

from tests.e2e.conftest import TINY_FACECLIP, UNET_NAME, VAE_NAME

# Node ids are permanent (saved workflows refer to them); this list guards against renames.
PACK_NODES = {"FaceCLIPLoader", "FaceCLIPFaceDetectorLoader", "FaceCLIPPrepareFaces", "FaceCLIPEncode",
              "FaceCLIPTextEncode", "FaceCLIPFaceSimilarity",
              "FaceCLIPTrainIDEmbedding", "FaceCLIPLoadIDEmbedding", "FaceCLIPApplyIDEmbedding",
              "FaceCLIPFaceT5Loader", "FaceCLIPFaceT5Encode"}


def text_to_image_graph(prompt: str, negative: str, seed: int = 1, size: int = 64) -> dict:
    return {
        "unet": {"class_type": "UNETLoader", "inputs": {"unet_name": UNET_NAME, "weight_dtype": "default"}},
        "vae": {"class_type": "VAELoader", "inputs": {"vae_name": VAE_NAME}},
        "faceclip": {"class_type": "FaceCLIPLoader",
                     "inputs": {"encoder_name": TINY_FACECLIP, "weight_dtype": "fp32", "device": "auto"}},
        "pos": {"class_type": "FaceCLIPTextEncode", "inputs": {"faceclip": ["faceclip", 0], "text": prompt}},
        "neg": {"class_type": "FaceCLIPTextEncode", "inputs": {"faceclip": ["faceclip", 0], "text": negative}},
        "latent": {"class_type": "EmptyLatentImage", "inputs": {"width": size, "height": size, "batch_size": 1}},
        "sample": {"class_type": "KSampler", "inputs": {
            "model": ["unet", 0], "positive": ["pos", 0], "negative": ["neg", 0], "latent_image": ["latent", 0],
            "seed": seed, "steps": 2, "cfg": 5.0, "sampler_name": "euler", "scheduler": "ddim_uniform",
            "denoise": 1.0}},
        "decode": {"class_type": "VAEDecode", "inputs": {"samples": ["sample", 0], "vae": ["vae", 0]}},
        "save": {"class_type": "SaveImage", "inputs": {"images": ["decode", 0], "filename_prefix": "faceclip_e2e"}},
    }


def test_object_info_lists_every_node_of_the_pack(client):
    info = client.object_info()
    ours = {name for name, schema in info.items() if "comfyui-faceclip" in schema.get("python_module", "")}
    assert ours == PACK_NODES
    for node_id in ours:  # every node has a help page, served by ComfyUI from the pack's web/docs
        page = client.get_bytes(f"/extensions/comfyui-faceclip/docs/{node_id}.md").decode()
        assert page.startswith("# ") and len(page) > 200, node_id
    for node_id in ours:  # every input explains itself on hover
        for section in ("required", "optional"):
            for name, spec in info[node_id]["input"].get(section, {}).items():
                assert len(spec) > 1 and spec[1].get("tooltip"), f"{node_id}.{name} has no tooltip"
    loader = info["FaceCLIPLoader"]["input"]["required"]
    assert TINY_FACECLIP in loader["encoder_name"][1]["options"]  # the registered faceclip folder is listed


def test_faceclip_conditioning_samples_a_png_through_core_nodes(client):
    result = client.run(text_to_image_graph("a portrait photo of a person", "blurry, low quality"))
    assert result.ok, result.describe_error()
    images = result.images("save")
    assert len(images) == 1
    png = client.view(images[0])
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    pixels = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
    assert pixels.shape == (64, 64, 3)
    assert pixels.std() > 1.0, "a flat image means the sampler produced NaN or nothing"


def test_new_seed_reuses_the_cached_encoding(client):
    client.run(text_to_image_graph("a person by the sea", "blurry", seed=1))
    again = client.run(text_to_image_graph("a person by the sea", "blurry", seed=2))
    assert again.ok, again.describe_error()
    assert {"faceclip", "pos", "neg"} <= set(again.cached)
    assert "sample" in again.executed


def test_a_bad_graph_is_reported_and_the_server_keeps_serving(client):
    graph = text_to_image_graph("a person", "blurry")
    graph["faceclip"]["inputs"]["encoder_name"] = "no_such_encoder.safetensors"
    rejected = client.run(graph)
    assert rejected.status == "rejected"
    assert "faceclip" in rejected.node_errors
    ok = client.run(text_to_image_graph("a person", "blurry", seed=3))
    assert ok.ok, ok.describe_error()
