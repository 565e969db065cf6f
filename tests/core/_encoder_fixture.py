"""Shared helpers for the encoder tests: the parity fixture (tests/fixtures/faceclip_parity) as usable tensors."""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import torch
from safetensors.torch import load_file

from tests.core._fixture_files import fixture_cases, fixture_config

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
PARITY = FIXTURES / "faceclip_parity"
KEY_LIST = FIXTURES / "faceclip_encoder_keys.txt"
CASES = ("a", "b", "c", "d", "e", "f")
BRANCH = {"l": "face_clip_l", "g": "face_clip_g"}
FLOAT_FIELDS = ("face_embed", "face_patches", "id_token", "text_hidden", "pooled", "fused")


@lru_cache(maxsize=1)
def _weights() -> dict[str, torch.Tensor]:
    return load_file(str(PARITY / "weights.safetensors"))


def fixture_state_dict() -> dict[str, torch.Tensor]:
    """The fixture weights with the reduced token tables rebuilt into full [49408, d] tables (a fresh dict)."""
    sd = dict(_weights())
    for name in BRANCH.values():
        rows = sd.pop(f"{name}.token_embedding.rows")
        ids = sd.pop(f"{name}.token_embedding.ids")
        table = torch.zeros(49408, rows.shape[1], dtype=rows.dtype)
        table[ids] = rows
        sd[f"{name}.token_embedding.weight"] = table
    return sd


def cases() -> dict[str, torch.Tensor]:
    return fixture_cases(PARITY)


def config() -> dict:
    return fixture_config(PARITY)


def case_inputs(case: str) -> tuple[torch.Tensor, list[str], torch.Tensor]:
    """(faces float [B,3,H,W] in [0,1], prompts as passed to the official wrapper, mask bool [B])."""
    c = cases()
    faces = c[f"{case}.image_u8"].to(torch.float32) / 255  # divide, as the fixture was produced
    return faces, list(config()["cases"][case]["prompts_passed_to_wrapper"]), c[f"{case}.mask"]


def max_abs(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return (a.float() - b.float()).abs().max().item()
