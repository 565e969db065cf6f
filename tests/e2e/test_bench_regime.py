"""What ID-embedding training costs an artist's GPU, measured on the CPU: bench/regime.py runs the Train node's real
step (ComfyUI's full-size SDXL, the node's adapters, the core's loop) on fake tensors, and the node's cost model
(faceclip_core.identity.cost), which tells the artist before a run what it will take and picks the micro-batch, is
checked against it. The node's defaults must fit a 12 GB card and take about two minutes on a 4090."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from faceclip_core.identity.config import method_config
from faceclip_core.identity.cost import CARDS, estimate_run
from faceclip_core.identity.node_inputs import method_settings
from tests.conftest import REPO

GB = 1e9  # card sizes are sold in decimal gigabytes
TWELVE_GB_GIB = 12 * GB / 2 ** 30


def _regime(*args: str, timeout: float) -> dict:
    done = subprocess.run([sys.executable, str(REPO / "bench" / "regime.py"), *args], capture_output=True,
                          text=True, timeout=timeout, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


def test_the_regime_bench_at_test_size_reports_memory_by_kind_flops_and_minutes_per_card():
    report = _regime("--tiny", timeout=600)
    assert set(report["defaults"]) == {"SeFi-IDE", "ID-EA"}
    for method, row in report["defaults"].items():
        assert row["peak_gib"] and all(v > 0 for v in row["peak_gib"].values()), method
        assert set(row["minutes"]) == set(CARDS) and all(m > 0 for m in row["minutes"].values()), method
    for setting in report["settings"]:
        assert {"method", "checkpointing", "resolution", "dtype", "micro_batch", "batch_size", "peak_gib",
                "tflop_per_step"} <= set(setting)
        kinds = setting["peak_by_kind_gib"]
        assert kinds["weights"] > 0 and kinds["activations"] + kinds["temporaries"] > 0
        assert setting["tflop_per_step"] > 0


def test_the_nodes_cost_model_matches_the_full_size_step_it_stands_for():
    """The numbers the node shows before a run (and its choice of micro-batch) come from the cost model; a change
    to the step (checkpointing, dtypes, what is kept for backward) that the model does not follow fails here."""
    report = _regime("--compare", timeout=900)
    assert {s["method"] for s in report["settings"]} == {"SeFi-IDE", "ID-EA"}
    for s in report["settings"]:
        assert (s["resolution"], s["checkpointing"]) == (1024, True)
        model = s["cost_model"]
        assert abs(model["peak_error"]) < 0.05, s
        assert abs(model["tflop_error"]) < 0.05, s


def _node_defaults(client, method: str) -> dict:
    """The defaults the node shows with ``method`` picked: its own inputs and the picked method's."""
    schema = client.object_info("FaceCLIPTrainIDEmbedding")["FaceCLIPTrainIDEmbedding"]["input"]
    inputs = {**schema["required"], **schema.get("optional", {})}
    (option,) = [o for o in inputs["method"][1]["options"] if o["key"] == method]
    inputs.update({**option["inputs"]["required"], **option["inputs"].get("optional", {})})
    return {name: spec[1]["default"] for name, spec in inputs.items() if len(spec) > 1 and "default" in spec[1]}


@pytest.mark.parametrize("dtype", ["bf16", "fp16"])
@pytest.mark.parametrize("method", ["SeFi-IDE", "ID-EA"])
def test_the_train_nodes_defaults_fit_a_12_gb_card_and_take_about_two_minutes_on_a_4090(client, method, dtype):
    d = _node_defaults(client, method)
    config = method_config(method, steps=d["steps"], lr=d["learning_rate"], seed=0, batch_size=d["batch_size"],
                           micro_batch=d["micro_batch"], precision=dtype, class_word=d["class_word"],
                           **method_settings(method, d))
    estimate = estimate_run(config, d["resolution"], d["gradient_checkpointing"])
    assert d["resolution"] == 1024
    assert estimate.device_gib <= TWELVE_GB_GIB, estimate
    assert estimate.minutes(CARDS["RTX 4090 24GB"]) <= 2.5, estimate
