"""What the shipped workflows say and carry, read from the files as a user gets them: each note names every model file
the graph loads, its folder and how to get it; the loaders' model entries are what the newest frontend's schema
requires; the FLUX workflows set their output size in one place."""
from __future__ import annotations

import json
import re
from urllib.parse import urlparse

import pytest

from faceclip_headless.download import DOWNLOADS
from faceclip_headless.shipped_workflows import BY_KEY, SHIPPED

MODEL_SUFFIXES = (".safetensors", ".pt", ".ckpt", ".sft", ".pth")
IDS = [w.key for w in SHIPPED]


def load(workflow) -> dict:
    return json.loads(workflow.path.read_text())


def note_text(data: dict) -> str:
    (note,) = [n for n in data["nodes"] if n["type"] in ("MarkdownNote", "Note")]
    return note["widgets_values"][0]


def loaded_files(data: dict) -> set[tuple[str, str]]:
    """(folder, file) for every model a node loads: its properties.models entries and any widget naming a file."""
    files = set()
    for node in data["nodes"]:
        entries = node.get("properties", {}).get("models", [])
        files |= {(m["directory"], m["name"]) for m in entries}
        named = {m["name"] for m in entries}
        for value in node.get("widgets_values") or []:
            if isinstance(value, str) and value.endswith(MODEL_SUFFIXES):
                assert value in named, f"{node['type']} loads {value} without a properties.models entry"
    return files


@pytest.mark.parametrize("workflow", SHIPPED, ids=IDS)
def test_the_note_names_every_model_file_its_folder_and_how_to_get_it(workflow):
    data = load(workflow)
    text = note_text(data)
    files = loaded_files(data)
    assert files, "no loader in the workflow"
    converted = {d.name: d for d in DOWNLOADS if d.convert}
    for folder, name in files:
        assert f"models/{folder}/{name}" in text, f"the note does not say where {name} goes"
        line = next(line for line in text.splitlines() if f"models/{folder}/{name}" in line)
        assert "https://" in line, f"the note gives no address for {name}: {line}"
        if name in converted:  # an official .pt pickle: where it is, and the conversion command
            assert converted[name].repo_path in line and "converted" in line, line
            assert "python -m faceclip_core.convert FILE.pt ComfyUI/models/FOLDER/NAME" in text
    if any(n["type"] == "FaceCLIPFaceDetectorLoader" for n in data["nodes"]):
        assert "models/insightface/antelopev2/" in text and "buffalo_l" in text
    assert "`" not in text  # no code spans: 1.47's Nodes 2.0 draws them blue on blue
    assert "see the pack's README" not in text


def test_the_first_card_says_start_here():
    assert SHIPPED[0].key == "basic"
    assert "start here" in note_text(load(SHIPPED[0])).lower()


@pytest.mark.parametrize("key", ["flux_basic", "flux_two_people", "id_ea", "sefi_ide"])
def test_flux_and_training_notes_say_what_they_need(key):
    text = note_text(load(BY_KEY[key]))
    assert re.search(r"GPU memory: [^.]*\d+(\.\d+)? GiB|GPU memory: [^.]*\d+(\.\d+)? GB", text), text
    download = r"Download: 36 GB" if key.startswith("flux") else r"\(6\.9 GB"  # FaceT5's files / the checkpoint
    assert re.search(download, text), text


@pytest.mark.parametrize("workflow", SHIPPED, ids=IDS)
def test_every_model_entry_has_what_frontend_1_58_requires(workflow):
    """zModelFile in 1.58.1 (platform/workflow/validation/schemas/workflowSchema.ts): name, url (a valid URL) and
    directory, all strings; hash and hash_type optional. Without a url the newest frontend reports the template as
    not matching its schema."""
    for node in load(workflow)["nodes"]:
        for entry in node.get("properties", {}).get("models", []):
            assert set(entry) <= {"name", "url", "directory", "hash", "hash_type"}, entry
            assert all(isinstance(entry.get(k), str) and entry[k] for k in ("name", "url", "directory")), entry
            url = urlparse(entry["url"])
            assert url.scheme == "https" and url.netloc == "huggingface.co", entry
            assert entry["name"] in node["widgets_values"], (node["type"], entry)


def _origin(data: dict, node: dict, input_name: str) -> int | None:
    links = {link[0]: link for link in data["links"]}
    (slot,) = [i for i in node["inputs"] if i["name"] == input_name]
    return links[slot["link"]][1] if slot.get("link") is not None else None


@pytest.mark.parametrize("key", ["flux_basic", "flux_two_people"])
def test_flux_output_size_is_set_in_one_place(key):
    """Width and height feed both ModelSamplingFlux (its schedule depends on the size) and the empty latent, from
    one Int node each, as core's FLUX templates do: changing the one value changes both."""
    data = load(BY_KEY[key])
    by_id = {n["id"]: n for n in data["nodes"]}
    (schedule,) = [n for n in data["nodes"] if n["type"] == "ModelSamplingFlux"]
    (latent,) = [n for n in data["nodes"] if n["type"] == "EmptySD3LatentImage"]
    for name in ("width", "height"):
        source = _origin(data, schedule, name)
        assert source is not None and source == _origin(data, latent, name), name
        assert by_id[source]["type"] == "PrimitiveInt" and by_id[source]["title"].lower() == name
        assert by_id[source]["widgets_values"][0] == {"width": 864, "height": 1152}[name]
