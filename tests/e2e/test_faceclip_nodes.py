"""The FaceCLIP nodes in a real ComfyUI: photo -> faces -> FaceCLIP conditioning -> core KSampler -> PNG."""
from __future__ import annotations

import io
import re
import shutil

import numpy as np
import pytest
from PIL import Image

from faceclip_core import OFFICIAL_NEGATIVE
from faceclip_headless.client import ComfyClient
from tests.e2e.graphs import face_graph, shapes
from tests.harness.fake_insightface import MarkerFace, scene, upload_scenes

BIG, SMALL = MarkerFace((40, 60, 140, 180), 0.8), MarkerFace((200, 40, 240, 90), 0.95)


@pytest.fixture(scope="module")
def photos(comfy_server, tmp_path_factory) -> dict[str, str]:
    """Photos in the server's input folder: marker faces the stand-in detector finds, and one without a face."""
    client = ComfyClient(comfy_server.url)
    folder = tmp_path_factory.mktemp("photos")
    # ComfyUI caches node outputs (and their UI payloads) per input, so tests that read Prepare Faces' payload
    # get photos of their own.
    pictures = {
        "two_faces.png": scene(256, 288, [BIG, SMALL]),
        "two_faces_picker.png": scene(256, 288, [BIG, SMALL]),
        "two_faces_index.png": scene(256, 288, [BIG, SMALL]),
        "one_face.png": scene(256, 288, [MarkerFace((60, 50, 180, 190), 0.9)]),
        "no_face.png": scene(256, 288, []),
    }
    return upload_scenes(client, folder, pictures)


def png_pixels(client, result, node="save") -> np.ndarray:
    images = result.images(node)
    assert images, result.outputs
    data = client.view(images[0])
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def test_photo_to_portrait_with_sdxl_shaped_conditioning(client, photos):
    result = client.run(face_graph(photos["two_faces.png"]))
    assert result.ok, result.describe_error()
    assert png_pixels(client, result).shape == (64, 64, 3)
    (pos,), (neg,) = shapes(result), shapes(result, "neg_shapes")
    assert pos["shape"] == [1, 77, 2048] and neg["shape"] == [1, 77, 2048]
    assert pos["extras"] == {"pooled_output": [1, 1280]} == neg["extras"]  # no size keys: latent size is used
    assert pos["finite"] and neg["finite"] and pos["dtype"] == "torch.float32"


def test_prepare_faces_reports_every_face_for_the_picker(client, photos):
    result = client.run(face_graph(photos["two_faces_picker.png"]))
    assert result.ok, result.describe_error()
    ui = result.outputs["faces"]
    (image,) = ui["faceclip_faces"]
    assert image["status"] == "ok" and len(image["faces"]) == 2
    chosen = image["faces"][image["chosen"]]
    assert chosen["box"] == pytest.approx([40, 60, 140, 180], abs=2)  # largest by default
    for face in image["faces"]:
        thumb = Image.open(io.BytesIO(client.view(face["thumbnail"])))
        assert thumb.size == (112, 112)
    preview = Image.open(io.BytesIO(client.view(ui["images"][0])))
    assert preview.size == (288, 256)


def test_index_selection_uses_the_picked_face(client, photos):
    largest = client.run(face_graph(photos["two_faces_index.png"]))
    ordered = largest.outputs["faces"]["faceclip_faces"][0]["faces"]
    small = next(f["index"] for f in ordered if f["box"][0] > 190)
    picked = client.run(face_graph(photos["two_faces_index.png"], selection="index", index=small))
    assert picked.ok, picked.describe_error()
    assert picked.outputs["faces"]["faceclip_faces"][0]["chosen"] == small
    assert shapes(picked) != [] and png_pixels(client, picked).std() > 0


def test_several_photos_per_face_or_averaged(client, photos):
    batch = [photos["one_face.png"]]
    per_face = client.run(face_graph(photos["two_faces.png"], batch_images=batch))
    assert per_face.ok, per_face.describe_error()
    assert shapes(per_face)[0]["shape"] == [2, 77, 2048]  # face i -> latent i
    averaged = client.run(face_graph(photos["two_faces.png"], batch_images=batch, identity="average"))
    assert averaged.ok, averaged.describe_error()
    assert shapes(averaged)[0]["shape"] == [1, 77, 2048]
    assert shapes(averaged)[0]["extras"] == {"pooled_output": [1, 1280]}


def test_new_seed_reuses_faces_and_encoding(client, photos):
    first = client.run(face_graph(photos["one_face.png"], seed=11))
    assert first.ok, first.describe_error()
    second = client.run(face_graph(photos["one_face.png"], seed=12))
    assert second.ok, second.describe_error()
    assert {"detector", "faces", "faceclip", "encode", "load"} <= set(second.cached)
    assert "sample" in second.executed


