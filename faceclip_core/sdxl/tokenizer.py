"""CLIP byte-level BPE tokenizer giving the same ids as the one FaceCLIP uses (open_clip's SimpleTokenizer).

FaceCLIP's text towers were trained with open_clip's tokenizer, which differs from the Hugging Face / ComfyUI
CLIP tokenizers in ways that change the ids: it pads with 0 (not EOT), lower-cases after ftfy and a double HTML
unescape, and has no prompt-weight syntax. The merge list ships in ``data/`` so nothing is downloaded.

FaceT5 (the FLUX variant) feeds its CLIP-L through Hugging Face's slow ``CLIPTokenizer`` instead: the same BPE and
merges, but padded with EOT, no HTML unescaping, and the literal ``<|startoftext|>`` / ``<|endoftext|>`` read as
those tokens. ``HF_CLIP`` selects these conventions; ``OPEN_CLIP`` (the default) is FaceCLIP-SDXL's.
"""
from __future__ import annotations

import gzip
import html
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch

from ..errors import FaceCLIPInputError, require

logger = logging.getLogger(__name__)

CONTEXT_LENGTH = 77
SOT_ID = 49406
EOT_ID = 49407
PAD_ID = 0
VOCAB_SIZE = 49408

_VOCAB_FILE = Path(__file__).parent.parent / "data" / "bpe_simple_vocab_16e6.txt.gz"
# The first line of the file is a header; the next 48,894 lines are the merges, in priority order. With 256 byte
# symbols, their 256 end-of-word forms and two specials that gives the 49,408-entry table of the text towers.
_NUM_MERGES = VOCAB_SIZE - 2 * 256 - 2

# Split rule of CLIP: contractions, runs of letters, single digits, runs of other non-space symbols.
_WORDS = r"""'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""
_SPLIT_RULE = r"<start_of_text>|<end_of_text>|" + _WORDS
_HF_SPLIT_RULE = r"<\|startoftext\|>|<\|endoftext\|>|" + _WORDS


@dataclass(frozen=True)
class Conventions:
    """How a CLIP tokenizer wraps the shared BPE: what pads a row, how a prompt is cleaned, which literal words
    are special tokens."""

    pad_id: int
    # open_clip unescapes HTML entities (twice); Hugging Face's CLIPTokenizer leaves that to ftfy, which keeps
    # them in text that looks like HTML (has a "<"): "&amp;" then stays three tokens.
    html_unescape: bool
    split_rule: str
    # Words (after lower-casing) that become one special id instead of BPE pieces.
    special_words: tuple[tuple[str, int], ...] = ()


# FaceCLIP-SDXL: open_clip's SimpleTokenizer, as this pack has always tokenised (a literal "<start_of_text>" in a
# prompt is one split piece, BPE-encoded like any word).
OPEN_CLIP = Conventions(pad_id=PAD_ID, html_unescape=True, split_rule=_SPLIT_RULE)
# FaceT5-FLUX: transformers' slow CLIPTokenizer with FLUX.1-dev's config (pad "<|endoftext|>", 77 tokens).
HF_CLIP = Conventions(pad_id=EOT_ID, html_unescape=False, split_rule=_HF_SPLIT_RULE,
                      special_words=(("<|startoftext|>", SOT_ID), ("<|endoftext|>", EOT_ID)))


@lru_cache(maxsize=1)
def _text_tools():
    """ftfy and the regex module, imported on first use so that the pack loads without them."""
    ftfy = require("ftfy", "ftfy>=6.1", "FaceCLIP's tokenizer")
    regex = require("regex", "regex>=2023.0", "FaceCLIP's tokenizer")
    return ftfy, regex, regex.compile(r"\s+")


@lru_cache(maxsize=4)
def _splitter(rule: str):
    regex = _text_tools()[1]
    return regex.compile(rule, regex.IGNORECASE)


def _byte_alphabet() -> dict[int, str]:
    """Map every byte to a printable unicode character (GPT-2 / CLIP convention), so BPE works on strings."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) \
        + list(range(ord("®"), ord("ÿ") + 1))
    table = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def clean_text(text: str, html_unescape: bool = True) -> str:
    """Normalise a prompt the way the official tokenizer does before splitting it (ftfy, HTML entities unless
    ``html_unescape`` is False, whitespace runs to one space, lower case)."""
    ftfy, _, whitespace = _text_tools()
    text = ftfy.fix_text(text)
    if html_unescape:
        # Unescaped twice on purpose: the official code does, so "&amp;amp;" becomes "&".
        text = html.unescape(html.unescape(text))
    text = whitespace.sub(" ", text.strip()).strip()
    return text.lower()


@dataclass(frozen=True)
class TokenizedBatch:
    ids: torch.Tensor  # int64 [B, 77]
    lengths: list[int]  # token count of each row before truncation, SOT and EOT included


