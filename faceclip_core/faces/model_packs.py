"""Finding insightface model packs on disk, telling detectors from recognizers, and
choosing onnxruntime execution providers.

Nothing here downloads anything. insightface, onnx and onnxruntime are imported inside
functions only, so a missing or broken install surfaces as a :class:`FaceModelError`
when models are loaded, never when ``faceclip_core`` is imported.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from .errors import FaceModelError

logger = logging.getLogger(__name__)

#: Files of the packs users actually have (for messages and for the order we inspect
#: files in; the role of every file is still decided from its ONNX signature).
KNOWN_DETECTORS = ("scrfd_10g_bnkps.onnx", "det_10g.onnx", "det_2.5g.onnx", "det_500m.onnx")
KNOWN_RECOGNIZERS = ("glintr100.onnx", "w600k_r50.onnx", "w600k_mbf.onnx")
# Other models shipped in the packs; never detectors or recognizers, so not worth
# parsing (glintr100 alone is 250 MB of protobuf).
KNOWN_OTHERS = ("1k3d68.onnx", "2d106det.onnx", "genderage.onnx")
EXPECTED_FILES_HINT = (
    "a SCRFD face detection model with landmarks (antelopev2: scrfd_10g_bnkps.onnx, "
    "buffalo_l: det_10g.onnx) and, optionally for similarity scores, an ArcFace "
    "recognition model (antelopev2: glintr100.onnx, buffalo_l: w600k_r50.onnx)")

ModelRole = Literal["detector", "detector_no_kps", "recognizer", "other"]

# Short names the nodes offer -> onnxruntime provider names.
PROVIDER_ALIASES = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "rocm": "ROCMExecutionProvider",
    "migraphx": "MIGraphXExecutionProvider",
    "coreml": "CoreMLExecutionProvider",
    "directml": "DmlExecutionProvider",
    "dml": "DmlExecutionProvider",
    "openvino": "OpenVINOExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
}
PROVIDER_CHOICES = ("CPU", "CUDA", "ROCm", "CoreML", "DirectML", "auto")
# "auto" tries these in order; CPU is always appended as the fallback.
_AUTO_ORDER = ("CUDAExecutionProvider", "ROCMExecutionProvider",
               "MIGraphXExecutionProvider", "CoreMLExecutionProvider", "DmlExecutionProvider")


@dataclass(frozen=True)
class OnnxInfo:
    """What an ONNX file's signature says it is."""

    path: Path
    role: ModelRole
    input_shape: tuple
    n_outputs: int


@dataclass(frozen=True)
class ModelPack:
    """A folder holding at least one face detector (and maybe a recognizer)."""

    name: str
    folder: Path
    detector: Path
    recognizer: Path | None
    searched: tuple[Path, ...] = ()


# Where the packs are published, and on what terms (the pack never downloads them).
INSIGHTFACE_MODEL_ZOO = "https://github.com/deepinsight/insightface/tree/master/model_zoo"
INSIGHTFACE_LICENCE = "non-commercial research use only"
#: The pack choice that stands for whichever pack is installed (see resolve_auto_pack).
AUTO_PACK = "auto"
#: The order "auto" tries named packs in: antelopev2 is what FaceCLIP was trained with; buffalo_l's detector finds
#: and aligns faces the same way (only its recognizer differs).
PREFERRED_PACKS = ("antelopev2", "buffalo_l")
PACK_SOURCE_HINT = (f"Download antelopev2 (or buffalo_l, which works the same here) from insightface's model zoo, "
                    f"{INSIGHTFACE_MODEL_ZOO} ({INSIGHTFACE_LICENCE})")


def import_runtime():
    """Import onnxruntime, turning a missing or broken install into FaceModelError."""
    try:
        import onnxruntime
    except Exception as exc:  # a broken native library raises more than ImportError
        raise FaceModelError(
            "onnxruntime could not be imported, so faces cannot be detected: "
            f"{type(exc).__name__}: {exc}. Install the CPU build with "
            "`pip install onnxruntime` (for CUDA, uninstall it and install onnxruntime-gpu "
            "instead; never keep both).") from exc
    return onnxruntime