def test_pack_auto_is_listed_first_and_runs_with_the_installed_pack(client, photos, comfy_server):
    schema = client.object_info("FaceCLIPFaceDetectorLoader")["FaceCLIPFaceDetectorLoader"]
    spec = schema["input"]["required"]["pack"]
    options = spec[0] if isinstance(spec[0], list) else spec[1]["options"]
    assert options[0] == "auto" and spec[1].get("default") == "auto"
    assert "antelopev2" in options  # workflows saved with the pack's name still validate
    result = client.run(face_graph(photos["one_face.png"], pack="auto", seed=5))
    assert result.ok, result.describe_error()
    assert png_pixels(client, result).shape == (64, 64, 3)
    assert "face model pack 'auto' chose antelopev2" in comfy_server.log_text()  # the shared base's pack


def test_no_face_raises_naming_the_photo_and_the_server_keeps_serving(client, photos):
    failed = client.run(face_graph(photos["no_face.png"]))
    assert failed.status == "error"
    assert failed.error["node_id"] == "faces"
    message = failed.error["exception_message"]
    assert "image 1 of 1" in message and "no face found" in message and "on_no_face to 'text_only'" in message
    assert "'skip'" not in message  # skipping the only photo would stop the run all the same
    assert "Load Face Detector's threshold" in message  # an input that exists (advanced)
    assert client.run(face_graph(photos["one_face.png"], seed=3)).ok


def test_no_face_text_only_keeps_going_face_free(client, photos):
    result = client.run(face_graph(photos["no_face.png"], on_no_face="text_only"))
    assert result.ok, result.describe_error()
    assert result.outputs["faces"]["faceclip_faces"][0]["status"] == "text_only"
    assert shapes(result)[0]["shape"] == [1, 77, 2048]


def test_no_face_skip_blocks_only_the_branch_with_a_reason(client, photos):
    result = client.run(face_graph(photos["no_face.png"], on_no_face="skip"))
    assert result.status == "error"
    assert "Execution Blocked" in result.error["exception_message"]
    assert "has a usable face" in result.error["exception_message"]
    assert client.run(face_graph(photos["one_face.png"], seed=4)).ok


def test_missing_and_wrong_model_files_are_clear_errors(client, photos, comfy_base):
    missing = client.run(face_graph(photos["one_face.png"], encoder="nope.safetensors"))
    assert missing.status == "rejected" and "faceclip" in missing.node_errors

    # a real safetensors file that is not a FaceCLIP encoder, in the faceclip folder
    wrong = comfy_base / "models" / "faceclip" / "not_an_encoder.safetensors"
    shutil.copy(comfy_base / "models" / "vae" / "tiny_sdxl_vae.safetensors", wrong)
    try:
        result = client.run(face_graph(photos["one_face.png"], encoder=wrong.name))
        assert result.status == "error" and result.error["node_id"] == "faceclip"
        assert result.error["exception_message"].startswith(
            'this file is a VAE: load it with ComfyUI\'s Load VAE node, not the "Load FaceCLIP" node.')
    finally:
        wrong.unlink()

    no_pack = client.run(face_graph(photos["one_face.png"], pack="buffalo_l"))
    assert no_pack.status in ("rejected", "error")
    assert client.run(face_graph(photos["one_face.png"], seed=5)).ok


def test_detector_pack_missing_names_the_folders_searched(client, photos, comfy_base):
    # a pack folder that exists but holds no detector: listed in the combo, refused with the search list
    empty = comfy_base / "models" / "insightface" / "broken_pack"
    empty.mkdir()
    (empty / "readme.onnx").write_bytes(b"not an onnx model")
    try:
        result = client.run(face_graph(photos["one_face.png"], pack="broken_pack"))
        assert result.status == "error" and result.error["node_id"] == "detector"
        message = result.error["exception_message"]
        assert "broken_pack" in message and str(comfy_base / "models" / "insightface") in message
    finally:
        shutil.rmtree(empty)
    assert client.run(face_graph(photos["one_face.png"], seed=6)).ok


def test_twenty_prompts_back_to_back_all_complete(client, photos):
    graphs = [face_graph(photos["one_face.png"], seed=100 + i, prompt=f"portrait number {i % 4}")
              for i in range(20)]
    results = client.run_all(graphs, timeout=900)
    assert [r.status for r in results] == ["success"] * 20
    assert all(r.images("save") for r in results)


