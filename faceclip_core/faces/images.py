"""Image normalisation: whatever the caller hands us becomes an RGB uint8 HWC array.

Accepted inputs (per image): numpy arrays, torch tensors (duck-typed, torch is never
imported unless a tensor is passed), PIL images (through ``np.asarray``).
Layouts: HW (greyscale), HWC with C in {1, 3, 4}, CHW with C in {1, 3, 4} when the last
axis is clearly not a channel axis, and a leading batch axis of 1.
Dtypes: uint8; uint16 (scaled down); other integer types holding 0..255; float in
[0, 1] (ComfyUI IMAGE). Alpha is dropped, as FaceCLIP's own loader does
(``PIL.Image.convert('RGB')``).
"""
from __future__ import annotations

import logging
from typing import Any

import numpy as np

from .errors import FaceInputError

logger = logging.getLogger(__name__)

# Floats a little above 1.0 are ordinary in ComfyUI (upscalers overshoot); floats far
# above it almost always mean a 0..255 image stored as float.
_FLOAT_255_THRESHOLD = 1.5


def _where(index: int | None) -> str:
    return "image" if index is None else f"image at batch index {index}"


def _is_torch_tensor(obj: Any) -> bool:
    return type(obj).__module__.startswith("torch") and hasattr(obj, "detach")


def split_images(images: Any) -> list[Any]:
    """Split a batch / list / single image into a list of single images (not converted).

    A 4-D array or tensor ``[B,H,W,C]`` (ComfyUI IMAGE) gives B images; a 2-D or 3-D one
    is a single image; a list or tuple is taken element-wise (each element may itself be
    a batch, which is flattened in order).
    """
    if images is None:
        raise FaceInputError("no image was given")
    if isinstance(images, (list, tuple)):
        out: list[Any] = []
        for item in images:
            out.extend(split_images(item))
        return out
    ndim = getattr(images, "ndim", None)
    if ndim is None:
        images = np.asarray(images)
        ndim = images.ndim
    if ndim == 4:
        return [images[i] for i in range(images.shape[0])]
    return [images]


def _float_scale(lo: float, hi: float, index: int | None) -> float:
    """Factor to 0..255 for float pixels with range [lo, hi]: [0, 1] images (ComfyUI) scale by 255, images that
    are clearly 0..255 already by 1. Non-finite values are refused."""
    if not (np.isfinite(lo) and np.isfinite(hi)):
        raise FaceInputError(f"{_where(index)} contains NaN or infinite values", image_index=index)
    if hi > _FLOAT_255_THRESHOLD:
        logger.warning("%s is float with values above %.1f; treating it as 0..255",
                       _where(index), _FLOAT_255_THRESHOLD)
        return 1.0
    return 255.0


def _tensor_to_uint8(t: Any, index: int | None) -> np.ndarray:
    """Convert a torch tensor with tensor ops (multi-threaded, no float64 copy)."""
    import torch  # only reached when the caller passed a tensor, so torch is installed

    t = t.detach()
    if t.is_floating_point():
        t = t.to(device="cpu", dtype=torch.float32)
        # one pass: NaN propagates into min/max, infinities show up in them
        lo, hi = (float(v) for v in torch.aminmax(t))
        scale = _float_scale(lo, hi, index)
        return t.mul(scale).clamp_(0, 255).round_().to(torch.uint8).numpy()
    return _array_to_uint8(t.cpu().numpy(), index)


