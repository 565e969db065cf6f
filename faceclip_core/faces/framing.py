"""Square crops of a photo around a detected face, at three framings, for training identity embeddings.

- "face": the ArcFace-template alignment FaceCLIP uses (eyes level, forehead and hair cut off).
- "head": upright, the whole head with hair and some air around it.
- "head_and_shoulders": upright, head, neck and shoulders: how portraits are usually framed, and what SDXL sees
  most of in its training data.

Sizes are measured in units of the distance from the eyes' midpoint to the mouth's midpoint, which the five
landmarks give reliably for frontal and turned faces alike. Upright crops are shrunk to fit inside the photo and
shifted to stay in it, so they never show a black border; a photo too tight for the framing gives a tighter crop.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from .align import ARCFACE_TEMPLATE_112, estimate_similarity, matrix_scale, warp_aligned
from .errors import FaceInputError
from .images import check_landmarks

Framing = Literal["face", "head", "head_and_shoulders"]
FRAMINGS: tuple[str, ...] = ("face", "head", "head_and_shoulders")


@dataclass(frozen=True)
class _Upright:
    side: float  # crop side in eye-to-mouth distances
    down: float  # crop centre below the eyes-mouth midpoint, same unit


_UPRIGHT = {"head": _Upright(side=4.6, down=-0.35), "head_and_shoulders": _Upright(side=7.5, down=1.2)}


def framing_matrix(landmarks5: Any, image_size: tuple[int, int], framing: Framing, size: int
                   ) -> tuple[np.ndarray, float]:
    """2x3 matrix taking photo coordinates to the ``size`` x ``size`` crop, and the crop's side in photo pixels
    (what SDXL's ``original_size`` should say). ``image_size`` is (height, width)."""
    if framing not in FRAMINGS:
        raise FaceInputError(f"framing must be one of {', '.join(FRAMINGS)}, got {framing!r}")
    pts = check_landmarks(landmarks5)
    if framing == "face":
        m = estimate_similarity(pts, ARCFACE_TEMPLATE_112 * (size / 112.0))
        return m, size / matrix_scale(m)
    eyes, mouth = pts[:2].mean(axis=0), pts[3:].mean(axis=0)
    unit = max(float(np.linalg.norm(mouth - eyes)), 1.0)
    spec = _UPRIGHT[framing]
    h, w = image_size
    side = min(spec.side * unit, float(h), float(w))
    cx, cy = (eyes + mouth) / 2.0 + np.array([0.0, spec.down * unit])
    x0 = float(np.clip(cx - side / 2.0, 0.0, w - side))
    y0 = float(np.clip(cy - side / 2.0, 0.0, h - side))
    s = size / side
    return np.array([[s, 0.0, -x0 * s], [0.0, s, -y0 * s]]), side


def frame_face(photo_rgb: np.ndarray, landmarks5: Any, framing: Framing, size: int) -> tuple[np.ndarray, float]:
    """The ``size`` x ``size`` uint8 crop of ``photo_rgb`` at ``framing``, and its side in photo pixels."""
    m, side = framing_matrix(landmarks5, photo_rgb.shape[:2], framing, size)
    return warp_aligned(photo_rgb, m, size, antialias=True), side
