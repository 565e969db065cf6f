"""What ComfyUI Manager and the registry read: pyproject.toml, requirements.txt, the pack's import surface."""
from __future__ import annotations

import ast
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import tomllib

REPO = Path(__file__).resolve().parents[2]
ComfyOwned = {"torch", "torchvision", "torchaudio", "torchsde"}


def _requirement_names(lines: list[str]) -> list[str]:
    return [re.split(r"[<>=!~;\[ ]", line.strip(), maxsplit=1)[0].lower() for line in lines
            if line.strip() and not line.lstrip().startswith("#")]


def test_requirements_match_pyproject_and_leave_torch_to_comfyui():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    requirements = (REPO / "requirements.txt").read_text().splitlines()
    pinned = [d for d in project["dependencies"] if not d.startswith("comfyui-frontend-package")]
    assert sorted(pinned) == sorted(line.strip() for line in requirements
                                    if line.strip() and not line.startswith("#"))
    names = _requirement_names(requirements)
    assert not ComfyOwned & set(names), "ComfyUI owns torch/torchvision/torchaudio"
    assert "comfyui-frontend-package" not in names
    # exactly one onnxruntime strategy: the CPU wheel that insightface 2.x declares, never both builds
    assert "onnxruntime-gpu" not in names


def test_registry_metadata():
    meta = tomllib.loads((REPO / "pyproject.toml").read_text())
    comfy = meta["tool"]["comfy"]
    for key in ("PublisherId", "DisplayName", "Icon", "requires-comfyui", "web"):
        assert comfy.get(key), key
    assert (REPO / comfy["web"]).is_dir()
    assert isinstance(meta["project"]["license"], dict), "license must be a table ({file=...} or {text=...})"
    assert (REPO / meta["project"]["license"]["file"]).is_file()
    assert re.fullmatch(r"\d+\.\d+\.\d+", meta["project"]["version"])
    assert "Repository" in meta["project"]["urls"]
    assert any(d.startswith("comfyui-frontend-package>=") for d in meta["project"]["dependencies"])


def _top_level_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


def test_core_never_imports_comfyui():
    comfy_modules = {"comfy", "folder_paths", "nodes", "comfy_api", "comfy_extras", "server", "execution"}
    for path in (REPO / "faceclip_core").rglob("*.py"):
        assert not _top_level_imports(path) & comfy_modules, path


def test_optional_dependencies_are_not_imported_at_module_level():
    """A broken insightface/onnxruntime must never make the pack "IMPORT FAILED"."""
    optional = {"insightface", "onnxruntime", "cv2"}
    for path in [REPO / "__init__.py", *(REPO / "nodes").rglob("*.py"), *(REPO / "faceclip_core").rglob("*.py")]:
        tree = ast.parse(path.read_text())
        for node in tree.body:  # module level only; imports inside functions are the lazy path
            names = set()
            if isinstance(node, ast.Import):
                names = {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = {node.module.split(".")[0]}
            assert not names & optional, f"{path}: module-level import of {names & optional}"


RUNTIME = ("__init__.py", "nodes/", "faceclip_core/", "faceclip_headless/", "web/", "workflows/")
REPOSITORY_ONLY = ("tests/", "bench/", "tools/", ".ci/")


def _tracked_files() -> list[str]:
    out = subprocess.run(["git", "-C", str(REPO), "ls-files"], capture_output=True, text=True, check=True).stdout
    return [line for line in out.splitlines() if line]


def test_registry_package_holds_the_pack_and_not_its_tests(tmp_path):
    """`comfy node pack` (comfy-cli's own zip step, run in the checkout as the registry's publish does) ships what
    ComfyUI loads and leaves tests, benchmarks and tools in the repository."""
    archive = tmp_path / "node.zip"
    includes = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["comfy"].get("includes", [])
    subprocess.run([sys.executable, "-c", "import sys; from comfy_cli.file_utils import zip_files; "
                    "zip_files(sys.argv[1], includes=sys.argv[2:])", str(archive), *includes],
                   cwd=REPO, check=True, capture_output=True)
    with zipfile.ZipFile(archive) as zf:
        packed = {info.filename: info.file_size for info in zf.infolist()}
    leaked = sorted(name for name in packed if name.startswith(REPOSITORY_ONLY))
    assert not leaked, f"{len(leaked)} repository-only files in the package, e.g. {leaked[:5]}"
    runtime = [f for f in _tracked_files() if f.startswith(RUNTIME) or "/" not in f and f.endswith(
        (".md", ".toml", ".txt")) or f == "LICENSE"]
    missing = sorted(set(runtime) - set(packed))
    assert not missing, f"files the pack needs at run time are missing from the package: {missing[:10]}"
    unpacked_mb = sum(packed.values()) / 1e6
    assert unpacked_mb < 6, f"the package unpacks to {unpacked_mb:.1f} MB"
