"""Face detection with insightface's SCRFD on onnxruntime.

Design notes:
* The SCRFD object is shared (nodes cache one detector and ComfyUI may run prompts
  concurrently), so it is never mutated after loading: the detector input size and the
  threshold are passed per call. Peer packs shrink ``det_model.input_size`` in place for
  their retry loop, which races between threads.
* Large images are shrunk once with area averaging before detection (SCRFD's own
  ``cv2.resize`` is bilinear without anti-aliasing, poor for 8K -> 640), boxes and
  landmarks are scaled back, and crops are later cut from the full-resolution image.
* insightface expects OpenCV BGR; everything outside this module is RGB.
"""
from __future__ import annotations

import inspect
import logging
import math
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import FaceInputError, FaceModelError
from .images import to_rgb_uint8
from .model_packs import ModelPack, find_model_pack, import_insightface_model_zoo, make_session, resolve_providers

logger = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class DetectedFace:
    """One detected face, in pixel coordinates of the full-resolution input image."""

    box: tuple[float, float, float, float]  # x1, y1, x2, y2
    score: float
    landmarks: np.ndarray  # [5, 2] float32: left eye, right eye, nose, mouth left, right
    det_size: int  # detector input size that found it

    @property
    def width(self) -> float:
        return self.box[2] - self.box[0]

    @property
    def height(self) -> float:
        return self.box[3] - self.box[1]

    @property
    def area(self) -> float:
        return max(0.0, self.width) * max(0.0, self.height)

    @property
    def center(self) -> tuple[float, float]:
        return ((self.box[0] + self.box[2]) / 2.0, (self.box[1] + self.box[3]) / 2.0)

    def to_dict(self) -> dict:
        """JSON-friendly form (for node outputs / UI)."""
        return {"box": [round(float(v), 2) for v in self.box], "score": round(self.score, 4),
                "landmarks": np.round(self.landmarks, 2).tolist(), "det_size": self.det_size}


@dataclass(frozen=True)
class DetectionConfig:
    """How to run the detector.

    det_sizes: detector input sizes (square, multiples of 32); the first is used, the
        others are retries, in order, only while nothing is found. Smaller sizes find
        faces that fill the frame (SCRFD's anchors are tuned for smaller faces).
    threshold: minimum detection score.
    min_face_size: drop faces whose shorter box side is below this many pixels of the
        original image (0 keeps all).
    """

    det_sizes: tuple[int, ...] = (640, 480, 320, 160)
    threshold: float = 0.5
    min_face_size: float = 0.0

    def __post_init__(self) -> None:
        sizes = tuple(int(s) for s in self.det_sizes)
        if not sizes or any(s < 32 or s % 32 for s in sizes):
            raise ValueError(f"det_sizes must be multiples of 32 (>= 32), got {self.det_sizes}")
        if not 0.0 < float(self.threshold) < 1.0:
            raise ValueError(f"threshold must lie in (0, 1), got {self.threshold}")
        object.__setattr__(self, "det_sizes", sizes)


@dataclass(frozen=True, eq=False)
class DetectionResult:
    """All faces of one image plus how they were found."""

    faces: tuple[DetectedFace, ...]  # sorted by score, highest first (detector order)
    image_size: tuple[int, int]  # (height, width) of the full-resolution image
    det_size: int | None  # the input size that produced ``faces`` (None: none found)
    tried_sizes: tuple[int, ...] = field(default=())


