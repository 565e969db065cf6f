"""Shared test configuration: where the repo and the provisioned ComfyUI are."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TEST_ENV = Path(os.environ.get("FACECLIP_TESTENV", REPO / ".testenv"))


def comfyui_dir() -> Path:
    """COMFYUI_PATH when it names a checkout, else the one tests/run.sh provisioned."""
    path = Path(os.environ["COMFYUI_PATH"]) if os.environ.get("COMFYUI_PATH") else TEST_ENV / "ComfyUI"
    if not (path / "main.py").is_file():
        pytest.fail(f"No ComfyUI at {path}. Run `bash tests/run.sh` (it provisions one) or set COMFYUI_PATH "
                    "to a ComfyUI checkout.", pytrace=False)
    return path
