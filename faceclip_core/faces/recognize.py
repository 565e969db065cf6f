"""Optional ArcFace recognition, used only for similarity scores (reference consistency,
output-vs-reference likeness). FaceCLIP itself never sees these embeddings."""
from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .align import align_face
from .errors import FaceInputError, FaceModelError
from .model_packs import ModelPack, find_model_pack, import_insightface_model_zoo, make_session, resolve_providers

logger = logging.getLogger(__name__)


class FaceRecognizer:
    """A loaded ArcFace model; immutable and thread-safe (onnxruntime sessions are)."""

    def __init__(self, arcface: Any, model_path: Path, providers: tuple[str, ...],
                 pack: ModelPack | None = None) -> None:
        self._arcface = arcface
        self.model_path = Path(model_path)
        self.providers = providers
        self.pack = pack
        self.input_size = int(arcface.input_size[0])

    def __repr__(self) -> str:
        return f"FaceRecognizer({self.model_path.name}, providers={list(self.providers)})"

    def embed_aligned(self, crops_rgb: np.ndarray) -> np.ndarray:
        """L2-normalised embeddings ``[N, D]`` of aligned RGB uint8 crops ``[N, S, S, 3]``
        (any S that is a multiple of 112; resized to the model input with area
        averaging, which equals aligning at the model size up to resampling)."""
        import cv2

        crops = np.asarray(crops_rgb)
        if crops.ndim == 3:
            crops = crops[None]
        if crops.ndim != 4 or crops.shape[-1] != 3 or crops.dtype != np.uint8:
            raise FaceInputError(f"embed_aligned needs [N,S,S,3] uint8 crops, got "
                                 f"{crops.shape} {crops.dtype}")
        if len(crops) == 0:
            return np.zeros((0, 0), np.float32)
        s = self.input_size
        bgr = [np.ascontiguousarray(
            (c if c.shape[0] == s else cv2.resize(c, (s, s), interpolation=cv2.INTER_AREA))
            [..., ::-1]) for c in crops]
        feats = np.asarray(self._arcface.get_feat(bgr), np.float32).reshape(len(bgr), -1)
        return _l2_normalise(feats)

    def embed(self, image_rgb: np.ndarray, landmarks5: Any) -> np.ndarray:
        """Embedding ``[D]`` of the face at ``landmarks5`` in a full RGB uint8 image,
        aligned exactly as insightface's ``ArcFaceONNX.get`` does (so scores compare
        with other insightface-based tools)."""
        crop = align_face(image_rgb, landmarks5, self.input_size)
        return self.embed_aligned(crop[None])[0]


def _l2_normalise(x: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.maximum(norm, 1e-12)


def mean_identity(embeddings: np.ndarray, has_face: np.ndarray) -> np.ndarray | None:
    """One identity from several photos: the L2-normalised mean of the face slots' L2-normalised ArcFace
    embeddings; None when no slot has a face or a value is not finite."""
    e = np.asarray(embeddings, dtype=np.float32)[np.asarray(has_face, dtype=bool)]
    if e.shape[0] == 0 or not np.isfinite(e).all():
        return None
    return _l2_normalise(_l2_normalise(e).mean(axis=0, keepdims=True))[0]


def load_face_recognizer(roots: Sequence[str | os.PathLike] | str | os.PathLike,
                         pack: str = "antelopev2", provider: str | Sequence[str] = "CPU"
                         ) -> FaceRecognizer:
    """Load the ArcFace model of ``pack`` (see load_face_detector for roots/provider).
    Raises FaceModelError when the pack has no recognizer."""
    info = find_model_pack(roots, pack, with_recognizer=True)
    if info.recognizer is None:
        raise FaceModelError(
            f"model pack {info.name!r} in {info.folder} has no ArcFace recognition model "
            "(glintr100.onnx in antelopev2, w600k_r50.onnx in buffalo_l); detection and "
            "alignment work without it, similarity scores need it")
    return load_recognizer_file(info.recognizer, provider, pack=info)


def load_recognizer_file(path: str | os.PathLike, provider: str | Sequence[str] = "CPU",
                         *, pack: ModelPack | None = None) -> FaceRecognizer:
    path = Path(path)
    if not path.is_file():
        raise FaceModelError(f"face recognition model not found: {path}")
    zoo = import_insightface_model_zoo()
    session, active = make_session(path, resolve_providers(provider))
    try:
        arcface = zoo.ArcFaceONNX(model_file=str(path), session=session)
    except Exception as exc:
        raise FaceModelError(f"insightface could not use {path} as an ArcFace model: "
                             f"{type(exc).__name__}: {exc}") from exc
    logger.info("face recognizer %s loaded on %s", path, list(active))
    return FaceRecognizer(arcface, path, active, pack)
