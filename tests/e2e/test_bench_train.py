"""bench/train.py's GPU path (full-size SDXL at 1024 px on CUDA) run at test size on the CPU, so the command a GPU
machine runs cannot rot: same code, tiny UNet, 64 px, one step. SeFi-IDE with gradient checkpointing is the setting
run here: its path holds everything ID-EA's and the unchecked setting's do, plus the attention hooks inside
checkpointed blocks (that checkpointing learns the same tokens is test_identity's)."""
from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import REPO
from tests.harness.sdxl_clip import write


def test_the_gpu_training_benchmark_runs_and_reports_time_per_identity(comfy_base):
    models = comfy_base / "models"
    write(models / "text_encoders")  # the full-size random CLIP the other tests use (written once)
    done = subprocess.run([sys.executable, str(REPO / "bench" / "train.py"), "--backend", "cuda", "--tiny",
                           "--steps", "1", "--warmup", "0", "--batch", "1", "--methods", "SeFi-IDE",
                           "--checkpointing", "on", "--models", str(models)],
                          capture_output=True, text=True, timeout=900, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)
    (row,) = report["results"]
    assert (row["method"], row["gradient_checkpointing"], row["resolution"]) == ("SeFi-IDE", True, 64)
    assert row["seconds_per_step"] > 0 and row["steps_per_identity"] == 320 and row["minutes_per_identity"] > 0
    assert row["precision"] == "fp32"  # auto on the CPU
    assert row["final"]["loss"] == row["final"]["loss"] and row["final"]["grad_norm"] > 0
    assert row["final"]["attention"] is not None and row["peak_rss_gib"] > 0