def similarity_graph(reference: str, scored: list[str], pack: str = "antelopev2") -> dict:
    graph = {
        "detector": {"class_type": "FaceCLIPFaceDetectorLoader",
                     "inputs": {"pack": pack, "provider": "CPU", "det_size": 640}},
        "ref": {"class_type": "LoadImage", "inputs": {"image": reference}},
        "faces": {"class_type": "FaceCLIPPrepareFaces",
                  "inputs": {"face_models": ["detector", 0], "images": ["ref", 0], "selection": "largest",
                             "index": 0, "on_no_face": "raise"}},
        "img0": {"class_type": "LoadImage", "inputs": {"image": scored[0]}},
        "sim": {"class_type": "FaceCLIPFaceSimilarity",
                "inputs": {"face_models": ["detector", 0], "reference": ["faces", 0], "images": ["img0", 0]}},
        "show": {"class_type": "PreviewImage", "inputs": {"images": ["sim", 1]}},
    }
    if len(scored) > 1:
        graph["img1"] = {"class_type": "LoadImage", "inputs": {"image": scored[1]}}
        graph["both"] = {"class_type": "ImageBatch", "inputs": {"image1": ["img0", 0], "image2": ["img1", 0]}}
        graph["sim"]["inputs"]["images"] = ["both", 0]
    return graph


def test_face_similarity_scores_likeness_per_image(client, photos):
    result = client.run(similarity_graph(photos["one_face.png"], [photos["one_face.png"], photos["no_face.png"]]))
    assert result.ok, result.describe_error()
    same, missing = result.outputs["sim"]["text"]
    assert float(same) == pytest.approx(1.0, abs=1e-3)  # the very same face: identical embedding
    assert missing == "no face found"
    annotated = result.images("show")
    assert len(annotated) == 2


def test_face_similarity_when_no_image_has_a_face(client, photos):
    result = client.run(similarity_graph(photos["one_face.png"], [photos["no_face.png"]]))
    assert result.ok, result.describe_error()
    assert result.outputs["sim"]["text"] == ["no face found"]
    assert len(result.images("show")) == 1


def test_face_similarity_without_a_recognizer_says_what_is_needed(client, photos, comfy_base):
    from tests.harness.fake_insightface import make_pack

    pack = make_pack(comfy_base / "models" / "insightface" / "detector_only", "antelopev2", recognizer=False)
    try:
        result = client.run(similarity_graph(photos["one_face.png"], [photos["one_face.png"]], pack=pack.name))
        assert result.status == "error" and result.error["node_id"] == "sim"
        assert "recognition model" in result.error["exception_message"]
    finally:
        shutil.rmtree(pack)


LONG_PROMPT = "A woman in a red coat, " + ", ".join(f"detail {i}" for i in range(40))  # ~120 CLIP tokens


def test_a_prompt_cut_to_77_tokens_is_said_on_the_node(client, photos):
    graph = face_graph(photos["one_face.png"], prompt=LONG_PROMPT, seed=21)
    graph["text"] = {"class_type": "FaceCLIPTextEncode", "inputs": {"faceclip": ["faceclip", 0], "text": LONG_PROMPT}}
    graph["text_shapes"] = {"class_type": "FaceCLIPTest_ConditioningShapes", "inputs": {"conditioning": ["text", 0]}}
    result = client.run(graph)
    assert result.ok, result.describe_error()
    (said,) = result.node_texts("encode")  # what the frontend draws on the node, as the websocket carries it
    assert re.fullmatch(r"Shorten the prompt: it is \d+ tokens long with FaceCLIP's identity prefix \(6 tokens\), "
                        r"and FaceCLIP reads only the first 77; the rest is ignored\.", said), said
    # (the negative, "blurry", fits: not named)
    (said,) = result.node_texts("text")
    assert re.fullmatch(r"Shorten the text: it is \d+ tokens long, and FaceCLIP reads only the first 77; the rest "
                        r"is ignored\.", said), said


def test_prompts_that_fit_and_the_official_negative_say_nothing_on_the_node(client, photos):
    graph = face_graph(photos["one_face.png"], prompt="A woman in a red coat, smiling", seed=22)
    graph["encode"]["inputs"]["negative"] = OFFICIAL_NEGATIVE  # the node's default
    result = client.run(graph)
    assert result.ok, result.describe_error()
    assert "encode" in result.executed and result.node_texts("encode") == []


def test_a_float_input_refuses_nan_by_name(client, photos):
    """ComfyUI's min/max check lets NaN through (every comparison with it is false; an infinity it refuses
    itself); the node names the input. The API prompt carries the bare JSON NaN that Python's json writes."""
    graph = face_graph(photos["one_face.png"], seed=31)
    graph["detector"]["inputs"]["threshold"] = float("nan")
    result = client.run(graph)
    assert result.status == "error" and result.error["node_id"] == "detector", result.describe_error()
    assert result.error["exception_message"].startswith(
        "threshold is nan: enter a finite number"), result.error["exception_message"]
