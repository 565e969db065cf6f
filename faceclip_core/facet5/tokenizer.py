"""The two tokenizers FaceT5 needs, with the official FLUX conventions.

- T5: ``T5TokenizerFast`` on the whole prompt, ``max_length=512, padding="max_length", truncation=True``: 511 ids
  + ``</s>`` (1) at most, padded with 0 to 512. Done here with the ``tokenizers`` library (what T5TokenizerFast
  runs) on a ``tokenizer.json`` the caller names. ComfyUI ships the FLUX-era one at
  ``<ComfyUI>/comfy/text_encoders/t5_tokenizer/tokenizer.json``; this package never imports ComfyUI, so the path
  is an argument, or found next to a ComfyUI root, an already-imported ``comfy`` package, or this pack's install.
  ComfyUI's own FLUX text path is NOT the official tokenisation (per-word, weight syntax, padded to 256).
- CLIP-L: Hugging Face's ``CLIPTokenizer`` as FLUX.1-dev configures it (77 tokens, padded with EOT, no HTML
  unescaping), through this pack's BPE tokenizer with ``HF_CLIP`` conventions.
"""
from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Mapping, Sequence
from functools import lru_cache
from pathlib import Path

import torch

from ..errors import FaceCLIPError, require
from ..sdxl.tokenizer import HF_CLIP, TokenizedBatch, check_prompts, cut_notice, tokenize_batch
from .config import T5_LENGTH

logger = logging.getLogger(__name__)

T5_PAD_ID = 0
T5_EOS_ID = 1
T5_UNK_ID = 2
# Where ComfyUI keeps the T5 tokenizer, relative to its root folder.
COMFYUI_T5_TOKENIZER = Path("comfy", "text_encoders", "t5_tokenizer", "tokenizer.json")


class FaceT5TokenizerError(FaceCLIPError):
    """The T5 tokenizer.json is missing, unreadable or not a T5 tokenizer."""


def _candidate_roots(comfy_root: str | os.PathLike | None) -> list[Path]:
    if comfy_root is not None:
        return [Path(comfy_root)]
    roots = []
    comfy = sys.modules.get("comfy")  # inside ComfyUI it is imported already; looking it up imports nothing
    if comfy is not None and getattr(comfy, "__file__", None):
        roots.append(Path(comfy.__file__).resolve().parents[1])
    elif comfy is not None:  # ComfyUI's comfy is a namespace package (no __init__.py): no __file__, a __path__
        roots.extend(Path(p).resolve().parent for p in getattr(comfy, "__path__", ()))
    here = Path(__file__).resolve().parents
    if len(here) > 4:  # <ComfyUI>/custom_nodes/<this pack>/faceclip_core/facet5/tokenizer.py
        roots.append(here[4])
    return roots


def find_t5_tokenizer(comfy_root: str | os.PathLike | None = None) -> Path:
    """The T5 ``tokenizer.json`` ComfyUI ships, under ``comfy_root`` (a ComfyUI folder) or, without one, the
    running ComfyUI's / the one this pack is installed in."""
    tried = []
    for root in _candidate_roots(comfy_root):
        for path in (root / COMFYUI_T5_TOKENIZER, root.parent / COMFYUI_T5_TOKENIZER):  # root or root/comfy
            if path.is_file():
                return path
            tried.append(str(path))
    raise FaceT5TokenizerError(
        "FaceT5 needs the T5 tokenizer.json that ComfyUI ships (comfy/text_encoders/t5_tokenizer/tokenizer.json); "
        f"it was not found at {', '.join(dict.fromkeys(tried))}. Pass its path (t5_tokenizer=...) or the ComfyUI "
        "folder.")