class FaceDetector:
    """A loaded SCRFD detector. Immutable after construction and safe to share between
    threads: every call passes its own input size and threshold."""

    def __init__(self, scrfd: Any, model_path: Path, providers: tuple[str, ...],
                 pack: ModelPack | None = None) -> None:
        self._scrfd = scrfd
        self.model_path = Path(model_path)
        self.providers = providers  # what onnxruntime actually runs (session.get_providers())
        self.pack = pack
        self.static_input_size = _static_size(scrfd)
        params = inspect.signature(scrfd.detect).parameters
        # insightface 2.x takes det_thresh per call; 0.7.x only reads the instance value.
        self._per_call_threshold = "det_thresh" in params
        self._instance_threshold = float(getattr(scrfd, "det_thresh", 0.5))
        self._warned_threshold = threading.Event()

    def __repr__(self) -> str:
        return f"FaceDetector({self.model_path.name}, providers={list(self.providers)})"

    # -- one detector pass -------------------------------------------------------------

    def _run(self, bgr: np.ndarray, size: int, threshold: float):
        """Detect on ``bgr`` (already small enough) at detector input ``size``."""
        if self.static_input_size is not None:
            # A fixed-size model cannot be asked for another input size. Padding the image
            # bottom/right (insightface pads there too) makes the content occupy
            # size/static of the frame: the same scale a smaller input would give, and
            # coordinates are unchanged because the padding is after the content.
            static = self.static_input_size
            if size < static:
                h, w = bgr.shape[:2]
                side = int(math.ceil(max(h, w) * static / size))
                canvas = np.zeros((max(h, side), max(w, side), 3), np.uint8)
                canvas[:h, :w] = bgr
                bgr = canvas
            size = static
        if self._per_call_threshold:
            dets, kpss = self._scrfd.detect(bgr, input_size=(size, size), max_num=0,
                                            det_thresh=threshold)
        else:
            if threshold < self._instance_threshold and not self._warned_threshold.is_set():
                self._warned_threshold.set()
                logger.warning("this insightface version fixes the detection threshold at "
                               "%.2f; lower thresholds need insightface >= 2.1",
                               self._instance_threshold)
            dets, kpss = self._scrfd.detect(bgr, input_size=(size, size), max_num=0)
            keep = dets[:, 4] >= threshold
            dets = dets[keep]
            kpss = kpss[keep] if kpss is not None else None
        if kpss is None:
            raise FaceModelError(f"{self.model_path.name} returned no landmarks; a SCRFD "
                                 "model with keypoints (…_kps / bnkps, det_10g) is needed")
        return np.asarray(dets, np.float32), np.asarray(kpss, np.float32)

    # -- public ------------------------------------------------------------------------

    def detect(self, image: Any, config: DetectionConfig | None = None,
               *, index: int | None = None) -> DetectionResult:
        """Every face in ``image`` (any format :func:`to_rgb_uint8` accepts).

        ``index`` only names the image in error messages."""
        import cv2

        config = config or DetectionConfig()
        rgb = image if _is_rgb_uint8(image) else to_rgb_uint8(image, index=index)
        h, w = rgb.shape[:2]
        # Shrink once to the largest detector size (area averaging), then cascade down.
        base = _shrink(rgb, max(config.det_sizes), cv2)
        base_bgr = np.ascontiguousarray(base[..., ::-1])
        tried: list[int] = []
        for size in config.det_sizes:
            tried.append(size)
            work = _shrink(base_bgr, size, cv2)
            if min(work.shape[:2]) * size < max(work.shape[:2]):
                # insightface would resize the short side to 0 pixels (a 1x2000 strip):
                # there is no face to find at this size
                continue
            dets, kpss = self._run(work, size, float(config.threshold))
            # back to full resolution (plain scaling, as insightface maps its own resize)
            sx, sy = w / work.shape[1], h / work.shape[0]
            faces = []
            for det, kps in zip(dets, kpss, strict=True):
                box = (float(det[0] * sx), float(det[1] * sy),
                       float(det[2] * sx), float(det[3] * sy))
                lm = (kps * np.array([sx, sy], np.float32)).astype(np.float32)
                face = DetectedFace(box, float(det[4]), lm, size)
                if min(face.width, face.height) < config.min_face_size:
                    continue
                faces.append(face)
            if faces:
                faces.sort(key=lambda f: -f.score)
                logger.debug("found %d face(s) at detector size %d", len(faces), size)
                return DetectionResult(tuple(faces), (h, w), size, tuple(tried))
            logger.debug("no face at detector size %d", size)
        return DetectionResult((), (h, w), None, tuple(tried))


