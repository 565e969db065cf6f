"""From reference photos to FaceCLIP's input: one aligned 448 crop per photo, in order.

``prepare_faces`` takes one photo or several photos of one person (a ComfyUI IMAGE
batch, a list, arrays or tensors), detects, selects and aligns a face in each, and
returns :class:`PreparedFaces`: the crops as one identity set, a per-image report
(which photos failed and why, by batch index), optional ArcFace embeddings and preview
pictures. How several faces are combined into one conditioning is the encoder's job.

What happens to a photo without a usable face is the caller's choice
(``on_no_face``), because API/batch users asked for runs that do not stop:
* "raise" (default): NoFaceError naming the image and what to try;
* "skip": the photo is left out of the set and reported;
* "text_only": the photo keeps its slot, flagged face-free (an all-zero crop with
  ``has_face`` False), so the encoder takes FaceCLIP's zero-face path for it.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from .align import FACECLIP_FACE_SIZE, alignment_matrix, warp_aligned
from .annotate import annotate_faces, face_thumbnails
from .detect import DetectedFace, DetectionConfig, FaceDetector
from .errors import FaceInputError, NoFaceError
from .images import split_images, to_float01, to_rgb_uint8
from .recognize import FaceRecognizer, mean_identity
from .select import FaceSelection, describe_selection, select_face

logger = logging.getLogger(__name__)

NoFacePolicy = Literal["raise", "skip", "text_only"]
NO_FACE_POLICIES: tuple[str, ...] = ("raise", "skip", "text_only")
ImageStatus = Literal["ok", "skipped", "text_only"]


@dataclass(frozen=True)
class PrepareConfig:
    """Everything ``prepare_faces`` can be told.

    size: crop side (448 for FaceCLIP; any multiple of 112).
    antialias: shrink very large faces with area averaging before the warp (differs from
        ``norm_crop`` only for faces more than twice the crop size, where it removes moire).
    annotate / thumbnails: build preview pictures / aligned thumbnails of every face.
    """

    selection: FaceSelection = field(default_factory=FaceSelection)
    on_no_face: NoFacePolicy = "raise"
    detection: DetectionConfig = field(default_factory=DetectionConfig)
    size: int = FACECLIP_FACE_SIZE
    antialias: bool = True
    annotate: bool = True
    thumbnails: bool = False
    thumbnail_size: int = 112

    def __post_init__(self) -> None:
        if self.on_no_face not in NO_FACE_POLICIES:
            raise ValueError(f"on_no_face must be one of {', '.join(NO_FACE_POLICIES)}, "
                             f"got {self.on_no_face!r}")
        if self.size <= 0 or self.size % 112:
            raise ValueError(f"size must be a positive multiple of 112, got {self.size}")


@dataclass(frozen=True, eq=False)
class PreparedImage:
    """What happened to one input image (``index`` = its position in the input)."""

    index: int
    status: ImageStatus
    faces: tuple[DetectedFace, ...]  # every face found, detector order
    chosen: int | None  # index into ``faces`` of the face used, None if none
    image_size: tuple[int, int]  # (height, width)
    det_size: int | None  # detector input size that found the faces
    reason: str | None = None  # why no face was used (status != "ok")
    slot: int | None = None  # position in PreparedFaces.crops, None when skipped
    annotated: np.ndarray | None = None  # RGB uint8 preview
    thumbnails: np.ndarray | None = None  # [n_faces, t, t, 3] uint8
    photo: np.ndarray | None = None  # the RGB uint8 input image, kept when a face was used (for other framings)

    @property
    def face(self) -> DetectedFace | None:
        return None if self.chosen is None else self.faces[self.chosen]

    def to_dict(self) -> dict:
        return {"index": self.index, "status": self.status, "reason": self.reason,
                "slot": self.slot, "chosen": self.chosen, "det_size": self.det_size,
                "image_size": list(self.image_size),
                "faces": [f.to_dict() for f in self.faces]}


@dataclass(frozen=True, eq=False)
class PreparedFaces:
    """Aligned faces of one identity, in input order (skipped images left out).

    crops: ``[N, size, size, 3]`` uint8 RGB, zeros where ``has_face`` is False.
    has_face: ``[N]`` bool; False marks a text-only (face-free) slot.
    source_indices: input image index of each slot.
    images: one PreparedImage per input image, including skipped ones.
    embeddings: ``[N, D]`` L2-normalised ArcFace embeddings (zero rows for face-free
        slots), or None without a recognizer.
    """

    crops: np.ndarray
    has_face: np.ndarray
    source_indices: tuple[int, ...]
    images: tuple[PreparedImage, ...]
    size: int
    embeddings: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.crops.shape[0])

    @property
    def num_faces(self) -> int:
        return int(self.has_face.sum())

    def identity(self) -> np.ndarray | None:
        """The one identity of these photos (see mean_identity); None without a recognizer or a face."""
        return None if self.embeddings is None else mean_identity(self.embeddings, self.has_face)

    def crops_float(self) -> np.ndarray:
        """Crops as float32 in [0, 1], ``[N, size, size, 3]`` (ComfyUI IMAGE layout;
        also what FaceCLIP's face branch is fed: [0, 1] without normalisation)."""
        return to_float01(self.crops)

    def annotated(self) -> list[np.ndarray | None]:
        """The preview picture of every input image (input order)."""
        return [im.annotated for im in self.images]

    def summary(self) -> str:
        """One line per image, for logs and node UI text."""
        lines = [f"{len(self)} slot(s), {self.num_faces} face(s) from {len(self.images)} image(s)"]
        for im in self.images:
            if im.status == "ok":
                f = im.face
                lines.append(f"image {im.index}: face #{im.chosen} of {len(im.faces)} "
                             f"(score {f.score:.2f}, {f.width:.0f}x{f.height:.0f}px)")
            else:
                lines.append(f"image {im.index}: {im.status}: {im.reason}")
        return "\n".join(lines)


def _no_face_reason(index: int, total: int, faces: tuple, selection: FaceSelection,
                    cfg: DetectionConfig, tried: tuple[int, ...]) -> str:
    where = f"image {index + 1} of {total} (batch index {index})"
    if not faces:
        return (f"{where}: no face found (detector sizes tried: "
                f"{', '.join(map(str, tried)) or 'none'}; threshold {cfg.threshold:g}). "
                "Try a photo where the face is larger, frontal and well lit, crop the "
                "photo around the face, or lower Load Face Detector's threshold (an advanced input)")
    return (f"{where}: {len(faces)} face(s) found, so {describe_selection(selection)} (index "
            f"{selection.index}) does not exist. Use a smaller index or another selection; the preview numbers "
            "every face")


def prepare_faces(images: Any, detector: FaceDetector, *,
                  recognizer: FaceRecognizer | None = None,
                  config: PrepareConfig | None = None,
                  progress: Callable[[int, int], None] | None = None) -> PreparedFaces:
    """Detect, select and align one face per image; see the module docstring.

    ``progress(done, total)`` is called after each image; an exception it raises (e.g.
    ComfyUI's interrupt) stops the loop, so long batches stay responsive.

    Raises NoFaceError (policy "raise", or "skip" when no image at all has a usable
    face: an empty identity would silently give a result without likeness) and
    FaceInputError for unusable inputs (empty, NaN, wrong channel count), whatever the
    policy: those are bugs upstream, not photos without faces.
    """
    cfg = config or PrepareConfig()
    items = split_images(images)
    if not items:
        raise FaceInputError("no images were given")
    total = len(items)
    crops: list[np.ndarray] = []
    has_face: list[bool] = []
    sources: list[int] = []
    embeddings: list[np.ndarray | None] = []
    reports: list[PreparedImage] = []
    for i, item in enumerate(items):
        if progress is not None and i:
            progress(i, total)
        rgb = to_rgb_uint8(item, index=i)
        result = detector.detect(rgb, cfg.detection, index=i)
        chosen = select_face(result.faces, cfg.selection)
        thumbs = (face_thumbnails(rgb, result.faces, cfg.thumbnail_size)
                  if cfg.thumbnails else None)
        if chosen is None:
            reason = _no_face_reason(i, total, result.faces, cfg.selection, cfg.detection,
                                     result.tried_sizes)
            if cfg.on_no_face == "raise":
                # 'skip' only helps when other photos remain: skipping the only photo stops the run anyway.
                policies = "'text_only'" if total == 1 else "'skip' or 'text_only'"
                raise NoFaceError(f"{reason}, or set on_no_face to {policies}.",
                                  image_index=i, faces_found=len(result.faces))
            logger.warning("%s; %s", reason,
                           "image skipped" if cfg.on_no_face == "skip" else "face-free slot")
            status: ImageStatus = "skipped" if cfg.on_no_face == "skip" else "text_only"
            slot = None
            if status == "text_only":
                slot = len(crops)
                crops.append(np.zeros((cfg.size, cfg.size, 3), np.uint8))
                has_face.append(False)
                sources.append(i)
                embeddings.append(None)
            ann = (annotate_faces(rgb, result.faces, None,
                                  message="no face used" if result.faces else "no face found")
                   if cfg.annotate else None)
            reports.append(PreparedImage(i, status, result.faces, None, result.image_size,
                                         result.det_size, reason + ".", slot, ann, thumbs))
            continue
        face = result.faces[chosen]
        m = alignment_matrix(face.landmarks, cfg.size)
        crops.append(warp_aligned(rgb, m, cfg.size, antialias=cfg.antialias))
        has_face.append(True)
        sources.append(i)
        embeddings.append(recognizer.embed(rgb, face.landmarks) if recognizer else None)
        ann = annotate_faces(rgb, result.faces, chosen) if cfg.annotate else None
        reports.append(PreparedImage(i, "ok", result.faces, chosen, result.image_size,
                                     result.det_size, None, len(crops) - 1, ann, thumbs, photo=rgb))
    if progress is not None:
        progress(total, total)
    if not crops:  # everything skipped
        raise NoFaceError(
            f"none of the {total} image(s) has a usable face, so there is no identity "
            "to use:\n" + "\n".join(r.reason or "" for r in reports)
            + "\nSet on_no_face to 'text_only' to continue without a face.",
            image_index=None)
    emb = None
    if recognizer is not None:
        dim = next((e.shape[0] for e in embeddings if e is not None), 0)
        emb = np.stack([e if e is not None else np.zeros(dim, np.float32)
                        for e in embeddings]).astype(np.float32) if embeddings else None
    prepared = PreparedFaces(
        crops=np.stack(crops) if crops else np.zeros((0, cfg.size, cfg.size, 3), np.uint8),
        has_face=np.asarray(has_face, bool), source_indices=tuple(sources),
        images=tuple(reports), size=cfg.size, embeddings=emb)
    logger.info("prepared faces: %s", prepared.summary().replace("\n", "; "))
    return prepared
