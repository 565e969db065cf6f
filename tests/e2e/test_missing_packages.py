"""The pack loads in ComfyUI when one of its requirements is missing from ComfyUI's Python: no "IMPORT FAILED",
every node listed, and the step that needs the package names the exact install command."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from tests.conftest import REPO, comfyui_dir

# requirements.txt and what they bring that the pack imports
REQUIREMENTS = ("ftfy", "regex", "insightface", "onnxruntime", "onnx", "cv2")

# ComfyUI's own custom-node loader, in one process: for each package, hide it, forget the pack, load it again.
LOADER = textwrap.dedent("""
    import asyncio, json, sys
    comfy_dir, pack, blocked = sys.argv[1], sys.argv[2], sys.argv[3].split(",")
    sys.path.insert(0, comfy_dir)
    import comfy.cli_args
    comfy.cli_args.args.cpu = True
    import nodes
    PACK_PARTS = {"__init__.py", "nodes", "faceclip_core"}  # not the test environment inside the checkout
    report = {}
    for name in blocked:
        for key, module in list(sys.modules.items()):  # the pack's modules, whatever ComfyUI named them
            file = getattr(module, "__file__", None) or ""
            if file.startswith(pack + "/") and file[len(pack) + 1:].split("/")[0] in PACK_PARTS:
                del sys.modules[key]
        saved = sys.modules.get(name)
        sys.modules[name] = None  # as if it were not installed
        for key in [k for k in nodes.NODE_CLASS_MAPPINGS if k.startswith("FaceCLIP")]:
            del nodes.NODE_CLASS_MAPPINGS[key]
        loaded = asyncio.run(nodes.load_custom_node(pack))
        found = sorted(k for k in nodes.NODE_CLASS_MAPPINGS if k.startswith("FaceCLIP"))
        core = next(m for m in list(sys.modules.values())
                    if getattr(m, "__file__", None) == pack + "/faceclip_core/sdxl/tokenizer.py")
        try:
            core.tokenize(["a woman in a denim shirt"])
            tokenize = "ok"
        except Exception as exc:
            tokenize = f"{type(exc).__name__}: {exc}"
        report[name] = {"loaded": loaded, "nodes": found, "tokenize": tokenize}
        if saved is None:
            del sys.modules[name]
        else:
            sys.modules[name] = saved
    print("REPORT " + json.dumps(report))
""")


@pytest.fixture(scope="module")
def report() -> dict:
    done = subprocess.run([sys.executable, "-c", LOADER, str(comfyui_dir()), str(REPO), ",".join(REQUIREMENTS)],
                          capture_output=True, text=True, timeout=300, cwd=REPO)
    lines = [line for line in done.stdout.splitlines() if line.startswith("REPORT ")]
    assert done.returncode == 0 and lines, done.stderr[-3000:]
    return json.loads(lines[-1][len("REPORT "):])


@pytest.mark.parametrize("package", REQUIREMENTS)
def test_the_pack_loads_with_every_node_when_a_requirement_is_missing(report, package):
    result = report[package]
    assert result["loaded"] is True
    assert len(result["nodes"]) == 11 and {"FaceCLIPEncode", "FaceCLIPFaceT5Encode"} <= set(result["nodes"]), \
        result["nodes"]


@pytest.mark.parametrize("package,spec", [("ftfy", "ftfy>=6.1"), ("regex", "regex>=2023.0")])
def test_the_tokenizer_names_the_install_command_of_its_missing_package(report, package, spec):
    message = report[package]["tokenize"]
    assert message.startswith("MissingPackageError: FaceCLIP's tokenizer needs the Python package")
    assert f'`python -m pip install "{spec}"`' in message and "restart ComfyUI" in message
    assert report["insightface"]["tokenize"] == "ok"  # only the step that needs the package fails