def _is_rgb_uint8(image: Any) -> bool:
    return (isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.ndim == 3
            and image.shape[2] == 3 and image.size > 0)


def _shrink(img: np.ndarray, max_side: int, cv2) -> np.ndarray:
    """Area-downscale so the longer side is at most ``max_side`` (else return as is)."""
    h, w = img.shape[:2]
    if max(h, w) <= max_side:
        return img
    f = max_side / max(h, w)
    nw, nh = max(1, int(round(w * f))), max(1, int(round(h * f)))
    return cv2.resize(img, (nw, nh), interpolation=cv2.INTER_AREA)


def _static_size(scrfd: Any) -> int | None:
    """Input side of a fixed-size detector model, None for dynamic ones."""
    static = getattr(scrfd, "static_input_size", None)
    if static is None:
        shape = getattr(scrfd, "input_shape", None) or []
        if len(shape) == 4 and all(isinstance(v, int) and v > 0 for v in shape[2:]):
            static = (shape[3], shape[2])
    if static is None:
        return None
    wdt, hgt = (int(v) for v in static)
    if wdt != hgt:
        raise FaceModelError(f"fixed-size detector with non-square input {static} "
                             "is not supported")
    return wdt


def load_face_detector(roots: Sequence[str | os.PathLike] | str | os.PathLike,
                       pack: str = "antelopev2", provider: str | Sequence[str] = "CPU"
                       ) -> FaceDetector:
    """Load the SCRFD detector of model pack ``pack`` found under ``roots``.

    ``roots``: every folder registered for insightface models (the nodes pass all of
    them, extra_model_paths.yaml included); ``pack`` may also be an absolute folder.
    ``provider``: "CPU" (default), "CUDA", "ROCm", "CoreML", "DirectML", "auto", or
    onnxruntime provider names. Never downloads anything.
    """
    info = find_model_pack(roots, pack)
    return load_detector_file(info.detector, provider, pack=info)


def load_detector_file(path: str | os.PathLike, provider: str | Sequence[str] = "CPU",
                       *, pack: ModelPack | None = None) -> FaceDetector:
    """Load one SCRFD ONNX file (see :func:`load_face_detector`)."""
    path = Path(path)
    if not path.is_file():
        raise FaceModelError(f"face detector model not found: {path}")
    zoo = import_insightface_model_zoo()
    providers = resolve_providers(provider)
    session, active = make_session(path, providers)
    outs = len(session.get_outputs())
    if outs not in (9, 15):
        raise FaceModelError(
            f"{path} has {outs} outputs; a SCRFD detector with landmarks has 9 or 15 "
            "(is this the right file?)")
    try:
        try:
            # One session for every input size (the historical behaviour): insightface
            # 2.x's per-size static sessions would rewrite and reload the model per size.
            scrfd = zoo.SCRFD(model_file=str(path), session=session, static_shape_sessions=False)
        except TypeError:  # insightface 0.7.x
            scrfd = zoo.SCRFD(model_file=str(path), session=session)
    except FaceModelError:
        raise
    except Exception as exc:
        raise FaceModelError(f"insightface could not use {path} as a SCRFD detector: "
                             f"{type(exc).__name__}: {exc}") from exc
    detector = FaceDetector(scrfd, path, active, pack)
    logger.info("face detector %s loaded on %s", path, list(active))
    return detector


def detect_faces(image: Any, detector: FaceDetector,
                 config: DetectionConfig | None = None) -> list[DetectedFace]:
    """Every face in ``image`` with box, score and five landmarks (full-resolution
    pixel coordinates), highest score first; empty when none is found at any size."""
    if not isinstance(detector, FaceDetector):
        raise FaceInputError("detect_faces needs a FaceDetector (see load_face_detector)")
    return list(detector.detect(image, config).faces)
