"""bench/gpu_check.py, the one command a GPU machine runs, at test size on the CPU so it cannot rot: every section
runs (encoder in three dtypes, the basic graph in a real server, the training bench) and
its JSON carries what a reader of the GPU numbers checks. No wall-clock assertions: only that the numbers exist
and make sense."""
from __future__ import annotations

import json
import math
import subprocess
import sys

from tests.conftest import REPO


def _finite_stats(stats: dict) -> bool:
    return all(isinstance(v, float) and math.isfinite(v) and v >= 0 for v in stats.values())


def test_the_gpu_check_runs_every_section_and_reports_it(tmp_path):
    # One memory mode: on the CPU ComfyUI refuses --lowvram, so a second server would run the same settings.
    done = subprocess.run([sys.executable, str(REPO / "bench" / "gpu_check.py"), "--tiny", "--device", "cpu",
                           "--modes", "default", "--work", str(tmp_path / "work")],
                          capture_output=True, text=True, timeout=900, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)
    for section in ("models", "encoder", "graph", "facet5", "train"):
        assert "error" not in report[section], (section, report[section].get("error"))
    assert report["ok"] is True and report["wall_s"] > 0
    assert report["options"]["device"] == "cpu" and report["torch"]

    encoder = report["encoder"]
    for dtype in ("fp32", "bf16", "fp16"):
        run = encoder["runs"][dtype]
        assert "error" not in run, run
        assert run["load_s"] >= 0 and run["encode_b1_median_s"] > 0 and run["encode_b2_median_s"] > 0
    parity = encoder["parity_vs_fp32"]
    for batch in ("b1", "b2"):
        # fp32 against a second fp32 encode of the same inputs: a repeat, exactly equal
        assert parity["fp32"][batch]["embeddings"]["max_abs"] == 0.0
        assert parity["fp32"][batch]["pooled"]["max_abs"] == 0.0
        for dtype in ("bf16", "fp16"):
            for output in ("embeddings", "pooled"):
                assert _finite_stats(parity[dtype][batch][output]), (dtype, batch, output)
            assert parity[dtype][batch]["embeddings"]["rel_l2"] < 0.5  # lower precision, same computation

    facet5 = report["facet5"]  # FaceT5-FLUX's encoder, the same report
    for dtype in ("fp32", "bf16", "fp16"):
        run = facet5["runs"][dtype]
        assert "error" not in run, run
        assert run["variant"] == "facet5" and run["encode_b1_median_s"] > 0
    assert facet5["parity_vs_fp32"]["fp32"]["b1"]["embeddings"]["max_abs"] == 0.0
    for dtype in ("bf16", "fp16"):
        assert facet5["parity_vs_fp32"][dtype]["b1"]["embeddings"]["rel_l2"] < 0.5

    graph = report["graph"]
    assert set(graph["modes"]) == {"default"} and report["options"]["modes"] == ["default"]
    for mode, run in graph["modes"].items():
        assert "error" not in run, (mode, run.get("error"))
        assert math.isfinite(run["sampling_ratio"]) and run["sampling_ratio"] > 0
        assert all(v > 0 for v in run["ksampler_seconds_median"].values())
        assert {"FaceCLIPEncode", "KSampler", "VAEDecode", "SaveImage"} <= set(run["first_run_node_seconds"])
        after = run["encoder_after_unet"]
        assert after["unet_model"] == "SDXL" and after["unet_size"] > 0
        assert isinstance(after["encoder_loaded"], int) and after["encoder_size"] > 0
        assert isinstance(after["encoder_released"], bool) and after["verdict"]
        assert after["verdict"] == "encoder on the CPU: nothing to release"  # --cpu: nothing is ever offloaded
        assert any(m["faceclip"] for m in run["loaded_models_first_run"]["models"])
        assert not any(m["faceclip"] for m in run["baseline_loaded_models_last_run"]["models"]
                       if run["baseline_loaded_models_last_run"]["faceclip"] is not None)

    (row,) = report["train"]["results"]
    assert "error" not in row and row["method"] == "SeFi-IDE" and row["seconds_per_step"] > 0