def import_insightface_model_zoo():
    """Import insightface.model_zoo (SCRFD, ArcFaceONNX) or raise FaceModelError."""
    import_runtime()  # insightface imports it too: a missing onnxruntime must be named as such
    try:
        from insightface import model_zoo
    except Exception as exc:
        raise FaceModelError(
            "insightface could not be imported, so faces cannot be detected: "
            f"{type(exc).__name__}: {exc}. Install it with `pip install insightface>=2.1` "
            "(it needs onnxruntime and opencv-python).") from exc
    return model_zoo


# ---------------------------------------------------------------- providers


def resolve_providers(provider: str | Sequence[str] = "CPU") -> list[str]:
    """Turn a user choice ("CPU", "CUDA", "auto", a full provider name or a list) into
    the provider list for an InferenceSession: the available requested ones, then CPU.

    A requested provider that this onnxruntime build lacks is dropped with a warning
    (workflows move between machines; CPU still gives the same faces, only slower).
    Availability comes from ``get_available_providers()``; ``get_device()`` is not
    consulted because onnxruntime-gpu reports "GPU" even without a usable GPU.
    """
    ort = import_runtime()
    available = list(ort.get_available_providers())
    if isinstance(provider, str):
        requested = [provider]
    else:
        requested = list(provider)
    names: list[str] = []
    for item in requested:
        key = str(item).strip()
        if key.lower() == "auto":
            names.extend(p for p in _AUTO_ORDER if p in available)
            continue
        full = PROVIDER_ALIASES.get(key.lower(), key)
        if not full.endswith("ExecutionProvider"):
            raise FaceModelError(
                f"unknown execution provider {item!r}; choose one of "
                f"{', '.join(PROVIDER_CHOICES)} or a full onnxruntime provider name")
        if full not in available:
            logger.warning(
                "%s was requested for face detection but this onnxruntime build only "
                "offers %s; using CPU. For CUDA install onnxruntime-gpu matching your "
                "CUDA/cuDNN (and uninstall the CPU onnxruntime).", full, available)
            continue
        names.append(full)
    if "CPUExecutionProvider" not in names:
        names.append("CPUExecutionProvider")
    return list(dict.fromkeys(names))


def make_session(path: Path, providers: Sequence[str]):
    """InferenceSession on ``providers``; logs (and returns) what it really runs on."""
    ort = import_runtime()
    opts = ort.SessionOptions()
    # Warnings about unused initialisers and shape hints are noise for users.
    opts.log_severity_level = 3
    try:
        session = ort.InferenceSession(str(path), sess_options=opts, providers=list(providers))
    except Exception as exc:
        raise FaceModelError(
            f"onnxruntime could not load {path}: {type(exc).__name__}: {exc}. The file may "
            "be truncated or not an ONNX model; download the model pack again.") from exc
    active = list(session.get_providers())
    if providers and providers[0] not in active:
        logger.warning("%s: requested %s but onnxruntime fell back to %s (check the "
                       "CUDA/cuDNN versions onnxruntime-gpu needs)", path.name,
                       providers[0], active)
    logger.info("%s runs on %s", path.name, active)
    return session, tuple(active)


# ---------------------------------------------------------------- inspecting ONNX files


def inspect_onnx(path: str | os.PathLike) -> OnnxInfo:
    """Classify an ONNX file by its inputs/outputs, the way insightface's router does:
    detectors have 6/9 (strides 8/16/32) or 10/15 (five strides) outputs, 9 and 15 with
    landmarks; a recognizer has one square ``[N, 3, S, S]`` input (S >= 112, a multiple
    of 16) and one output."""
    path = Path(path)
    try:
        import onnx
    except Exception as exc:
        raise FaceModelError(f"the onnx package could not be imported: {exc}") from exc
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        raise FaceModelError(
            f"{path} is not a readable ONNX model ({type(exc).__name__}: {exc}); the "
            "download may be incomplete: fetch the model pack again.") from exc
    init_names = {t.name for t in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in init_names]
    outputs = list(model.graph.output)
    if not inputs:
        return OnnxInfo(path, "other", (), len(outputs))
    dims = tuple(d.dim_value if d.dim_value > 0 else (d.dim_param or None)
                 for d in inputs[0].type.tensor_type.shape.dim)
    role: ModelRole = "other"
    n = len(outputs)
    if len(dims) == 4 and dims[1] == 3:
        if n in (9, 15):
            role = "detector"
        elif n in (6, 10):
            role = "detector_no_kps"
        elif (n == 1 and len(inputs) == 1 and isinstance(dims[2], int) and dims[2] == dims[3]
              and dims[2] >= 112 and dims[2] % 16 == 0 and dims[2] not in (128, 192)):
            role = "recognizer"
    return OnnxInfo(path, role, dims, n)


