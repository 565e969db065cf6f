"""Reading and writing .safetensors files of weights: the safetensors library where it does as well, this
module's streaming code where bench/encoder.py measured it better. The only place that handles the format.

Measured with bench/encoder.py and a 3.15 GB bf16 encoder on the CPU (same run, same file):

- reading without a dtype change: the library's zero-copy views of the memory-mapped file loaded in 1.1 s at
  0.82 GiB peak RSS, against 3.9-5.1 s and 3.6 GiB for reading into owned memory, so such tensors come from the
  library (pages are read on first use, and stay reclaimable by the OS while the model is offloaded);
- reading with a dtype change (bf16 file, fp32 or fp16 weights): the library (a converted copy of each mapped
  tensor) peaked at 9.04 GiB, the streaming reader below (plain reads through one scratch buffer) at 6.24 GiB,
  31 % lower, so converted tensors are streamed;
- writing with a dtype change: 3.18 GiB streaming against 9.02 GiB for the library's save_file of a converted
  dict (65 % lower); without one both peaked at 3.16 GiB. One writer, the streaming one, serves both.

The file's header is validated by the library; this module reads its JSON only for the byte offsets the
streaming reader needs.
"""
from __future__ import annotations

import json
import logging
import os
import struct
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from .dtypes import SAFETENSORS_CODES, SAFETENSORS_DTYPES
from .errors import FaceCLIPWeightsError

logger = logging.getLogger(__name__)

StateDict = dict[str, torch.Tensor]
# name -> (dtype, shape, begin, end): byte offsets relative to the data section
Index = dict[str, tuple[torch.dtype, tuple[int, ...], int, int]]


def _corrupt(path: Path, why: str) -> FaceCLIPWeightsError:
    return FaceCLIPWeightsError(f"cannot read {path.name} as safetensors ({why}); the file is truncated or corrupt: "
                                "download or convert it again")