def _array_to_uint8(a: np.ndarray, index: int | None) -> np.ndarray:
    if a.dtype == np.uint8:
        return a
    if a.dtype == np.bool_:
        raise FaceInputError(f"{_where(index)} is boolean (a mask?), not an image",
                             image_index=index)
    if np.issubdtype(a.dtype, np.floating):
        a32 = a.astype(np.float32, copy=False)
        lo, hi = float(a32.min()), float(a32.max())  # NaN propagates, inf shows
        scale = _float_scale(lo, hi, index)
        out = np.multiply(a32, scale, dtype=np.float32)
        np.clip(out, 0, 255, out=out)
        np.rint(out, out=out)
        return out.astype(np.uint8)
    if a.dtype == np.uint16:
        return ((a.astype(np.uint32) + 128) // 257).astype(np.uint8)
    if np.issubdtype(a.dtype, np.integer):
        if a.size and (int(a.min()) < 0 or int(a.max()) > 255):
            raise FaceInputError(
                f"{_where(index)} has integer dtype {a.dtype} with values outside 0..255",
                image_index=index)
        return a.astype(np.uint8)
    raise FaceInputError(f"{_where(index)} has unsupported dtype {a.dtype}", image_index=index)


def to_rgb_uint8(image: Any, *, index: int | None = None) -> np.ndarray:
    """Return ``image`` as a C-contiguous ``[H, W, 3]`` uint8 RGB array.

    Raises :class:`FaceInputError` with a message naming the image (``index``) for
    empty arrays, NaN/inf, unsupported dtypes and channel counts other than 1, 3 or 4.
    """
    if image is None:
        raise FaceInputError(f"{_where(index)} is missing (None)", image_index=index)
    if _is_torch_tensor(image):
        shape = tuple(image.shape)
    else:
        if not isinstance(image, np.ndarray):
            image = np.asarray(image)
        shape = image.shape
    if len(shape) == 4:
        if shape[0] != 1:
            raise FaceInputError(
                f"{_where(index)} is a batch of {shape[0]} images; pass it to "
                "prepare_faces or split it with split_images first", image_index=index)
        image = image[0]
        shape = shape[1:]
    if len(shape) not in (2, 3):
        raise FaceInputError(f"{_where(index)} has shape {shape}; expected HW, HWC or CHW",
                             image_index=index)
    if any(int(s) == 0 for s in shape):
        raise FaceInputError(f"{_where(index)} is empty (shape {shape})", image_index=index)
    # CHW (torchvision, PIL ToTensor) when the first axis looks like channels and the
    # last one cannot be: ComfyUI itself is always HWC.
    if len(shape) == 3 and shape[0] in (1, 3, 4) and shape[-1] not in (1, 3, 4):
        image = image.permute(1, 2, 0) if _is_torch_tensor(image) else image.transpose(1, 2, 0)
        shape = (shape[1], shape[2], shape[0])
    if len(shape) == 3 and shape[-1] not in (1, 3, 4):
        raise FaceInputError(
            f"{_where(index)} has {shape[-1]} channels (shape {shape}); expected 1 "
            "(grey), 3 (RGB) or 4 (RGBA)", image_index=index)
    if len(shape) == 3 and shape[-1] == 4:
        image = image[..., :3]  # drop alpha before converting: less work
    a = _tensor_to_uint8(image, index) if _is_torch_tensor(image) else _array_to_uint8(
        np.asarray(image), index)
    if a.ndim == 2:
        a = a[..., None]
    if a.shape[-1] == 1:
        a = np.repeat(a, 3, axis=-1)
    return np.ascontiguousarray(a)


def to_float01(images: np.ndarray) -> np.ndarray:
    """uint8 images -> float32 in [0, 1] (the ComfyUI IMAGE convention), same shape. Divides by 255 exactly as
    torchvision's ToTensor does, so crops reach FaceCLIP bit for bit as in the official pipeline."""
    return np.asarray(images, dtype=np.float32) / np.float32(255.0)


def check_landmarks(landmarks: Any) -> np.ndarray:
    """Return five (x, y) landmarks as float64 ``[5, 2]``, or raise FaceInputError."""
    pts = np.asarray(landmarks, dtype=np.float64)
    if pts.shape == (10,):
        pts = pts.reshape(5, 2)
    if pts.shape != (5, 2):
        raise FaceInputError(f"landmarks must have shape (5, 2), got {pts.shape}")
    if not np.isfinite(pts).all():
        raise FaceInputError("landmarks contain NaN or infinite values")
    return pts
