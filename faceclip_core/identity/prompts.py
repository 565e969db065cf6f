"""Prompt templates with an identity slot, tokenised once before training.

The identity's N tokens are written into the prompt as N copies of a one-token marker word, tokenised by the
model's own tokenizer and then swapped for the learnable rows. That is exactly the token layout ComfyUI's
``embedding:name`` syntax produces at inference (one row per token, in place), so what is trained is what is
used.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from .errors import IdentityError

PLACEHOLDER = "{id}"
MARKER = "sks"  # a rare word that is one BPE token in CLIP's vocabulary

# text -> token ids per encoder ("clip_l", "clip_g"), each one padded 77-token sequence with BOS/EOS
Tokenizer = Callable[[str], Mapping[str, Sequence[int]]]


@dataclass(frozen=True)
class PromptTokens:
    """One tokenised prompt: ids per encoder; ``slots`` are the positions of the identity tokens (the same in
    every encoder); ``eos`` the position of the first end token, where the pooled output is read."""

    text: str
    ids: Mapping[str, tuple[int, ...]]
    slots: tuple[int, ...]
    eos: int


def _word_ids(tokenize: Tokenizer, word: str) -> dict[str, tuple[int, ...]]:
    """The ids of ``word`` alone (between BOS and the first EOS)."""
    out = {}
    for name, ids in tokenize(word).items():
        ids = list(ids)
        eos = _first_eos(ids)
        out[name] = tuple(ids[1:eos])
    return out


def _first_eos(ids: Sequence[int]) -> int:
    # CLIP's end token; the padding differs per encoder (the end token for L, 0 for G), so search for it.
    eos_id = 49407
    if eos_id not in ids:
        raise IdentityError("the tokenizer returned no end-of-text token; is this a CLIP text encoder?")
    return list(ids).index(eos_id)


def tokenize_prompt(tokenize: Tokenizer, template: str, num_tokens: int, word: str | None = None) -> PromptTokens:
    """Tokenise ``template`` with its ``{id}`` slot filled by ``num_tokens`` identity tokens, or by ``word`` (the
    reference prompt of SeFi-IDE: the slots are then the word's own token positions)."""
    if template.count(PLACEHOLDER) != 1:
        raise IdentityError(f"each training prompt needs exactly one {PLACEHOLDER} where the identity goes, got "
                            f"{template!r}")
    if MARKER in template.lower().split():
        raise IdentityError(f"training prompts must not contain the word {MARKER!r} (it marks the identity "
                            f"slot): {template!r}")
    filler = word if word is not None else " ".join([MARKER] * num_tokens)
    wanted = _word_ids(tokenize, word if word is not None else MARKER)
    ids = {name: tuple(int(i) for i in seq) for name, seq in tokenize(template.replace(PLACEHOLDER, filler)).items()}
    slots_by_encoder = {}
    for name, seq in ids.items():
        target = wanted[name]
        if word is None and len(target) != 1:
            raise IdentityError(f"the marker word {MARKER!r} is not one token for {name}; this tokenizer is not "
                                "CLIP's")
        hits = [i for i in range(len(seq) - len(target) + 1) if seq[i:i + len(target)] == target]
        if word is None:
            slots = tuple(hits)
            if len(slots) != num_tokens:
                raise IdentityError(f"prompt {template!r} is too long: the identity tokens do not fit in 77 tokens")
        else:
            if not hits:
                raise IdentityError(f"reference prompt {template!r}: word {word!r} not found after tokenising")
            slots = tuple(range(hits[0], hits[0] + len(target)))
        slots_by_encoder[name] = slots
        if len(seq) != 77:
            raise IdentityError(f"prompt {template!r} does not fit in one 77-token chunk; use a shorter prompt")
    first = next(iter(slots_by_encoder.values()))
    if any(s != first for s in slots_by_encoder.values()):
        raise IdentityError("the two SDXL tokenizers placed the identity at different positions")
    eos = {_first_eos(seq) for seq in ids.values()}
    if len(eos) != 1:
        raise IdentityError("the two SDXL tokenizers disagree on the prompt length")
    if word is None:
        ids = {name: tuple(0 if i in first else t for i, t in enumerate(seq)) for name, seq in ids.items()}
    return PromptTokens(text=template, ids=ids, slots=first, eos=eos.pop())