class BPETokenizer:
    """Byte-level BPE over the CLIP merge list; stateless apart from a per-word cache."""

    def __init__(self, vocab_file: Path = _VOCAB_FILE) -> None:
        try:
            with gzip.open(vocab_file, "rt", encoding="utf-8") as fh:
                lines = fh.read().split("\n")
        except (OSError, EOFError) as err:
            raise FileNotFoundError(
                f"FaceCLIP tokenizer vocabulary {vocab_file} is missing or unreadable ({err}); "
                "reinstall the node pack") from err
        merges = [tuple(line.split()) for line in lines[1:1 + _NUM_MERGES]]
        if len(merges) != _NUM_MERGES or any(len(m) != 2 for m in merges):
            raise FileNotFoundError(f"FaceCLIP tokenizer vocabulary {vocab_file} is damaged; reinstall the node pack")
        self._byte_to_char = _byte_alphabet()
        symbols = list(self._byte_to_char.values())
        symbols += [s + "</w>" for s in symbols]
        symbols += ["".join(m) for m in merges]
        symbols += ["<start_of_text>", "<end_of_text>"]
        self._ids = {s: i for i, s in enumerate(symbols)}
        self._ranks = {m: i for i, m in enumerate(merges)}
        self._cache: dict[str, tuple[int, ...]] = {}
        self._lock = threading.Lock()
        assert self._ids["<start_of_text>"] == SOT_ID and self._ids["<end_of_text>"] == EOT_ID

    def _bpe(self, word: str) -> tuple[int, ...]:
        cached = self._cache.get(word)
        if cached is not None:
            return cached
        parts = list(word[:-1]) + [word[-1] + "</w>"]
        while len(parts) > 1:
            # Merge the adjacent pair with the best (lowest) rank, all its occurrences at once, left to right.
            best_rank, best = None, None
            for pair in zip(parts, parts[1:], strict=False):
                rank = self._ranks.get(pair)
                if rank is not None and (best_rank is None or rank < best_rank):
                    best_rank, best = rank, pair
            if best is None:
                break
            merged, i = [], 0
            while i < len(parts):
                if i + 1 < len(parts) and parts[i] == best[0] and parts[i + 1] == best[1]:
                    merged.append(parts[i] + parts[i + 1])
                    i += 2
                else:
                    merged.append(parts[i])
                    i += 1
            parts = merged
        ids = tuple(self._ids[p] for p in parts)
        with self._lock:
            if len(self._cache) > 50_000:  # bound memory for long-running servers
                self._cache.clear()
            self._cache[word] = ids
        return ids

    def encode(self, text: str, conventions: Conventions = OPEN_CLIP) -> list[int]:
        """BPE ids of ``text`` after cleaning, without SOT/EOT."""
        out: list[int] = []
        special = dict(conventions.special_words)
        for piece in _splitter(conventions.split_rule).findall(clean_text(text, conventions.html_unescape)):
            if piece in special:
                out.append(special[piece])
                continue
            word = "".join(self._byte_to_char[b] for b in piece.encode("utf-8"))
            out.extend(self._bpe(word))
        return out

    def __call__(self, texts: Sequence[str], context_length: int = CONTEXT_LENGTH,
                 conventions: Conventions = OPEN_CLIP) -> TokenizedBatch:
        ids = torch.full((len(texts), context_length), conventions.pad_id, dtype=torch.long)
        lengths = []
        for row, text in enumerate(texts):
            tokens = [SOT_ID, *self.encode(text, conventions), EOT_ID]
            lengths.append(len(tokens))
            if len(tokens) > context_length:
                # Official overflow rule: keep the first context_length ids and force the last one to EOT.
                tokens = tokens[:context_length]
                tokens[-1] = EOT_ID
            ids[row, :len(tokens)] = torch.tensor(tokens, dtype=torch.long)
        return TokenizedBatch(ids=ids, lengths=lengths)


@lru_cache(maxsize=1)
def get_tokenizer() -> BPETokenizer:
    """The shared tokenizer (the merge table takes ~0.3 s to build, so build it once)."""
    return BPETokenizer()


def check_prompts(texts: object, what: str = "prompts") -> list[str]:
    """Validate a batch of prompts: a list/tuple of str, each valid Unicode. Empty strings are allowed."""
    if isinstance(texts, str):
        raise FaceCLIPInputError(f"{what} must be a list of strings, one per batch row, not a single string; "
                                 f"wrap it: [{texts[:40]!r}]")
    if not isinstance(texts, (list, tuple)):
        raise FaceCLIPInputError(f"{what} must be a list of strings, got {type(texts).__name__}")
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise FaceCLIPInputError(f"{what}[{i}] must be a str, got {type(t).__name__}")
        try:
            t.encode("utf-8")
        except UnicodeEncodeError as err:
            raise FaceCLIPInputError(
                f"{what}[{i}] is not valid Unicode ({err.reason} at character {err.start}); "
                "remove the broken character (often a lone surrogate from a bad copy-paste)") from err
    return list(texts)


def tokenize_batch(texts: Sequence[str], warn_label: str = "prompt",
                   conventions: Conventions = OPEN_CLIP, cut_level: int = logging.WARNING) -> TokenizedBatch:
    """Tokenize, logging (at ``cut_level``) each row that had to be truncated."""
    batch = get_tokenizer()(check_prompts(texts), conventions=conventions)
    for i, n in enumerate(batch.lengths):
        if n > CONTEXT_LENGTH:
            logger.log(cut_level, "FaceCLIP: %s %d is %d tokens long; only the first %d are used (official truncation, "
                        "the last kept token becomes end-of-text)", warn_label, i, n, CONTEXT_LENGTH)
    return batch


def cut_notice(name: str, length: int, limit: int, reader: str, counted: str = "") -> str:
    """What a user reads on the node when the text ``name`` (prompt, negative) is longer than its encoder reads;
    ``counted`` says what the length includes besides the user's text."""
    return (f"Shorten the {name}: it is {length} tokens long{counted}, and {reader} reads only the first {limit}; "
            "the rest is ignored.")


def tokenize(texts: Sequence[str] | str) -> torch.Tensor:
    """Official FaceCLIP token ids, int64 [B, 77]: SOT, BPE ids, EOT, zero padding. No prefix is added.

    A single string is accepted here as a convenience and treated as a batch of one.
    """
    if isinstance(texts, str):
        texts = [texts]
    return tokenize_batch(texts).ids
