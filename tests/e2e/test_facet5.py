"""FaceT5-FLUX in a real ComfyUI: photo -> Prepare Faces -> FaceT5 Encode -> core FLUX sampling (UNETLoader on a
tiny FLUX-dev DiT in diffusers names, ModelSamplingFlux, KSampler euler/simple cfg 3.5) -> PNG.

The tiny encoder is the parity fixture's (T5 width 64, CLIP-L width 128), so FLUX's [B,512,4096] / [B,768] slots
are [B,512,64] / [B,128] here. What the DiT receives is recorded inside the sampler (FaceCLIPTest_RecordModelCalls).
"""
from __future__ import annotations

import io
import re
import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from faceclip_headless.client import ComfyClient
from tests.e2e.conftest import TINY_FACECLIP
from tests.harness.fake_insightface import MarkerFace, scene, upload_scenes
from tests.harness.server_env import TINY_FACET5
from tests.harness.tiny_facet5 import CLIP_WIDTH, T5_WIDTH
from tests.harness.tiny_models import FLUX_DIT_NAME, FLUX_VAE_NAME

PROMPT = "A woman wearing a blue denim shirt and khaki pants, on a rocky desert plateau"  # the official demo's
COND, UNCOND = 0, 1  # transformer_options["cond_or_uncond"] values


@pytest.fixture(scope="module")
def photos(comfy_server, tmp_path_factory) -> dict[str, str]:
    """Marker-face photos the stand-in detector finds (different marker colours and backgrounds give different
    aligned crops), and one without a face."""
    client = ComfyClient(comfy_server.url)
    folder = tmp_path_factory.mktemp("facet5_photos")
    pictures = {
        "t5_face_a.png": scene(256, 288, [MarkerFace((60, 50, 180, 190), 0.9)], background=90),
        "t5_face_b.png": scene(256, 288, [MarkerFace((80, 40, 210, 200), 0.7)], background=170),
        "t5_no_face.png": scene(256, 288, []),
    }
    return upload_scenes(client, folder, pictures)


def facet5_graph(image: str, prompt: str = PROMPT, name: str = "t5", seed: int = 1, size: int = 64,
                 encoder: str = TINY_FACET5, on_no_face: str = "raise", identity: str = "per_face",
                 negative: str | None = None, free: bool = False, second_image: str | None = None,
                 weight_dtype: str = "auto") -> dict:
    """The official FaceT5-FLUX settings mapped onto ComfyUI's FLUX graph (fact sheet §7), at 64 px and 2 steps."""
    encode = {"facet5": ["facet5", 0], "faces": ["faces", 0], "prompt": prompt, "identity": identity}
    if negative is not None:
        encode["negative"] = negative  # left out: the node's default, the official FLUX negative
    graph = {
        "load": {"class_type": "LoadImage", "inputs": {"image": image}},
        "detector": {"class_type": "FaceCLIPFaceDetectorLoader",
                     "inputs": {"pack": "auto", "provider": "CPU", "det_size": 640}},
        "faces": {"class_type": "FaceCLIPPrepareFaces",
                  "inputs": {"face_models": ["detector", 0], "images": ["load", 0], "selection": "largest",
                             "index": 0, "on_no_face": on_no_face}},
        "facet5": {"class_type": "FaceCLIPFaceT5Loader",
                   "inputs": {"encoder_name": encoder, "weight_dtype": weight_dtype, "device": "auto"}},
        "encode": {"class_type": "FaceCLIPFaceT5Encode", "inputs": encode},
        "pos_shapes": {"class_type": "FaceCLIPTest_ConditioningShapes", "inputs": {"conditioning": ["encode", 0]}},
        "neg_shapes": {"class_type": "FaceCLIPTest_ConditioningShapes", "inputs": {"conditioning": ["encode", 1]}},
        "save_pos": {"class_type": "FaceCLIPTest_SaveConditioning",
                     "inputs": {"conditioning": ["encode", 0], "name": f"{name}_pos"}},
        "save_neg": {"class_type": "FaceCLIPTest_SaveConditioning",
                     "inputs": {"conditioning": ["encode", 1], "name": f"{name}_neg"}},
        "unet": {"class_type": "UNETLoader", "inputs": {"unet_name": FLUX_DIT_NAME, "weight_dtype": "default"}},
        "shift": {"class_type": "ModelSamplingFlux",
                  "inputs": {"model": ["unet", 0], "max_shift": 1.15, "base_shift": 0.5, "width": size,
                             "height": size}},
        "record": {"class_type": "FaceCLIPTest_RecordModelCalls", "inputs": {"model": ["shift", 0], "name": name}},
        "latent": {"class_type": "EmptySD3LatentImage", "inputs": {"width": size, "height": size, "batch_size": 1}},
        "sample": {"class_type": "KSampler", "inputs": {
            "model": ["record", 0], "positive": ["pos_shapes", 0], "negative": ["neg_shapes", 0],
            "latent_image": ["latent", 0], "seed": seed, "steps": 2, "cfg": 3.5, "sampler_name": "euler",
            "scheduler": "simple", "denoise": 1.0}},
        "calls": {"class_type": "FaceCLIPTest_ModelCalls", "inputs": {"latent": ["sample", 0], "name": name}},
        "state": {"class_type": "FaceCLIPTest_FaceT5State",
                  "inputs": {"facet5": ["facet5", 0], "after": ["calls", 0], "free": free}},
        "vae": {"class_type": "VAELoader", "inputs": {"vae_name": FLUX_VAE_NAME}},
        "decode": {"class_type": "VAEDecode", "inputs": {"samples": ["state", 0], "vae": ["vae", 0]}},
        "save": {"class_type": "SaveImage", "inputs": {"images": ["decode", 0], "filename_prefix": "facet5_e2e"}},
    }
    if second_image is not None:  # two photos of one person as one IMAGE batch: two face rows
        graph["load2"] = {"class_type": "LoadImage", "inputs": {"image": second_image}}
        graph["batch"] = {"class_type": "ImageBatch", "inputs": {"image1": ["load", 0], "image2": ["load2", 0]}}
        graph["faces"]["inputs"]["images"] = ["batch", 0]
    return graph


