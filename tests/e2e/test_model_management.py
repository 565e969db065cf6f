"""The FaceCLIP encoder under ComfyUI's model management, in a real server: the classic patcher and the dynamic
VRAM patcher (ComfyUI's default on NVIDIA GPUs) give the same conditioning; the encoder is held loaded after an
encode and given up when the model manager needs the memory (as when the UNet loads), then reloads on the next
encode; a partial load (--lowvram, a full GPU) computes the same numbers, every weight being cast per layer."""
from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from tests.e2e.conftest import TINY_FACECLIP

PROMPT = "a portrait photo of a woman in a red coat, soft light"


def encode_graph(loader: dict, name: str, free: bool = False) -> dict:
    graph = {
        "faceclip": loader,
        "encode": {"class_type": "FaceCLIPTextEncode", "inputs": {"faceclip": ["faceclip", 0], "text": PROMPT}},
        "save": {"class_type": "FaceCLIPTest_SaveConditioning", "inputs": {"conditioning": ["encode", 0],
                                                                            "name": name}},
        "state": {"class_type": "FaceCLIPTest_ModelManagerState",
                  "inputs": {"faceclip": ["faceclip", 0], "after": ["encode", 0], "free": free}},
    }
    return graph


CLASSIC = {"class_type": "FaceCLIPLoader", "inputs": {"encoder_name": TINY_FACECLIP, "weight_dtype": "auto",
                                                     "device": "auto"}}
DYNAMIC = {"class_type": "FaceCLIPTest_DynamicFaceCLIPLoader", "inputs": {"encoder_name": TINY_FACECLIP}}


@pytest.mark.parametrize(("loader", "patcher"), [(CLASSIC, "ModelPatcher"), (DYNAMIC, "ModelPatcherDynamic")])
def test_both_patcher_classes_encode_the_same_and_give_memory_back(client, comfy_base, loader, patcher):
    name = f"mm_{patcher}"
    result = client.run(encode_graph(loader, name))
    assert result.ok, result.describe_error()
    (state,) = result.outputs["state"]["state"]
    assert state["patcher"] == patcher and state["dynamic"] == (patcher == "ModelPatcherDynamic")
    assert state["held"]  # loaded for the next encode, not forced in or out
    if patcher == "ModelPatcher":
        assert state["loaded"] == state["size"] > 0
    ours = load_file(str(comfy_base / "output" / f"{name}.safetensors"))
    if patcher == "ModelPatcherDynamic":
        classic = load_file(str(comfy_base / "output" / "mm_ModelPatcher.safetensors"))
        assert torch.allclose(ours["cond"], classic["cond"], atol=1e-6)
        assert torch.allclose(ours["pooled"], classic["pooled"], atol=1e-6)
        return  # unloading: ComfyUI's dynamic patcher asserts a non-CPU device there (it never runs on one)

    # The UNet needs all the memory: the model manager takes the encoder out ...
    graph = encode_graph(loader, name + "_again", free=True)
    graph["encode"]["inputs"]["text"] = PROMPT + ", again"  # not cached: encodes, then frees
    freed = client.run(graph)
    assert freed.ok, freed.describe_error()
    (state,) = freed.outputs["state"]["state"]
    assert not state["held"] and state["loaded"] == 0
    # ... and the next encode loads it again and gives the same conditioning
    again = client.run(encode_graph(loader, name + "_reloaded"))
    assert again.ok, again.describe_error()
    reloaded = load_file(str(comfy_base / "output" / f"{name}_reloaded.safetensors"))
    assert torch.equal(reloaded["cond"], ours["cond"])


def test_a_partial_load_computes_the_same_conditioning(client, comfy_base):
    graph = encode_graph(CLASSIC, "mm_full")
    graph["partial"] = {"class_type": "FaceCLIPTest_PartialLoadEncode",
                        "inputs": {"faceclip": ["faceclip", 0], "text": PROMPT, "fraction": 0.6,
                                   "name": "mm_partial"}}
    result = client.run(graph)
    assert result.ok, result.describe_error()
    (state,) = result.outputs["partial"]["state"]
    assert state["lowvram"] and state["loaded"] <= state["budget"] < state["size"]
    full = load_file(str(comfy_base / "output" / "mm_full.safetensors"))
    partial = load_file(str(comfy_base / "output" / "mm_partial.safetensors"))
    assert torch.allclose(partial["cond"], full["cond"], atol=1e-5)
    assert torch.allclose(partial["pooled"], full["pooled"], atol=1e-5)