def read_index(path: Path) -> tuple[int, Index]:
    """The file's tensors (after the library validated the header): (start of the data section, index)."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu"):
            pass
    except (SafetensorError, OSError, ValueError) as err:
        raise _corrupt(path, str(err).strip() or type(err).__name__) from err
    with open(path, "rb") as fh:
        (n,) = struct.unpack("<Q", fh.read(8))
        header = json.loads(fh.read(n))
    index = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if info["dtype"] not in SAFETENSORS_DTYPES:
            raise _corrupt(path, f"tensor {name!r} has dtype {info['dtype']}, which this pack does not read")
        begin, end = (int(o) for o in info["data_offsets"])
        index[name] = (SAFETENSORS_DTYPES[info["dtype"]], tuple(int(d) for d in info["shape"]), begin, end)
    return 8 + n, index


def _alloc_weights(nbytes: int) -> torch.Tensor:
    """One uint8 buffer for the converted weights. On Linux it is an anonymous mapping advised to use transparent
    huge pages: first-touching 6 GB in 4 KiB pages costs ~1.5 M page faults (seconds); 2 MiB pages cut that
    512-fold. Falls back to an ordinary allocation elsewhere."""
    try:
        import mmap

        arena = mmap.mmap(-1, max(nbytes, 1))
        if hasattr(mmap, "MADV_HUGEPAGE"):
            arena.madvise(mmap.MADV_HUGEPAGE)
        return torch.frombuffer(arena, dtype=torch.uint8)  # the tensor keeps the mapping alive
    except (ImportError, OSError, ValueError, AttributeError):
        return torch.empty(max(nbytes, 1), dtype=torch.uint8)


def _read_exact(fh: Any, out: torch.Tensor, path: Path, name: str) -> None:
    buf = memoryview(out.numpy()).cast("B")
    got = 0
    while got < len(buf):
        k = fh.readinto(buf[got:])
        if not k:
            raise _corrupt(path, f"unexpected end of file in {name!r}")
        got += k


def _equal_converted(twin: torch.Tensor, value: torch.Tensor, target: torch.dtype) -> bool:
    """``twin == value.to(target)``, checking a small prefix first so that different tensors cost nothing."""
    if twin.dtype != target or twin.shape != value.shape:
        return False
    a, b = twin.reshape(-1), value.reshape(-1)
    k = min(4096, a.numel())
    if not torch.equal(a[:k], b[:k].to(target)):
        return False
    return torch.equal(a, b.to(target))


def read(path: Path, want: Callable[[str, torch.dtype], torch.dtype] | None = None,
         twins: Mapping[str, str] | None = None) -> StateDict:
    """The tensors of a .safetensors file. ``want(name, file_dtype)`` gives the dtype to keep each tensor in:
    tensors in their file dtype are the library's views of the mapped file; the others are streamed and converted
    into one owned buffer, so peak memory is the converted weights plus the largest single tensor.

    ``twins`` maps a tensor name to one read earlier that it probably equals (the G branch's face ViT to the L
    branch's): when equal, the earlier tensor is reused and the twin costs no memory.
    """
    from safetensors import safe_open

    start, index = read_index(path)
    twins = {k: v for k, v in (twins or {}).items() if k in index and v in index}
    targets = {name: (want(name, dtype) if want is not None else dtype) for name, (dtype, *_) in index.items()}
    # Twins last, so the tensor each is compared with exists already.
    order = sorted(index, key=lambda name: (name in twins, index[name][2]))
    align, total, scratch_size, offsets = 64, 0, 0, {}
    for name in order:
        dtype, shape, begin, end = index[name]
        if targets[name] != dtype:
            offsets[name] = total
            nbytes = torch.Size(shape).numel() * torch.empty((), dtype=targets[name]).element_size()
            total += (nbytes + align - 1) // align * align
            scratch_size = max(scratch_size, end - begin)
    arena = _alloc_weights(total) if offsets else None
    scratch = torch.empty(scratch_size, dtype=torch.uint8) if scratch_size else None
    out: StateDict = {}
    with safe_open(str(path), framework="pt", device="cpu") as lib, open(path, "rb", buffering=0) as fh:
        for name in order:
            dtype, shape, begin, end = index[name]
            target = targets[name]
            if name not in offsets:
                value = lib.get_tensor(name)
                out[name] = out[twins[name]] if name in twins and _equal_converted(out[twins[name]], value, target) \
                    else value
                continue
            raw = scratch[:end - begin]
            fh.seek(start + begin)
            _read_exact(fh, raw, path, name)
            value = raw.view(dtype).view(shape)
            if name in twins and _equal_converted(out[twins[name]], value, target):
                out[name] = out[twins[name]]
                continue
            n_out = torch.Size(shape).numel() * torch.empty((), dtype=target).element_size()
            dst = arena[offsets[name]:offsets[name] + n_out].view(target).view(shape)
            dst.copy_(value)
            out[name] = dst
    return out


def write(path: Path, tensors: Mapping[str, torch.Tensor], dtype: torch.dtype | None,
          metadata: Mapping[str, str]) -> int:
    """Stream ``tensors`` to ``path``, casting float tensors to ``dtype`` (None keeps them), one tensor in memory
    at a time; flushed to disk before returning. Returns the file size."""
    def out_dtype(t: torch.Tensor) -> torch.dtype:
        return dtype if dtype is not None and t.is_floating_point() else t.dtype

    names = sorted(tensors)
    entries: dict[str, object] = {"__metadata__": dict(metadata)}
    offset = 0
    for name in names:
        t = tensors[name]
        code = SAFETENSORS_CODES.get(out_dtype(t))
        if code is None:
            raise FaceCLIPWeightsError(f"tensor {name} has dtype {out_dtype(t)}, which safetensors cannot store")
        n = t.numel() * torch.empty((), dtype=out_dtype(t)).element_size()
        entries[name] = {"dtype": code, "shape": list(t.shape), "data_offsets": [offset, offset + n]}
        offset += n
    header = json.dumps(entries, separators=(",", ":")).encode("utf-8")
    header += b" " * (-len(header) % 8)  # the format pads the header with spaces to 8-byte alignment
    with open(path, "wb") as fh:
        fh.write(struct.pack("<Q", len(header)))
        fh.write(header)
        for name in names:
            t = tensors[name].detach().to("cpu", out_dtype(tensors[name])).contiguous()
            # A uint8 view lets numpy hand out the raw bytes for any dtype (numpy has no bfloat16).
            fh.write(t.reshape(-1).view(torch.uint8).numpy().data)
        fh.flush()
        os.fsync(fh.fileno())
    return 8 + len(header) + offset


def verify(path: Path, tensors: Mapping[str, torch.Tensor], dtype: torch.dtype | None) -> None:
    """Read ``path`` back with the library and compare every tensor with what was meant to be written."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as fh:
            keys = set(fh.keys())
            if keys != set(tensors):
                raise FaceCLIPWeightsError(f"verification failed: {path.name} has {len(keys)} tensors, expected "
                                           f"{len(tensors)}")
            for k in sorted(tensors):
                want = tensors[k]
                if dtype is not None and want.is_floating_point():
                    want = want.to(dtype)
                got = fh.get_tensor(k)
                if got.dtype != want.dtype or got.shape != want.shape or not torch.equal(got, want):
                    raise FaceCLIPWeightsError(f"verification failed: tensor {k} differs after writing {path.name}")
    except FaceCLIPWeightsError:
        raise
    except Exception as err:
        raise FaceCLIPWeightsError(f"verification failed: {path.name} does not re-load ({err})") from err