def encode_only(graph: dict) -> dict:
    """The graph up to the saved conditionings (no sampling)."""
    keep = ("load", "load2", "batch", "detector", "faces", "facet5", "encode", "save_pos", "save_neg")
    return {k: v for k, v in graph.items() if k in keep}


def saved(comfy_base, name: str) -> dict[str, torch.Tensor]:
    return load_file(str(comfy_base / "output" / f"{name}.safetensors"))


def test_photo_to_flux_image_with_the_official_conditioning(client, photos, comfy_base):
    result = client.run(facet5_graph(photos["t5_face_a.png"], name="t5_main"))
    assert result.ok, result.describe_error()
    data = client.view(result.images("save")[0])
    pixels = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    assert pixels.shape == (64, 64, 3) and pixels.std() > 1.0, "a flat image means NaN or nothing was sampled"

    # FLUX conditioning as the official pipeline hands it over: [1,512,T5] + pooled CLIP-L, distilled guidance 1.0
    (pos,), (neg,) = result.outputs["pos_shapes"]["conditioning"], result.outputs["neg_shapes"]["conditioning"]
    for c in (pos, neg):
        assert c["shape"] == [1, 512, T5_WIDTH] and c["finite"] and c["dtype"] == "torch.float32"
        assert c["extras"] == {"pooled_output": [1, CLIP_WIDTH], "guidance": "1.0"}

    # ... and what the DiT receives inside KSampler: both CFG passes, each with its conditioning and guidance 1.0
    calls = result.outputs["calls"]["model_calls"]
    assert len(calls) >= 2  # 2 steps of euler
    rows = [(who, call, i) for call in calls for i, who in enumerate(call["cond_or_uncond"])]
    assert {who for who, _, _ in rows} == {COND, UNCOND}  # cfg 3.5: true CFG against the negative
    for call in calls:
        b = call["context_shape"][0]
        assert call["context_shape"] == [b, 512, T5_WIDTH] and call["y_shape"] == [b, CLIP_WIDTH]
        assert call["guidance"] == [1.0] * b
    given = {COND: float(saved(comfy_base, "t5_main_pos")["cond"].sum()),
             UNCOND: float(saved(comfy_base, "t5_main_neg")["cond"].sum())}
    for who, call, i in rows:
        assert call["context_sums"][i] == pytest.approx(given[who], rel=1e-5, abs=1e-3)

    # after sampling on the CPU the manager holds both (nothing is ever freed for a CPU load)
    (state,) = result.outputs["state"]["state"]
    encoder = state["before"]["encoder"]
    assert encoder["patcher"] == "ModelPatcher" and encoder["model"] == "FaceT5Encoder"
    assert encoder["held"] and encoder["loaded"] == encoder["size"] > 0
    assert [d["model"] for d in state["before"]["diffusion"]] == ["Flux"]


