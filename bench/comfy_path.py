"""Where the benchmarks find ComfyUI: COMFYUI_PATH, else the test environment's (FACECLIP_TESTENV, as tests/run.sh
sets it, or .testenv/ in the repository)."""
from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def default_comfyui() -> Path:
    if os.environ.get("COMFYUI_PATH"):
        return Path(os.environ["COMFYUI_PATH"])
    return Path(os.environ.get("FACECLIP_TESTENV") or REPO / ".testenv") / "ComfyUI"
