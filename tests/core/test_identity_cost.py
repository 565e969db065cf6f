"""The Train node's plan for a GPU before a run: the micro-batch it picks when left at auto, the estimate it shows,
and the refusal, naming what to change, when a run cannot fit (faceclip_core.identity.cost; the model's numbers are
checked against the measured full-size step in tests/e2e/test_bench_regime.py)."""
from __future__ import annotations

import pytest

from faceclip_core.identity import IdentityError
from faceclip_core.identity.config import method_config
from faceclip_core.identity.cost import CARDS, estimate_run, fit_to_device


def config(method: str, recipe: str = "quick", micro_batch: int = 0, batch_size: int = 0, steps: int = 320):
    return method_config(method, steps=steps, lr=0.0, seed=0, batch_size=batch_size, micro_batch=micro_batch,
                         precision="bf16", num_tokens=0, class_word="person", stages=5, kv_split=True,
                         attention_weight=0.003, attention_tokens="all", attention_layers="input:7, middle:0",
                         anchor_names="celebrities", reg_weight=8e-4, adapter_scale=0.4, recipe=recipe)


def test_auto_micro_batch_takes_as_many_samples_per_pass_as_the_card_holds():
    paper = config("ID-EA", "paper")
    assert paper.train.batch_size == 8 and paper.train.micro_batch == 0
    small, _ = fit_to_device(paper, 1024, True, 11.0)
    large, _ = fit_to_device(paper, 1024, True, 80.0)
    assert 1 <= small.train.pass_size < large.train.pass_size == 8
    assert fit_to_device(paper, 1024, True, 11.0)[1].device_gib <= 11.0
    # one more sample per pass would not have fitted
    assert estimate_run(paper, 1024, True, small.train.pass_size + 1).device_gib > 11.0


def test_a_micro_batch_the_artist_set_is_kept_and_no_device_means_no_plan():
    chosen, _ = fit_to_device(config("ID-EA", "paper", micro_batch=2), 1024, True, 80.0)
    assert chosen.train.pass_size == 2
    cpu, _ = fit_to_device(config("ID-EA", "paper"), 1024, True, None)
    assert cpu.train.pass_size == 8


def test_a_run_that_cannot_fit_is_refused_with_the_numbers_and_what_to_change():
    with pytest.raises(IdentityError) as error:
        fit_to_device(config("SeFi-IDE"), 1024, False, 8.0)
    message = str(error.value)
    assert "GB of GPU memory" in message and "8.0 GB" in message
    assert "gradient_checkpointing on" in message and "768" in message


def test_more_steps_samples_or_pixels_cost_proportionally_more_time():
    base = estimate_run(config("SeFi-IDE"), 1024, True)
    assert estimate_run(config("SeFi-IDE", steps=640), 1024, True).minutes(100) == pytest.approx(
        2 * base.minutes(100))
    assert estimate_run(config("ID-EA", "paper"), 1024, True).tflop_per_step > 7 * estimate_run(
        config("ID-EA"), 1024, True).tflop_per_step
    assert estimate_run(config("SeFi-IDE"), 768, True).tflop_per_step < base.tflop_per_step
    assert set(base.minutes_by_card()) == set(CARDS)


def test_fp32_training_counts_its_weights_and_activations_at_four_bytes():
    half = estimate_run(config("SeFi-IDE"), 1024, True, weight_bytes=2)
    full = estimate_run(config("SeFi-IDE"), 1024, True, weight_bytes=4)
    assert full.weights_gib == pytest.approx(2 * half.weights_gib)
    assert full.peak_gib - full.weights_gib > 1.9 * (half.peak_gib - half.weights_gib)
