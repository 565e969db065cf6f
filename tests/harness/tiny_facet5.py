"""The tiny FaceT5-FLUX encoder the end-to-end tests load: the parity fixture's weights (tests/fixtures/facet5_parity,
made with the official code) with its reduced token tables rebuilt into full tables, as its README says.

Its widths set the tiny FLUX DiT's (tests/harness/tiny_models.py): the fused T5 stream is T5_WIDTH wide and the
pooled CLIP-L vector CLIP_WIDTH wide, where the released model has 4096 and 768.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

PARITY = Path(__file__).resolve().parents[1] / "fixtures" / "facet5_parity"
# The reduced token tables of weights.safetensors: <prefix>.rows / <prefix>.ids -> <prefix>.weight [vocab, d].
TOKEN_TABLES = {"encoder_2.t5_encoder.embed_tokens": 32128, "encoder_1.text_model.embeddings.token_embedding": 49408}
T5_WIDTH = 64  # the fixture's T5 d_model: prompt_embeds [B, 512, 64]
CLIP_WIDTH = 128  # the fixture's CLIP-L width: pooled [B, 128]


@lru_cache(maxsize=1)
def fixture_weights() -> dict[str, torch.Tensor]:
    """weights.safetensors as stored (reduced token tables); shared, do not modify."""
    return load_file(str(PARITY / "weights.safetensors"))


def fixture_state_dict() -> dict[str, torch.Tensor]:
    """The fixture weights with full token tables (every row the fixture does not store is zero): a fresh dict
    with exactly the official file's keys."""
    sd = dict(fixture_weights())
    for prefix, vocab in TOKEN_TABLES.items():
        rows = sd.pop(f"{prefix}.rows")
        ids = sd.pop(f"{prefix}.ids")
        table = torch.zeros(vocab, rows.shape[1], dtype=rows.dtype)
        table[ids] = rows
        sd[f"{prefix}.weight"] = table
    return sd


def write(path: Path) -> Path:
    """The tiny encoder as a .safetensors file with face_t5_encoder.pt's keys (bf16, as released)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(fixture_state_dict(), str(path), metadata={"note": "FaceT5 parity fixture weights, for tests"})
    return path
