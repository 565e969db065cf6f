"""The training images of an identity: each photo framed around its face, at the training resolution, with the
size the crop had in the photo (SDXL's ``original_size``) and, when asked, its mirror image.

Both papers train on whole portraits (hair, neck, background), not on tight face crops; head-and-shoulders
framing is the default for that reason. Mirroring happens on the pixels, before the VAE, as the reference code
does (the VAE's latents are only roughly mirror-symmetric).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from ..faces.framing import FRAMINGS, Framing, frame_face
from ..faces.images import to_float01
from ..faces.prepare import PreparedFaces
from .errors import IdentityError

logger = logging.getLogger(__name__)

__all__ = ["FRAMINGS", "TrainingImages", "training_images"]

UPSCALE_WARNING = 1.25  # crops enlarged more than this get a note naming the photo


@dataclass(frozen=True)
class TrainingImages:
    """pixels: [M, S, S, 3] float32 in [0, 1] (ComfyUI IMAGE layout); original_sizes: [M] each crop's side in
    source pixels; notes: what the user should know (e.g. upscaled photos), one line each."""

    pixels: np.ndarray
    original_sizes: np.ndarray
    notes: tuple[str, ...] = ()


def training_images(faces: PreparedFaces, framing: Framing, resolution: int, flip: bool) -> TrainingImages:
    """One crop per photo that has a face (photos without one are left out), then their mirror images."""
    crops, sizes, notes = [], [], []
    total = len(faces.images)
    for im in faces.images:
        if im.status != "ok" or im.face is None:
            continue
        if im.photo is None:
            raise IdentityError("these prepared faces carry no photos to frame; run Prepare Faces again")
        crop, side = frame_face(im.photo, im.face.landmarks, framing, resolution)
        name = f"photo {im.index + 1} of {total}"
        if side * UPSCALE_WARNING < resolution:
            note = (f"{name}: the {framing} crop is {side:.0f} px, upscaled {resolution / side:.1f}x to "
                    f"{resolution} px; a larger photo trains a sharper identity")
            logger.warning(note)
            notes.append(note)
        crops.append(crop)
        sizes.append(round(side))
    if not crops:
        raise IdentityError("none of the photos has a usable face; Prepare Faces found none")
    pixels = to_float01(np.stack(crops))
    original = np.asarray(sizes, dtype=np.int64)
    if flip:
        pixels = np.concatenate([pixels, pixels[:, :, ::-1]])
        original = np.concatenate([original, original])
    return TrainingImages(np.ascontiguousarray(pixels), original, tuple(notes))