def _ordered(files: Iterable[Path], preferred: Sequence[str]) -> list[Path]:
    rank = {name: i for i, name in enumerate(preferred)}
    return sorted(files, key=lambda p: (rank.get(p.name, len(rank)), p.name))


def _candidate_folders(roots: Sequence[str | os.PathLike], pack: str) -> list[Path]:
    """Where a pack named ``pack`` may live under each root, in search order.

    Covers the layouts users end up with: ``<root>/<pack>``, the nested folder from
    unzipping antelopev2.zip into its own folder (``<root>/<pack>/<pack>``),
    insightface's own ``<root>/models/<pack>`` and the nested variant of that."""
    out: list[Path] = []
    p = Path(os.path.expanduser(pack))
    if p.is_absolute():
        out += [p, p / p.name]
    else:
        for root in roots:
            r = Path(os.path.expanduser(str(root)))
            out += [r / pack, r / pack / pack, r / "models" / pack, r / "models" / pack / pack]
    return list(dict.fromkeys(out))


def _search_pack(roots: Sequence[str | os.PathLike], pack: str, with_recognizer: bool
                 ) -> tuple[ModelPack | None, list[str], list[Path]]:
    """The first folder of ``pack`` under ``roots`` with a usable detector, the problems seen on the way (broken
    files, detectors without landmarks) and every folder looked at."""
    folders = _candidate_folders(roots, pack)
    problems: list[str] = []
    for folder in folders:
        if not folder.is_dir():
            continue
        onnx_files = [f for f in folder.iterdir() if f.suffix.lower() == ".onnx" and f.is_file()]
        if not onnx_files:
            continue
        detector = None
        for f in _ordered([f for f in onnx_files if f.name not in KNOWN_OTHERS], KNOWN_DETECTORS):
            try:
                info = inspect_onnx(f)
            except FaceModelError as exc:
                problems.append(str(exc))
                continue
            if info.role == "detector":
                detector = f
                break
            if info.role == "detector_no_kps":
                problems.append(f"{f} is a face detector without the five landmarks that "
                                "alignment needs")
        if detector is None:
            problems.append(f"{folder} holds {sorted(p.name for p in onnx_files)} but no "
                            "usable face detector")
            continue
        recognizer = None
        if with_recognizer:
            recognizer = _find_recognizer(folder, onnx_files, detector, problems)
        logger.info("face model pack %r: %s (detector %s, recognizer %s)", pack, folder,
                    detector.name, recognizer.name if recognizer else None)
        return ModelPack(pack, folder, detector, recognizer, tuple(folders)), problems, folders
    return None, problems, folders


def find_model_pack(roots: Sequence[str | os.PathLike] | str | os.PathLike, pack: str = "antelopev2",
                    *, with_recognizer: bool = False) -> ModelPack:
    """Locate ``pack`` under any of ``roots`` and identify its detector (and, ``with_recognizer``, its recognizer).

    ``pack`` is a folder name, an absolute folder, or ``"auto"`` (see :func:`resolve_auto_pack`).
    Raises FaceModelError naming every folder searched and the files expected when no
    folder holds a usable detector (missing pack, wrong nesting, a broken download,
    or a detector without landmarks)."""
    if isinstance(roots, (str, os.PathLike)):
        roots = [roots]
    if pack == AUTO_PACK:
        return resolve_auto_pack(roots, with_recognizer=with_recognizer)
    found, problems, folders = _search_pack(roots, pack, with_recognizer)
    if found is not None:
        return found
    searched = "\n  ".join(str(f) for f in folders) or "(no folders: no roots given)"
    if problems:  # the pack is there, but broken: say so, not "not found"
        raise FaceModelError(
            f"insightface model pack {pack!r} was found but cannot be used:\n  " + "\n  ".join(problems) +
            f"\nDownload the pack again and unzip it into models/insightface/{pack}/ (expected "
            f"{EXPECTED_FILES_HINT}).")
    # An old workflow names antelopev2 on a machine that has buffalo_l: point at what is there.
    installed = [] if Path(os.path.expanduser(pack)).is_absolute() else list_model_packs(roots)
    other = (f" Installed here: {', '.join(installed)}; choose one of them, or {AUTO_PACK!r} to use whichever "
             "is installed." if installed else "")
    raise FaceModelError(
        f"insightface model pack {pack!r} not found. Searched:\n  {searched}\n"
        f"Expected {EXPECTED_FILES_HINT}. Put the unzipped pack in "
        f"models/insightface/{pack}/ (the .onnx files directly inside, not in a further "
        f"sub-folder).{other} Nothing is downloaded automatically. {PACK_SOURCE_HINT}.")


