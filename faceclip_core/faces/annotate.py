"""Visual feedback: the input photo with every detected face drawn on it, so users can
see which face was used (and which index to ask for) without guessing."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .align import align_face
from .detect import DetectedFace

#: RGB colours (also used by tests to find the highlight).
CHOSEN_COLOR = (0, 230, 64)
OTHER_COLOR = (255, 200, 0)
NO_FACE_COLOR = (230, 32, 32)
# left eye, right eye, nose, mouth left, mouth right (insightface's drawing colours)
LANDMARK_COLORS = ((255, 0, 0), (0, 0, 255), (0, 255, 0), (255, 0, 255), (0, 255, 255))
# Previews are for the UI: an 8K photo stays an 8K array otherwise (200 MB per image).
PREVIEW_MAX_SIDE = 1024


def annotate_faces(image_rgb: np.ndarray, faces: Sequence[DetectedFace],
                   chosen: int | None = None, *, message: str | None = None,
                   max_side: int = PREVIEW_MAX_SIDE) -> np.ndarray:
    """RGB uint8 copy of ``image_rgb`` (shrunk to ``max_side``) with boxes, the five
    landmarks and ``#index score`` labels; the ``chosen`` face gets a thick green box.
    ``message`` (e.g. "no face found") is written in a red banner at the top."""
    import cv2

    img = np.asarray(image_rgb)
    h, w = img.shape[:2]
    f = min(1.0, max_side / max(h, w))
    if f < 1.0:
        out = cv2.resize(img, (max(1, round(w * f)), max(1, round(h * f))),
                         interpolation=cv2.INTER_AREA)
    else:
        out = img.copy()
    out = np.ascontiguousarray(out)
    oh, ow = out.shape[:2]
    unit = max(1, round(max(oh, ow) / 400))  # line width that stays visible at any size
    order = [i for i in range(len(faces)) if i != chosen] + ([chosen] if chosen is not None else [])
    for i in order:  # chosen face last, so it is drawn on top
        face = faces[i]
        color = CHOSEN_COLOR if i == chosen else OTHER_COLOR
        thick = unit * (3 if i == chosen else 1)
        x1, y1, x2, y2 = (int(round(v * f)) for v in face.box)
        cv2.rectangle(out, (x1, y1), (x2, y2), color, thick, cv2.LINE_AA)
        for (px, py), c in zip(face.landmarks, LANDMARK_COLORS, strict=True):
            cv2.circle(out, (int(round(px * f)), int(round(py * f))), max(1, unit + 1), c, -1,
                       cv2.LINE_AA)
        label = f"#{i} {face.score:.2f}"
        scale = 0.45 * unit
        (tw, th), base = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, scale, unit)
        ty = y1 - 3 if y1 - th - 3 > 0 else min(oh - 1, y2 + th + 3)
        cv2.rectangle(out, (x1, ty - th - base), (x1 + tw + 2, ty + base), color, -1)
        cv2.putText(out, label, (x1 + 1, ty), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0),
                    unit, cv2.LINE_AA)
    if message:
        scale = 0.5 * unit
        (tw, th), base = cv2.getTextSize(message, cv2.FONT_HERSHEY_SIMPLEX, scale, unit)
        cv2.rectangle(out, (0, 0), (min(ow, tw + 8), th + base + 8), NO_FACE_COLOR, -1)
        cv2.putText(out, message, (4, th + 4), cv2.FONT_HERSHEY_SIMPLEX, scale,
                    (255, 255, 255), unit, cv2.LINE_AA)
    return out


def face_thumbnails(image_rgb: np.ndarray, faces: Sequence[DetectedFace],
                    size: int = 112) -> np.ndarray:
    """Aligned ``[N, size, size, 3]`` uint8 thumbnails of every face (for a face picker);
    ``size`` a multiple of 112."""
    if not faces:
        return np.zeros((0, size, size, 3), np.uint8)
    return np.stack([align_face(image_rgb, f.landmarks, size, antialias=True) for f in faces])


def letterbox_batch(images: Sequence[np.ndarray]) -> np.ndarray:
    """Stack RGB uint8 pictures of different sizes into one ``[N, H, W, 3]`` batch (the largest height and
    width), each scaled to fit and centred on black, so previews of mixed photos form one IMAGE."""
    import cv2

    if not images:
        raise ValueError("letterbox_batch needs at least one image")
    h = max(im.shape[0] for im in images)
    w = max(im.shape[1] for im in images)
    out = np.zeros((len(images), h, w, 3), np.uint8)
    for i, im in enumerate(images):
        f = min(h / im.shape[0], w / im.shape[1])
        nh, nw = max(1, round(im.shape[0] * f)), max(1, round(im.shape[1] * f))
        fitted = im if (nh, nw) == im.shape[:2] else cv2.resize(im, (nw, nh), interpolation=cv2.INTER_AREA)
        y, x = (h - nh) // 2, (w - nw) // 2
        out[i, y:y + nh, x:x + nw] = fitted
    return out
