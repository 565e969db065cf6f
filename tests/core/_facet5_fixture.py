"""Shared helpers for the FaceT5 tests: the parity fixture (tests/fixtures/facet5_parity) as usable tensors, and the
T5 tokenizer.json of the test ComfyUI. The fixture's weights come from tests/harness/tiny_facet5.py (the end-to-end
tests' tiny FaceT5 encoder is the same weights)."""
from __future__ import annotations

from pathlib import Path

import torch

from tests.conftest import comfyui_dir
from tests.core._fixture_files import fixture_cases, fixture_config
from tests.harness.tiny_facet5 import PARITY, fixture_state_dict  # noqa: F401  (re-exported for the tests)

KEY_LIST = PARITY.parent / "facet5_encoder_keys.txt"
CASES = ("a", "b", "c", "d", "e", "f")
UNCOUPLED = ("a", "b", "e", "f")  # B=1 cases: the official output is what a row encoded alone gives
COUPLED = ("c", "d")  # B=2 in one official call: its fuser mixed the rows (official quirk, not reproduced)
# sha256 of ComfyUI's T5 tokenizer.json that produced the fixture's T5 ids (config.json)
T5_TOKENIZER_SHA256 = "6cd1badb7467cdab971403bbeb1945070ca385652385a2b6549f672b08089dfc"


def cases() -> dict[str, torch.Tensor]:
    return fixture_cases(PARITY)


def config() -> dict:
    return fixture_config(PARITY)


def case_images(case: str) -> torch.Tensor:
    """float [B,3,H,W] in [0,1], exactly as the fixture fed the official wrapper (divide, do not multiply)."""
    return cases()[f"{case}.image_u8"].to(torch.float32) / 255


def case_prompts(case: str) -> list[str]:
    return list(config()["cases"][case]["raw_prompts"])


def case_tokens(case: str) -> tuple[torch.Tensor, torch.Tensor]:
    c = cases()
    return c[f"{case}.t5_ids"], c[f"{case}.clip_ids"]


def t5_tokenizer_json() -> Path:
    return comfyui_dir() / "comfy" / "text_encoders" / "t5_tokenizer" / "tokenizer.json"

