"""The pack inside a real ComfyUI server."""
from __future__ import annotations

from tests.e2e.conftest import PACK_DIR_NAME


def test_server_loads_the_pack_without_import_errors(client, comfy_server):
    log = comfy_server.log_text()
    assert "IMPORT FAILED" not in log, log
    assert "Cannot import" not in log, log
    # ComfyUI lists the import time of every custom node folder it loaded
    assert PACK_DIR_NAME in log, log


def test_node_search_finds_the_nodes_by_the_words_artists_use(client):
    info = {name: spec for name, spec in client.object_info().items()
            if PACK_DIR_NAME in spec.get("python_module", "")}  # this pack's nodes, not the test-only ones
    assert len(info) == 11

    def found(word: str) -> set[str]:  # what the frontend's search matches: names, categories and aliases
        word = word.lower()
        return {name for name, spec in info.items()
                if word in " ".join([spec["display_name"], spec["category"], *(spec.get("search_aliases") or [])])
                .lower()}

    assert {"FaceCLIPEncode", "FaceCLIPLoader", "FaceCLIPFaceSimilarity", "FaceCLIPTrainIDEmbedding",
            "FaceCLIPApplyIDEmbedding"} <= found("identity")
    assert {"FaceCLIPFaceSimilarity", "FaceCLIPEncode", "FaceCLIPTrainIDEmbedding"} <= found("likeness")
    assert {"FaceCLIPEncode", "FaceCLIPPrepareFaces", "FaceCLIPFaceT5Encode"} <= found("portrait")
    assert {"FaceCLIPFaceT5Loader", "FaceCLIPFaceT5Encode"} <= found("flux")
    assert {"FaceCLIPFaceDetectorLoader", "FaceCLIPPrepareFaces", "FaceCLIPFaceSimilarity"} <= found("insightface")
    assert {"FaceCLIPTrainIDEmbedding", "FaceCLIPLoadIDEmbedding", "FaceCLIPApplyIDEmbedding"} <= found("ID embedding")
