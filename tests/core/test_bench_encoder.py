"""bench/encoder.py --variant facet5 at test size on the CPU, so the command run on big machines cannot rot: the
tests' tiny FaceT5 and SDXL encoders in one run, each dtype in its own worker, and the FaceT5 / SDXL ratios. No
wall-clock assertions: only that the numbers exist and make sense."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO, comfyui_dir


@pytest.mark.parametrize("compute", ["same", "fp32"])
def test_the_facet5_encoder_benchmark_runs_against_the_sdxl_one(compute):
    dtypes = ["fp32", "bf16"] if compute == "fp32" else ["bf16"]
    done = subprocess.run([sys.executable, str(REPO / "bench" / "encoder.py"), "--variant", "facet5", "--tiny",
                           "--device", "cpu", "--runs", "1", "--batches", "1,2", "--dtypes", ",".join(dtypes),
                           "--compute", compute, "--comfyui", str(comfyui_dir())],
                          capture_output=True, text=True, timeout=600, check=False,
                          env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)
    assert report["variant"] == "facet5" and report["tiny"] and report["device"] == "cpu"
    for variant, runs in (("facet5", report["runs"]), ("sdxl", report["baseline_sdxl"]["runs"])):
        assert set(runs) == set(dtypes)
        for dtype, run in runs.items():
            assert "error" not in run, (variant, dtype, run)
            assert run["variant"] == variant and run["compute"] == (dtype if compute == "same" else "fp32")
            assert run["load_s"] >= 0 and run["weights_gib"] > 0 and run["peak_rss_gib"] > 0
            assert run["encode_b1_median_s"] > 0 and run["encode_b2_median_s"] > 0
            assert len(run["encode_b1_warmup_s"]) == 1
    ratios = report["facet5_vs_sdxl"]
    assert set(ratios) == set(dtypes)
    assert all(v is not None and v > 0 for r in ratios.values() for v in r.values())
