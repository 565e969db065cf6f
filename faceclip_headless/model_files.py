"""The model files the main job needs, where ComfyUI looks for them, and a report of what is missing.

Reads ComfyUI's folder layout from disk (models/<folder> plus extra_model_paths.yaml) so the check runs before
any server starts.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from faceclip_core.faces.model_packs import (
    INSIGHTFACE_LICENCE,
    INSIGHTFACE_MODEL_ZOO,
    KNOWN_OTHERS,
    KNOWN_RECOGNIZERS,
    PREFERRED_PACKS,
)

logger = logging.getLogger(__name__)

# extra_model_paths.yaml keys that ComfyUI maps onto a current folder name
_LEGACY_KEYS = {"unet": "diffusion_models", "clip": "text_encoders"}


@dataclass(frozen=True)
class RequiredModel:
    folder: str  # ComfyUI model folder name (models/<folder>, or the same key in extra_model_paths.yaml)
    name: str  # file (or pack folder) name the shipped workflows use
    what: str
    source: str  # where to get it, and how to prepare it
    present: Callable[[Path], bool] = Path.is_file  # checks <folder path>/<name>
    is_folder: bool = False  # a model pack: a folder of files rather than one file
    alternatives: tuple[str, ...] = ()  # other names that serve as well (any one of them is enough)

    @property
    def names(self) -> tuple[str, ...]:
        return (self.name, *self.alternatives)

    @property
    def label(self) -> str:
        """The name(s) for messages: "antelopev2 or buffalo_l"."""
        return " or ".join(self.names)

    def listed_in(self, names: Iterable[str]) -> bool:
        """Whether a server's file listing of the folder (relative paths, '/'-separated) holds this model."""
        if self.is_folder:
            return any(n.replace("\\", "/").startswith(name + "/") for n in names for name in self.names)
        return any(name in names for name in self.names)


# Files that come with the packs but detect nothing: a folder holding only these has no detector.
_NOT_DETECTORS = frozenset(KNOWN_RECOGNIZERS + KNOWN_OTHERS)


def _has_detector(pack: Path) -> bool:
    # A model pack is usable when it holds a detection model (antelopev2: scrfd_10g_bnkps.onnx, buffalo_l:
    # det_10g.onnx; any other .onnx name may be a renamed one, so only the known non-detectors are ruled out),
    # possibly one folder deeper (the zip's own folder). Cheap on purpose: the server reads the ONNX signatures.
    return any(p.suffix.lower() == ".onnx" and p.name not in _NOT_DETECTORS
               for d in (pack, pack / pack.name) if d.is_dir() for p in d.iterdir())


FACECLIP_HF = "https://huggingface.co/ByteDance/FaceCLIP (licence CC-BY-NC-4.0: non-commercial use only)"

MAIN_JOB_MODELS: tuple[RequiredModel, ...] = (
    RequiredModel(
        "faceclip", "faceclip_sdxl_encoder.safetensors", "FaceCLIP-SDXL joint face+text encoder",
        f"download model/face_clip_encoder.pt from {FACECLIP_HF}, then convert it: python -m faceclip_core.convert "
        "face_clip_encoder.pt <ComfyUI>/models/faceclip/faceclip_sdxl_encoder.safetensors --dtype bf16"),
    RequiredModel(
        "diffusion_models", "faceclip_sdxl_unet.safetensors", "FaceCLIP's fine-tuned SDXL UNet",
        f"download model/unet.pt from {FACECLIP_HF}, then convert it: python -m faceclip_core.convert unet.pt "
        "<ComfyUI>/models/diffusion_models/faceclip_sdxl_unet.safetensors --dtype bf16"),
    RequiredModel(
        "vae", "sdxl_vae.safetensors", "the stock SDXL VAE",
        "https://huggingface.co/stabilityai/sdxl-vae (file sdxl_vae.safetensors)"),
    # The main job runs Load Face Detector with pack "auto", which takes antelopev2, else buffalo_l (they detect and
    # align the same), so either one passes this check.
    RequiredModel(
        "insightface", PREFERRED_PACKS[0], "insightface face-detection model pack (a folder of .onnx files)",
        f"insightface's antelopev2 or buffalo_l pack from {INSIGHTFACE_MODEL_ZOO} ({INSIGHTFACE_LICENCE}), "
        "unzipped so that <ComfyUI>/models/insightface/antelopev2/scrfd_10g_bnkps.onnx or "
        "<ComfyUI>/models/insightface/buffalo_l/det_10g.onnx exists", present=_has_detector,
        is_folder=True, alternatives=PREFERRED_PACKS[1:]),
)

FLUX_VAE_SOURCE = ("FLUX.1-dev's VAE, ae.safetensors, from https://huggingface.co/black-forest-labs/FLUX.1-dev "
                   "(gated: accept its licence there first)")

