"""Prompt templates with an identity slot, tokenised once before training (or once per Apply).

The identity's N tokens are written into the prompt as N copies of a one-token marker word, tokenised by the
model's own tokenizer and then swapped for the learnable rows. That is exactly the token layout ComfyUI's
``embedding:name`` syntax produces at inference (one row per token, in place), so what is trained is what is
used. Token ids are the tokenizer's 77-token chunks back to back (each with its own start and end tokens); the
identity must sit inside one chunk.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from .config import ID_SLOT
from .errors import IdentityError

CHUNK = 77  # CLIP's context length: tokens per chunk
MARKER = "sks"  # a rare word that is one BPE token in CLIP's vocabulary
EOS_ID = 49407  # CLIP's end-of-text token

# text -> token ids per encoder ("clip_l", "clip_g"): 77-token chunks back to back, each with BOS/EOS and padding
Tokenizer = Callable[[str], Mapping[str, Sequence[int]]]


@dataclass(frozen=True)
class PromptTokens:
    """One tokenised prompt: ids per encoder; ``slots`` are the positions of the identity tokens (the same in
    every encoder); ``eos`` the position of the first chunk's end token, where the pooled output is read."""

    text: str
    ids: Mapping[str, tuple[int, ...]]
    slots: tuple[int, ...]
    eos: int

    @property
    def chunks(self) -> int:
        return len(next(iter(self.ids.values()))) // CHUNK


def _word_ids(tokenize: Tokenizer, word: str) -> dict[str, tuple[int, ...]]:
    """The ids of ``word`` alone (between BOS and the first EOS)."""
    out = {}
    for name, ids in tokenize(word).items():
        ids = list(ids)
        out[name] = tuple(ids[1:_first_eos(ids)])
    return out


def _first_eos(ids: Sequence[int]) -> int:
    # The padding differs per encoder (the end token for L, 0 for G), so search for the end token.
    if EOS_ID not in ids:
        raise IdentityError("the tokenizer returned no end-of-text token; is this a CLIP text encoder?")
    return list(ids).index(EOS_ID)


def tokenize_prompt(tokenize: Tokenizer, template: str, num_tokens: int, word: str | None = None,
                    max_chunks: int = 1) -> PromptTokens:
    """Tokenise ``template`` with its ``{id}`` slot filled by ``num_tokens`` identity tokens, or by ``word`` (the
    reference prompt of SeFi-IDE: the slots are then the word's own token positions). Training prompts are one
    chunk; Apply ID Embedding's prompt may have ``max_chunks``."""
    if template.count(ID_SLOT) != 1:
        raise IdentityError(f"the prompt needs {ID_SLOT} exactly once, where the person goes; got {template!r}")
    if MARKER in template.lower().split():
        raise IdentityError(f"the prompt must not contain the word {MARKER!r} (it marks the identity slot): "
                            f"{template!r}")
    filler = word if word is not None else " ".join([MARKER] * num_tokens)
    wanted = _word_ids(tokenize, word if word is not None else MARKER)
    ids = {name: tuple(int(i) for i in seq) for name, seq in tokenize(template.replace(ID_SLOT, filler)).items()}
    slots_by_encoder = {}
    for name, seq in ids.items():
        if len(seq) % CHUNK or not 1 <= len(seq) // CHUNK <= max_chunks:
            limit = "one 77-token chunk" if max_chunks == 1 else f"{max_chunks} chunks of 77 tokens"
            raise IdentityError(f"the prompt {template!r} is {len(seq) // CHUNK} chunks of 77 tokens long; it "
                                f"must fit in {limit}. Shorten it.")
        target = wanted[name]
        if word is None and len(target) != 1:
            raise IdentityError(f"the marker word {MARKER!r} is not one token for {name}; this tokenizer is not "
                                "CLIP's")
        hits = [i for i in range(len(seq) - len(target) + 1) if seq[i:i + len(target)] == target]
        if word is None:
            slots = tuple(hits)
            if len(slots) != num_tokens:
                raise IdentityError(f"the prompt {template!r}: the identity's {num_tokens} token(s) do not fit; "
                                    "shorten the prompt")
        else:
            if not hits:
                raise IdentityError(f"reference prompt {template!r}: word {word!r} not found after tokenising")
            slots = tuple(range(hits[0], hits[0] + len(target)))
        if len({s // CHUNK for s in slots}) != 1:
            raise IdentityError(f"the prompt {template!r}: {ID_SLOT} falls on the boundary between two 77-token "
                                f"chunks; move {ID_SLOT} a few words earlier or later")
        slots_by_encoder[name] = slots
    first = next(iter(slots_by_encoder.values()))
    if any(s != first for s in slots_by_encoder.values()):
        raise IdentityError("the two SDXL tokenizers placed the identity at different positions")
    eos = {_first_eos(seq) for seq in ids.values()}
    if len(eos) != 1:
        raise IdentityError("the two SDXL tokenizers disagree on the prompt length")
    if word is None:
        ids = {name: tuple(0 if i in first else t for i, t in enumerate(seq)) for name, seq in ids.items()}
    return PromptTokens(text=template, ids=ids, slots=first, eos=eos.pop())
