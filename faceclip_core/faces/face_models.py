"""A loaded set of face models (detector, optional recognizer, detection settings) and what they do together."""
from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import require_finite
from .detect import DetectionConfig, FaceDetector, load_detector_file
from .errors import FaceModelError
from .model_packs import find_model_pack
from .prepare import PreparedFaces
from .recognize import FaceRecognizer, load_recognizer_file, mean_identity

logger = logging.getLogger(__name__)

# Retry sizes below the chosen one: SCRFD misses faces that fill most of its input frame.
RETRY_SIZES = (640, 480, 320, 160)
DET_STRIDE = 32


@dataclass(frozen=True)
class FaceModels:
    detector: FaceDetector
    recognizer: FaceRecognizer | None
    detection: DetectionConfig

    def require_recognizer(self) -> FaceRecognizer:
        if self.recognizer is None:
            pack = self.detector.pack
            where = f" in {pack.folder}" if pack is not None else ""
            raise FaceModelError(
                f"the face model pack{where} has no ArcFace recognition model, which likeness scores need. "
                "Use a pack that has one (antelopev2: glintr100.onnx; buffalo_l: w600k_r50.onnx).")
        return self.recognizer


def load_face_models(roots: Sequence[str | os.PathLike], pack: str = "antelopev2", provider: str = "CPU",
                     det_size: int = 640, threshold: float = 0.5) -> FaceModels:
    """Detector (required) and recognizer (when the pack has one) of ``pack`` under ``roots``; the pack is found
    and its files inspected once."""
    require_finite(threshold=threshold)  # before the pack is read: NaN passes ComfyUI's min/max check
    info = find_model_pack(roots, pack, with_recognizer=True)
    detector = load_detector_file(info.detector, provider, pack=info)
    recognizer = load_recognizer_file(info.recognizer, provider, pack=info) if info.recognizer else None
    if recognizer is None:
        logger.info("face model pack %s has no recognizer: detection and alignment only", info.folder)
    if det_size % DET_STRIDE:  # the API does not enforce the widget's step; SCRFD needs whole strides
        rounded = max(DET_STRIDE, round(det_size / DET_STRIDE) * DET_STRIDE)
        logger.warning("det_size %d is not a multiple of %d (the detector's largest stride); using %d",
                       det_size, DET_STRIDE, rounded)
        det_size = rounded
    sizes = tuple(dict.fromkeys([det_size, *(s for s in RETRY_SIZES if s < det_size)]))
    return FaceModels(detector, recognizer, DetectionConfig(det_sizes=sizes, threshold=threshold))


def reference_embedding(reference: PreparedFaces, recognizer: FaceRecognizer) -> np.ndarray:
    """One identity vector: the L2-normalised mean of the reference faces' ArcFace embeddings."""
    emb = reference.embeddings if reference.embeddings is not None else recognizer.embed_aligned(reference.crops)
    identity = mean_identity(emb, reference.has_face)
    if identity is None:
        raise FaceModelError("the reference has no face to compare with (every slot is face-free)")
    return identity


def similarity_to_reference(reference: PreparedFaces, generated: PreparedFaces,
                            recognizer: FaceRecognizer) -> np.ndarray:
    """Cosine similarity of every generated slot to the reference identity; NaN where no face was found."""
    ref = reference_embedding(reference, recognizer)
    if not generated.has_face.any():
        return np.full(len(generated), np.nan, np.float32)
    emb = generated.embeddings
    if emb is None:
        emb = recognizer.embed_aligned(generated.crops)
    scores = (emb @ ref).astype(np.float32)
    scores[~generated.has_face] = np.nan
    return scores