# --variant flux: FaceT5-FLUX's files under the names the FLUX workflows use, and the same face detector.
FLUX_MAIN_JOB_MODELS: tuple[RequiredModel, ...] = (
    RequiredModel(
        "faceclip", "facet5_encoder.safetensors", "FaceT5 joint face+text encoder (FaceCLIP's FLUX variant)",
        f"download model/face_t5_encoder.pt from {FACECLIP_HF}, then convert it: python -m faceclip_core.convert "
        "face_t5_encoder.pt <ComfyUI>/models/faceclip/facet5_encoder.safetensors"),
    RequiredModel(
        "diffusion_models", "facet5_flux_dit.safetensors", "FaceT5's fine-tuned FLUX.1-dev DiT",
        f"download model/dit.pt from {FACECLIP_HF}, then convert it: python -m faceclip_core.convert dit.pt "
        "<ComfyUI>/models/diffusion_models/facet5_flux_dit.safetensors"),
    RequiredModel("vae", "ae.safetensors", "FLUX.1-dev's VAE", FLUX_VAE_SOURCE),
    MAIN_JOB_MODELS[-1],
)
MODELS_BY_VARIANT = {"sdxl": MAIN_JOB_MODELS, "flux": FLUX_MAIN_JOB_MODELS}


def read_extra_model_paths(yaml_path: Path) -> dict[str, list[Path]]:
    """Folder name -> paths, the way ComfyUI reads extra_model_paths.yaml (base_path joins relative entries)."""
    import yaml  # ComfyUI's own dependency; only needed when such a file exists

    config = yaml.safe_load(yaml_path.read_text()) or {}
    folders: dict[str, list[Path]] = {}
    for section in config.values():
        if not isinstance(section, dict):
            continue
        base = Path(section.get("base_path", yaml_path.parent)).expanduser()
        if not base.is_absolute():
            base = yaml_path.parent / base
        for key, value in section.items():
            if key in ("base_path", "is_default") or not isinstance(value, str):
                continue
            for line in value.splitlines():
                if line.strip():
                    path = Path(line.strip()).expanduser()
                    folders.setdefault(_LEGACY_KEYS.get(key, key), []).append(path if path.is_absolute()
                                                                               else base / path)
    return folders


def model_folders(comfyui_dir: Path, extra_yaml: Iterable[Path] = (),
                  models: Iterable[RequiredModel] = MAIN_JOB_MODELS) -> dict[str, list[Path]]:
    """Every folder ComfyUI would search, by folder name: models/<name> first, then extra_model_paths entries."""
    folders: dict[str, list[Path]] = {}
    for m in models:
        folders.setdefault(m.folder, []).append(comfyui_dir / "models" / m.folder)
    yamls = [comfyui_dir / "extra_model_paths.yaml", *extra_yaml]
    for y in yamls:
        if y.is_file():
            for name, paths in read_extra_model_paths(y).items():
                folders.setdefault(name, []).extend(paths)
    return folders


@dataclass(frozen=True)
class MissingModel:
    model: RequiredModel
    searched: tuple[Path, ...]


def find_missing(comfyui_dir: Path, extra_yaml: Iterable[Path] = (),
                 models: tuple[RequiredModel, ...] = MAIN_JOB_MODELS) -> list[MissingModel]:
    folders = model_folders(comfyui_dir, extra_yaml, models)
    missing = []
    for m in models:
        searched = tuple(folders.get(m.folder, []))
        if not any(m.present(folder / name) for folder in searched for name in m.names):
            missing.append(MissingModel(m, searched))
    return missing


def find_missing_on_server(list_folder: Callable[[str], list[str] | None],
                           models: tuple[RequiredModel, ...] = MAIN_JOB_MODELS) -> list[MissingModel]:
    """The same check against a running ComfyUI: ``list_folder(name)`` returns its file listing of a model folder
    (GET /models/<name>), or None when the server has no such folder."""
    return [MissingModel(m, ()) for m in models if not m.listed_in(list_folder(m.folder) or [])]


def describe_missing(missing: list[MissingModel]) -> str:
    lines = [f"{len(missing)} model file(s) missing; nothing was run:"]
    for item in missing:
        m = item.model
        where = " or ".join(str(item.searched[0] / name) if item.searched else f"the server's models/{m.folder}/{name}"
                            for name in m.names)
        lines += [f"- {m.label} ({m.what})", f"    get it: {m.source}", f"    put it in: {where}"]
        if item.searched:
            lines.append("    (searched: " + ", ".join(str(p) for p in item.searched) + ")")
    lines.append("Other folders can be added under the keys faceclip, diffusion_models, vae and insightface "
                 "of ComfyUI's extra_model_paths.yaml.")
    if any(item.model in FLUX_MAIN_JOB_MODELS[:2] for item in missing):
        lines.append("With network access, `python -m faceclip_headless.download --comfyui <ComfyUI> --variant "
                     "flux` fetches FaceT5's encoder and DiT (36 GB; checksums verified, resumable) and converts "
                     "them.")
    elif any(item.model.folder != "insightface" for item in missing):
        lines.append("With network access, `python -m faceclip_headless.download --comfyui <ComfyUI>` fetches "
                     "the FaceCLIP and VAE files (checksums verified, resumable) and converts them.")
    return "\n".join(lines)