class T5Tokenizer:
    """A T5 ``tokenizer.json`` used as FLUX's pipeline uses T5TokenizerFast (see the module docstring)."""

    def __init__(self, path: str | os.PathLike, max_length: int = T5_LENGTH) -> None:
        tokenizers = require("tokenizers", "tokenizers>=0.13.3", "FaceT5's T5 tokenizer")
        self.path = Path(path)
        self.max_length = max_length
        if not self.path.is_file():
            raise FaceT5TokenizerError(f"T5 tokenizer file not found: {self.path}")
        try:
            # Two copies: the plain one measures each prompt; the truncating one (the library's own rule, so
            # the kept ids are exactly T5TokenizerFast's) is used only for prompts that are too long.
            self._plain = tokenizers.Tokenizer.from_file(str(self.path))
            self._truncating = tokenizers.Tokenizer.from_file(str(self.path))
        except Exception as err:  # the library raises its own exception types for bad JSON
            raise FaceT5TokenizerError(f"cannot read {self.path} as a tokenizers tokenizer.json ({err})") from err
        self._plain.no_truncation()
        self._plain.no_padding()
        self._truncating.enable_truncation(max_length=max_length)
        self._truncating.no_padding()
        self._lock = threading.Lock()
        specials = {name: self._plain.token_to_id(name) for name in ("<pad>", "</s>", "<unk>")}
        if specials != {"<pad>": T5_PAD_ID, "</s>": T5_EOS_ID, "<unk>": T5_UNK_ID} or \
                self._plain.encode("").ids != [T5_EOS_ID]:
            raise FaceT5TokenizerError(
                f"{self.path} is not a T5 tokenizer (special ids {specials}, an empty prompt gives "
                f"{self._plain.encode('').ids}; expected <pad> 0, </s> 1, <unk> 2 and [1])")

    def __call__(self, texts: Sequence[str]) -> TokenizedBatch:
        """int64 ids [B, max_length] and each prompt's untruncated length (``</s>`` included)."""
        texts = check_prompts(texts)
        ids = torch.full((len(texts), self.max_length), T5_PAD_ID, dtype=torch.long)
        with self._lock:  # a Tokenizer's settings are shared state; calls from several threads take turns
            encodings = self._plain.encode_batch(texts) if texts else []
            lengths = [len(e.ids) for e in encodings]
            for row, (text, enc) in enumerate(zip(texts, encodings, strict=True)):
                row_ids = enc.ids if len(enc.ids) <= self.max_length else self._truncating.encode(text).ids
                ids[row, :len(row_ids)] = torch.tensor(row_ids, dtype=torch.long)
        return TokenizedBatch(ids=ids, lengths=lengths)


@lru_cache(maxsize=4)
def _cached_t5_tokenizer(path: str) -> T5Tokenizer:
    return T5Tokenizer(path)


def get_t5_tokenizer(tokenizer_json: str | os.PathLike | None = None,
                     comfy_root: str | os.PathLike | None = None) -> T5Tokenizer:
    """The shared T5 tokenizer for ``tokenizer_json`` (default: :func:`find_t5_tokenizer`); built once per file."""
    path = Path(tokenizer_json) if tokenizer_json is not None else find_t5_tokenizer(comfy_root)
    return _cached_t5_tokenizer(str(path.resolve()))


def tokenize_t5(texts: Sequence[str], tokenizer_json: str | os.PathLike | None = None,
                comfy_root: str | os.PathLike | None = None) -> torch.Tensor:
    """Official FaceT5 T5 ids, int64 [B, 512]; logs a warning for each prompt that had to be truncated."""
    batch = get_t5_tokenizer(tokenizer_json, comfy_root)(texts)
    for i, n in enumerate(batch.lengths):
        if n > T5_LENGTH:
            logger.warning("FaceT5: prompt %d is %d T5 tokens long; only the first %d are used (official truncation: "
                           "%d ids + end of sequence)", i, n, T5_LENGTH, T5_LENGTH - 1)
    return batch.ids


def cut_notices(texts: Mapping[str, str], tokenizer_json: str | os.PathLike | None = None,
                comfy_root: str | os.PathLike | None = None) -> list[str]:
    """One notice per named text longer than the 512 T5 tokens FaceT5 reads. CLIP-L's 77 are not a cut worth
    saying: T5 reads the whole prompt, CLIP-L gives only FLUX's pooled summary, and the official pipeline cuts
    it the same way (the shipped negative alone is 109 CLIP-L tokens)."""
    batch = get_t5_tokenizer(tokenizer_json, comfy_root)(list(texts.values()))
    return [cut_notice(name, n, T5_LENGTH, "FaceT5's T5") for name, n in zip(texts, batch.lengths, strict=True)
            if n > T5_LENGTH]


def tokenize_clip(texts: Sequence[str]) -> torch.Tensor:
    """Official FaceT5 CLIP-L ids, int64 [B, 77]: BOS, BPE ids, EOS, padded with EOS (Hugging Face conventions).
    A longer prompt is cut as FLUX's pipeline cuts it, logged at debug level only (see :func:`cut_notices`)."""
    return tokenize_batch(texts, warn_label="FaceT5 CLIP-L prompt", conventions=HF_CLIP, cut_level=logging.DEBUG).ids


def tokenize(texts: Sequence[str], tokenizer_json: str | os.PathLike | None = None,
             comfy_root: str | os.PathLike | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Both id tensors for ``texts``: (T5 ids [B, 512], CLIP-L ids [B, 77])."""
    texts = check_prompts(texts)
    return tokenize_t5(texts, tokenizer_json, comfy_root), tokenize_clip(texts)