def test_the_encoder_gives_way_when_the_dit_needs_the_memory_and_reloads(client, photos, comfy_base):
    graph = facet5_graph(photos["t5_face_a.png"], name="t5_free", prompt=PROMPT + ", evening", free=True)
    result = client.run(graph)
    assert result.ok, result.describe_error()
    (state,) = result.outputs["state"]["state"]
    assert state["before"]["encoder"]["held"]
    after = state["after_free"]
    assert not after["encoder"]["held"] and after["encoder"]["loaded"] == 0  # offloaded by the model manager
    assert [d["model"] for d in after["diffusion"]] == ["Flux"] and after["diffusion"][0]["held"]

    # the next encode loads the encoder again and gives the same conditioning (a new negative: not cached)
    again = encode_only(facet5_graph(photos["t5_face_a.png"], name="t5_reloaded", prompt=PROMPT + ", evening",
                                     negative="blurry"))
    done = client.run(again)
    assert done.ok, done.describe_error()
    assert torch.equal(saved(comfy_base, "t5_reloaded_pos")["cond"], saved(comfy_base, "t5_free_pos")["cond"])


def test_a_face_row_batch_equals_its_rows_encoded_alone(client, photos, comfy_base):
    a, b = photos["t5_face_a.png"], photos["t5_face_b.png"]
    for name, graph in (("t5_rows", facet5_graph(a, name="t5_rows", second_image=b)),
                        ("t5_row0", facet5_graph(a, name="t5_row0")), ("t5_row1", facet5_graph(b, name="t5_row1")),
                        ("t5_avg", facet5_graph(a, name="t5_avg", second_image=b, identity="average"))):
        result = client.run(encode_only(graph))
        assert result.ok, (name, result.describe_error())
    both, row0, row1 = (saved(comfy_base, n) for n in ("t5_rows_pos", "t5_row0_pos", "t5_row1_pos"))
    assert both["cond"].shape == (2, 512, T5_WIDTH) and both["pooled"].shape == (2, CLIP_WIDTH)
    assert not torch.allclose(row0["cond"], row1["cond"], atol=1e-3)  # two different faces
    for i, alone in enumerate((row0, row1)):  # unlike the official code, rows of one call do not mix
        assert torch.allclose(both["cond"][i:i + 1], alone["cond"], atol=1e-5)
        assert torch.allclose(both["pooled"][i:i + 1], alone["pooled"], atol=1e-5)
    averaged = saved(comfy_base, "t5_avg_pos")
    assert torch.allclose(averaged["cond"], both["cond"].mean(0, keepdim=True), atol=1e-5)


def test_a_text_only_row_is_the_official_face_free_encoding(client, photos, comfy_base):
    # The negative is the face-free encoding of its text, so with negative = prompt both outputs are equal.
    prompt = "A man on a rocky desert plateau"
    graph = facet5_graph(photos["t5_no_face.png"], name="t5_text_only", prompt=prompt, negative=prompt,
                         on_no_face="text_only")
    result = client.run(encode_only(graph))
    assert result.ok, result.describe_error()
    pos, neg = saved(comfy_base, "t5_text_only_pos"), saved(comfy_base, "t5_text_only_neg")
    assert pos["cond"].shape == (1, 512, T5_WIDTH)
    assert torch.allclose(pos["cond"], neg["cond"], atol=1e-6) and torch.allclose(pos["pooled"], neg["pooled"],
                                                                                   atol=1e-6)


def test_each_encoder_file_given_to_the_other_loader_names_the_right_loader(client, photos, comfy_base):
    sdxl_to_t5 = client.run(encode_only(facet5_graph(photos["t5_face_a.png"], name="t5_wrong", encoder=TINY_FACECLIP)))
    assert sdxl_to_t5.status == "error" and sdxl_to_t5.error["node_id"] == "facet5"
    # what to do comes first, the key lists after
    assert sdxl_to_t5.error["exception_message"].startswith(
        'this file is a FaceCLIP-SDXL encoder (face_clip_encoder.pt): load it with the "Load FaceCLIP" node, not '
        'the "Load FaceT5" node.')

    t5_to_sdxl = client.run({
        "faceclip": {"class_type": "FaceCLIPLoader",
                     "inputs": {"encoder_name": TINY_FACET5, "weight_dtype": "fp32", "device": "auto"}},
        "encode": {"class_type": "FaceCLIPTextEncode", "inputs": {"faceclip": ["faceclip", 0], "text": "a person"}},
        "shapes": {"class_type": "FaceCLIPTest_ConditioningShapes", "inputs": {"conditioning": ["encode", 0]}},
    })
    assert t5_to_sdxl.status == "error" and t5_to_sdxl.error["node_id"] == "faceclip"
    assert t5_to_sdxl.error["exception_message"].startswith(
        "this file is a FaceT5-FLUX encoder (face_t5_encoder.pt, FaceCLIP's FLUX variant): load it with the "
        '"Load FaceT5" node, not the "Load FaceCLIP" node.')

    # FaceT5's DiT put into the faceclip folder by mistake: sent to the core loader
    dit = comfy_base / "models" / "faceclip" / "dit_by_mistake.safetensors"
    shutil.copy(comfy_base / "models" / "diffusion_models" / FLUX_DIT_NAME, dit)
    try:
        wrong = client.run(encode_only(facet5_graph(photos["t5_face_a.png"], name="t5_dit", encoder=dit.name)))
        assert wrong.status == "error" and wrong.error["exception_message"].startswith(
            "this file is a FLUX diffusion model (such as FaceT5's dit.pt): load it with ComfyUI's Load Diffusion "
            "Model node")
    finally:
        dit.unlink()
    assert client.run(encode_only(facet5_graph(photos["t5_face_a.png"], name="t5_after_errors"))).ok


