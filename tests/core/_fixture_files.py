"""The files of a parity fixture folder (tests/fixtures/<name>/): its cases and its config, read once each."""
from __future__ import annotations

import json
from functools import cache
from pathlib import Path

import torch
from safetensors.torch import load_file


@cache
def fixture_cases(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "cases.safetensors"))


@cache
def fixture_config(folder: Path) -> dict:
    return json.loads((folder / "config.json").read_text(encoding="utf-8"))
