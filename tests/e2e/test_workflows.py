"""Every shipped workflow, converted from the UI format to the API format and run end to end on CPU."""
from __future__ import annotations

import io
import json

import pytest
from PIL import Image

from faceclip_headless.shipped_workflows import BY_KEY, SHIPPED
from faceclip_headless.workflow import find_nodes, to_api
from tests.conftest import REPO
from tests.harness.fake_insightface import MarkerFace, scene

WORKFLOWS = sorted((REPO / "workflows").glob("*.json"))


def test_the_pack_ships_the_promised_workflows():
    assert WORKFLOWS == sorted(w.path for w in SHIPPED)  # no stray file, none missing
    assert WORKFLOWS[0] == BY_KEY["basic"].path  # sorted by name, the one-photo portrait comes first
    likeness = json.loads(BY_KEY["likeness_check"].path.read_text())
    assert any(n["type"] == "PreviewAny" for n in likeness["nodes"])  # the score is visible, not only logged
    for path in WORKFLOWS:
        assert path.with_suffix(".jpg").is_file(), f"{path.name} has no .jpg thumbnail"


@pytest.fixture(scope="module")
def photo_names(comfy_server, tmp_path_factory) -> list[str]:
    from faceclip_headless.client import ComfyClient

    client = ComfyClient(comfy_server.url)
    folder = tmp_path_factory.mktemp("workflow_photos")
    names = []
    for i, box in enumerate([(60, 50, 180, 190), (90, 40, 200, 170)]):
        path = folder / f"workflow_person_{i}.png"
        Image.fromarray(scene(256, 256, [MarkerFace(box, 0.9)])).save(path)
        names.append(client.upload_image(path, overwrite=True))
    return names


def make_small(prompt: dict, photos: list[str]) -> None:
    """Same graph, test-sized: our photos, 2 steps, 64x64 latents; the models already carry the shipped names."""
    for i, node_id in enumerate(find_nodes(prompt, "LoadImage")):
        prompt[node_id]["inputs"]["image"] = photos[i % len(photos)]
    for node_id in find_nodes(prompt, "KSampler"):
        prompt[node_id]["inputs"]["steps"] = 2
    for node_id in find_nodes(prompt, "EmptyLatentImage"):
        prompt[node_id]["inputs"].update(width=64, height=64)
    for node_id in find_nodes(prompt, "PrimitiveInt"):  # FLUX: the one place the size is set (Width, Height)
        if prompt[node_id]["_meta"]["title"] in ("Width", "Height"):
            prompt[node_id]["inputs"]["value"] = 64
    for node_id in find_nodes(prompt, "CheckpointLoaderSimple"):  # no full SDXL checkpoint here: tiny parts
        prompt[node_id] = {"class_type": "FaceCLIPTest_SDXLParts", "inputs": {}}
    for node_id in find_nodes(prompt, "FaceCLIPTrainIDEmbedding"):
        inputs = prompt[node_id]["inputs"]
        inputs.update(steps=1, resolution=64, overwrite=True, batch_size=1)
        if "method.stages" in inputs:
            inputs["method.stages"] = 2


@pytest.mark.parametrize("path", WORKFLOWS, ids=[p.stem for p in WORKFLOWS])
def test_workflow_runs_end_to_end(client, path, photo_names):
    info = client.object_info()
    workflow = json.loads(path.read_text())
    for node in workflow["nodes"]:
        module = info.get(node["type"], {}).get("python_module", "")
        assert node["type"] in ("MarkdownNote", "Note") or module in ("nodes", "custom_nodes.comfyui-faceclip") \
            or module.startswith("comfy_extras"), f"{path.name}: {node['type']} is neither core nor this pack's"
    prompt = to_api(workflow, info)
    make_small(prompt, photo_names)
    (sampler,) = find_nodes(prompt, "KSampler")
    # observe the conditioning that reaches KSampler
    prompt["probe"] = {"class_type": "FaceCLIPTest_ConditioningShapes",
                       "inputs": {"conditioning": prompt[sampler]["inputs"]["positive"]}}
    prompt[sampler]["inputs"]["positive"] = ["probe", 0]
    result = client.run(prompt)
    assert result.ok, result.describe_error()
    flux = bool(find_nodes(prompt, "FaceCLIPFaceT5Encode"))
    for entry in result.outputs["probe"]["conditioning"]:
        if flux:  # FaceT5's T5 and CLIP-L widths in the tiny test encoder; FLUX's distilled guidance the official 1.0
            assert entry["shape"][1:] == [512, 64] and entry["extras"]["pooled_output"][1:] == [128], entry
            assert entry["extras"]["guidance"] == "1.0", entry  # repr of the float
        else:
            assert entry["shape"][1:] == [77, 2048] and entry["extras"]["pooled_output"][1:] == [1280], entry
        assert entry["finite"]
    if flux:  # the size set once reaches both the schedule and the latent
        (schedule,) = find_nodes(prompt, "ModelSamplingFlux")
        (latent,) = find_nodes(prompt, "EmptySD3LatentImage")
        for name in ("width", "height"):
            source = prompt[schedule]["inputs"][name]
            assert source == prompt[latent]["inputs"][name] and prompt[source[0]]["inputs"]["value"] == 64
    (save,) = find_nodes(prompt, "SaveImage")
    image = result.images(save)[0]
    png = client.view(image)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert Image.open(io.BytesIO(png)).size == (64, 64)  # the size the graph was given
    for node_id in find_nodes(prompt, "PreviewAny"):  # the likeness score, shown on the graph as text
        (text,) = result.outputs[node_id]["text"]
        assert 0.0 <= float(text) <= 1.0, text