def resolve_auto_pack(roots: Sequence[str | os.PathLike] | str | os.PathLike, *,
                      with_recognizer: bool = False) -> ModelPack:
    """The model pack that ``pack="auto"`` stands for: antelopev2 when a usable one is installed, else buffalo_l,
    else the first other usable pack folder (roots in order, folders alphabetically, as :func:`list_model_packs`
    lists them). The returned ModelPack carries the real name, and the choice is logged.

    Usable means the folder holds a face detector with landmarks (its ONNX signature is read). A pack that is there
    but broken (truncated download, detector without landmarks) is passed over with a warning, so a half-downloaded
    antelopev2 does not hide a working buffalo_l; whether a pack has a recognizer does not change the choice
    (detection and alignment need none; likeness scores say so when it is missing).

    Raises FaceModelError: the usual "not found" message (where to get a pack, its licence, where to put it) when
    no pack is installed, or every broken pack's problems when none is usable.
    """
    if isinstance(roots, (str, os.PathLike)):
        roots = [roots]
    broken: list[str] = []
    for name in dict.fromkeys([*PREFERRED_PACKS, *list_model_packs(roots)]):
        found, problems, _ = _search_pack(roots, name, with_recognizer)
        if found is not None:
            if broken:
                logger.warning("face model pack %r: passed over unusable pack(s):\n  %s", AUTO_PACK,
                               "\n  ".join(broken))
            logger.info("face model pack %r chose %s (%s)", AUTO_PACK, found.name, found.folder)
            return found
        broken += problems
    if broken:
        raise FaceModelError(
            f"face model pack {AUTO_PACK!r}: insightface model packs were found but none can be used:\n  "
            + "\n  ".join(broken) + "\nDownload the pack again and unzip it into models/insightface/<pack>/ "
            f"(expected {EXPECTED_FILES_HINT}).")
    searched = "\n  ".join(str(Path(os.path.expanduser(str(r)))) for r in roots) or "(no folders: no roots given)"
    raise FaceModelError(
        f"no insightface model pack found (pack {AUTO_PACK!r} uses {' or '.join(PREFERRED_PACKS)}, or any other "
        f"pack folder). Searched these folders and their models/ sub-folders:\n  {searched}\n"
        f"Expected {EXPECTED_FILES_HINT}. Put the unzipped pack in models/insightface/antelopev2/ "
        "(the .onnx files directly inside, not in a further sub-folder). Nothing is downloaded automatically. "
        f"{PACK_SOURCE_HINT}.")


def _find_recognizer(folder: Path, onnx_files: list[Path], detector: Path,
                     problems: list[str]) -> Path | None:
    for f in _ordered([f for f in onnx_files if f != detector and f.name not in KNOWN_OTHERS],
                      KNOWN_RECOGNIZERS):
        try:
            if inspect_onnx(f).role == "recognizer":
                return f
        except FaceModelError as exc:
            problems.append(str(exc))
    return None


def list_model_packs(roots: Sequence[str | os.PathLike]) -> list[str]:
    """Names of folders under ``roots`` (or ``<root>/models``) that contain .onnx files,
    directly or one nested level down; cheap (no ONNX parsing), for node combos."""
    if isinstance(roots, (str, os.PathLike)):
        roots = [roots]
    names: list[str] = []
    for root in roots:
        r = Path(os.path.expanduser(str(root)))
        for base in (r, r / "models"):
            if not base.is_dir():
                continue
            for sub in sorted(base.iterdir()):
                if not sub.is_dir() or sub.name == "models":
                    continue
                if any(sub.glob("*.onnx")) or any((sub / sub.name).glob("*.onnx")):
                    names.append(sub.name)
    return list(dict.fromkeys(names))
