"""Five-point face alignment to the ArcFace template (what FaceCLIP was trained on).

FaceCLIP expects a square crop aligned like insightface's
``face_align.norm_crop(img, kps, image_size=448)``: a least-squares similarity transform
(rotation + uniform scale + translation, no shear) from the five detected landmarks to
the ArcFace 112-pixel template scaled by ``size / 112``, then a bilinear
``cv2.warpAffine`` with a black border. This module re-implements the estimation
(Umeyama 1991, the same method scikit-image uses) so alignment needs only numpy + cv2
and never imports insightface.
"""
from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np

from .errors import FaceInputError
from .images import check_landmarks

logger = logging.getLogger(__name__)

#: ArcFace five-point template for a 112x112 crop: left eye, right eye, nose tip,
#: left mouth corner, right mouth corner (image left/right, x then y).
ARCFACE_TEMPLATE_112 = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
     [41.5493, 92.3655], [70.7299, 92.2041]], dtype=np.float64)

#: FaceCLIP's face input size (its assets are norm_crop-aligned at 448).
FACECLIP_FACE_SIZE = 448

# Below this output/input scale a bilinear warp samples too sparsely and aliases
# (moire on hair and fabric); prepare_faces then pre-shrinks with INTER_AREA.
_ANTIALIAS_BELOW_SCALE = 0.5


def template_landmarks(size: int = FACECLIP_FACE_SIZE) -> np.ndarray:
    """The ArcFace template for a ``size`` x ``size`` crop (``size`` a multiple of 112)."""
    _check_size(size)
    return ARCFACE_TEMPLATE_112 * (size / 112.0)


def _check_size(size: int) -> None:
    if not isinstance(size, (int, np.integer)) or size <= 0 or size % 112 != 0:
        # norm_crop's 128-based variant shifts x by 8*ratio; FaceCLIP never uses it, and
        # accepting it silently would produce crops that look right but are not.
        raise FaceInputError(f"alignment size must be a positive multiple of 112, got {size!r}")


def estimate_similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity transform mapping ``src`` points onto ``dst`` (Umeyama).

    Returns the 2x3 matrix ``M`` with ``dst ~= M @ [x, y, 1]``. Raises FaceInputError
    for degenerate point sets (all points equal).
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    n = src.shape[0]
    src_mean = src.mean(axis=0)
    dst_mean = dst.mean(axis=0)
    src_c = src - src_mean
    dst_c = dst - dst_mean
    src_var = float((src_c ** 2).sum() / n)
    if not src_var > 1e-12:
        raise FaceInputError("landmarks are degenerate (all five points coincide)")
    cov = dst_c.T @ src_c / n
    u, sing, vt = np.linalg.svd(cov)
    # Force a proper rotation (det +1): a mirrored face must not be "aligned" by a flip.
    d = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        d[-1] = -1.0
    rot = u @ np.diag(d) @ vt
    scale = float(sing @ d) / src_var
    m = np.empty((2, 3), dtype=np.float64)
    m[:, :2] = scale * rot
    m[:, 2] = dst_mean - scale * (rot @ src_mean)
    return m


def alignment_matrix(landmarks5: Any, size: int = FACECLIP_FACE_SIZE) -> np.ndarray:
    """2x3 matrix taking image coordinates to the aligned ``size`` crop."""
    pts = check_landmarks(landmarks5)
    return estimate_similarity(pts, template_landmarks(size))


def transform_points(points: Any, matrix: np.ndarray) -> np.ndarray:
    """Apply a 2x3 affine matrix to ``[N, 2]`` points."""
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    return pts @ np.asarray(matrix, dtype=np.float64)[:, :2].T + np.asarray(matrix)[:, 2]


def matrix_scale(matrix: np.ndarray) -> float:
    """Uniform scale of a similarity matrix (output pixels per input pixel)."""
    return float(math.hypot(matrix[0, 0], matrix[1, 0]))