def test_8bit_weights_hold_less_memory_and_give_close_conditioning(client, photos, comfy_base):
    """weight_dtype fp8_e4m3fn: Linear weights in 8 bits, the rest bf16, computed in fp32 through ComfyUI's casting
    layers; the model manager sees the smaller size. Its cost against bf16 storage, measured on this fixture in
    the core tests (rel. L2 0.145), bounds the difference here."""
    runs = {}
    for dtype in ("bf16", "fp8_e4m3fn"):
        result = client.run(facet5_graph(photos["t5_face_a.png"], name=f"t5_{dtype}", weight_dtype=dtype))
        assert result.ok, result.describe_error()
        (state,) = result.outputs["state"]["state"]
        runs[dtype] = (state["before"]["encoder"]["size"], saved(comfy_base, f"t5_{dtype}_pos"))
    (size16, cond16), (size8, cond8) = runs["bf16"], runs["fp8_e4m3fn"]
    assert size8 < size16
    for key in ("cond", "pooled"):
        assert torch.isfinite(cond8[key]).all()
        rel = float((cond8[key] - cond16[key]).norm() / cond16[key].norm())
        assert 0 < rel < 0.25, (key, rel)


def test_the_schemas_offer_what_the_help_pages_describe(client):
    info = client.object_info()
    loader, encode = info["FaceCLIPFaceT5Loader"], info["FaceCLIPFaceT5Encode"]
    assert loader["category"] == encode["category"] == "FaceCLIP"
    required = loader["input"]["required"]
    # the faceclip folder is shared with Load FaceCLIP: each loader lists (and so defaults to) its own kind first
    # (the folder also holds a copy of the SDXL encoder under the workflows' name, first alphabetically)
    t5_options = required["encoder_name"][1]["options"]
    assert t5_options[0] == TINY_FACET5 and t5_options.index(TINY_FACET5) < t5_options.index(TINY_FACECLIP)
    sdxl_options = info["FaceCLIPLoader"]["input"]["required"]["encoder_name"][1]["options"]
    assert sdxl_options.index(TINY_FACECLIP) < sdxl_options.index(TINY_FACET5)
    assert required["weight_dtype"][1]["options"] == ["auto", "fp32", "bf16", "fp16", "fp8_e4m3fn"]
    assert loader["output"] == ["FACECLIP_FACET5"] and encode["output"] == ["CONDITIONING", "CONDITIONING"]
    assert encode["output_name"] == ["positive", "negative"]
    assert encode["input"]["optional"]["negative"][1]["default"].startswith("digital painting, 3d render")
    for spec in (loader, encode):
        assert {"flux", "identity", "likeness", "portrait"} <= set(spec["search_aliases"])


def test_a_prompt_cut_to_512_t5_tokens_is_said_on_the_node(client, photos):
    long_prompt = PROMPT + ", " + ", ".join(f"detail number {i}" for i in range(150))  # ~900 T5 tokens
    result = client.run(encode_only(facet5_graph(photos["t5_face_a.png"], prompt=long_prompt, name="t5_long")))
    assert result.ok, result.describe_error()
    (said,) = result.node_texts("encode")  # what the frontend draws on the node, as the websocket carries it
    assert re.fullmatch(r"Shorten the prompt: it is \d+ tokens long, and FaceT5's T5 reads only the first 512; "
                        r"the rest is ignored\.", said), said


def test_the_official_negative_runs_without_a_warning(client, photos, comfy_server):
    """The shipped negative is 109 CLIP-L tokens: CLIP-L (FLUX's pooled summary) reads 77 of them, as in the
    official pipeline, while T5 reads it whole. Nothing to warn about, on the node or in the log."""
    logged = len(comfy_server.log_text())
    result = client.run(encode_only(facet5_graph(photos["t5_face_a.png"], prompt="A woman, smiling", name="t5_neg")))
    assert result.ok, result.describe_error()
    assert "encode" in result.executed and result.node_texts("encode") == []
    new_log = comfy_server.log_text()[logged:]
    assert "tokens long" not in new_log, new_log