def _check_image(image: Any) -> np.ndarray:
    img = np.asarray(image)
    if img.ndim not in (2, 3) or img.size == 0:
        raise FaceInputError(f"align_face needs an HW or HWC image, got shape {img.shape}")
    if img.dtype != np.uint8:
        raise FaceInputError(
            f"align_face needs a uint8 image, got {img.dtype}; convert with to_rgb_uint8")
    return img


def warp_aligned(image: np.ndarray, matrix: np.ndarray, size: int,
                 *, antialias: bool = False) -> np.ndarray:
    """Warp ``image`` with ``matrix`` into a ``size`` x ``size`` crop (black outside).

    With ``antialias`` and a strong downscale (a face much larger than ``size``), the
    region that lands in the crop is first shrunk with area averaging so the bilinear
    warp does not alias. The result then differs slightly from ``norm_crop`` (which
    aliases) but is a better picture of the same geometry.
    """
    import cv2  # lazily: importing faceclip_core must not need OpenCV

    m = np.asarray(matrix, dtype=np.float64)
    scale = matrix_scale(m)
    if antialias and scale < _ANTIALIAS_BELOW_SCALE:
        image, m = _shrink_region(image, m, size, scale)
    return cv2.warpAffine(image, m, (size, size), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def _shrink_region(image: np.ndarray, m: np.ndarray, size: int,
                   scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Crop the source region that maps into the output, area-resize it so the remaining
    warp scale is about 1, and return the new image with the adjusted matrix."""
    import cv2

    h, w = image.shape[:2]
    full = np.vstack([m, [0.0, 0.0, 1.0]])
    inv = np.linalg.inv(full)
    corners = np.array([[0, 0], [size, 0], [0, size], [size, size]], dtype=np.float64)
    src = transform_points(corners, inv[:2])
    margin = 2.0 / scale  # a couple of output pixels of context for the bilinear taps
    x0 = int(max(0, math.floor(src[:, 0].min() - margin)))
    y0 = int(max(0, math.floor(src[:, 1].min() - margin)))
    x1 = int(min(w, math.ceil(src[:, 0].max() + margin)))
    y1 = int(min(h, math.ceil(src[:, 1].max() + margin)))
    if x1 - x0 < 2 or y1 - y0 < 2:
        return image, m  # the face lies outside the image: nothing to shrink
    region = image[y0:y1, x0:x1]
    new_w = max(1, int(round((x1 - x0) * scale)))
    new_h = max(1, int(round((y1 - y0) * scale)))
    small = cv2.resize(region, (new_w, new_h), interpolation=cv2.INTER_AREA)
    fx = new_w / (x1 - x0)
    fy = new_h / (y1 - y0)
    # Pixel centres: small (u, v) covers source centre ((u + .5) / f - .5 + offset).
    to_src = np.array([[1.0 / fx, 0.0, 0.5 / fx - 0.5 + x0],
                       [0.0, 1.0 / fy, 0.5 / fy - 0.5 + y0],
                       [0.0, 0.0, 1.0]])
    return small, (full @ to_src)[:2]


def align_face(image_rgb_uint8: Any, landmarks5: Any, size: int = FACECLIP_FACE_SIZE,
               *, antialias: bool = False) -> np.ndarray:
    """Crop and align one face like insightface ``norm_crop(img, kps, size)``.

    ``image_rgb_uint8``: ``[H, W, 3]`` (or ``[H, W]``) uint8; the channel order is kept,
    so RGB in gives RGB out. ``landmarks5``: five (x, y) points in image pixels, in
    insightface order (left eye, right eye, nose, left mouth, right mouth as seen in the
    image). ``size``: a multiple of 112 (448 for FaceCLIP, 112 for ArcFace).
    With ``antialias=False`` (the default) the result matches ``norm_crop`` within
    rounding; see :func:`warp_aligned` for ``antialias=True``.
    """
    img = _check_image(image_rgb_uint8)
    m = alignment_matrix(landmarks5, size)
    return warp_aligned(img, m, size, antialias=antialias)
