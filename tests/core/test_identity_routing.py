"""faceclip_core.identity.routing: the stage of a timestep, and each identity row's keys, values and pooled vector
at its stage, whatever shape the sampler batched the prompt into."""
from __future__ import annotations

import pytest
import torch

from faceclip_core.identity import IdentityError, StageContexts, route, stage_index


def stages(seed: int, length: int = 77, count: int = 5) -> StageContexts:
    g = torch.Generator().manual_seed(seed)
    return StageContexts(keys=torch.randn(count, length, 8, generator=g),
                         values=torch.randn(count, length, 8, generator=g), pooled=torch.randn(count, 3, generator=g))


def test_stage_index_splits_the_timesteps_into_equal_ranges_least_noisy_first():
    t = torch.tensor([0.0, 199.9, 200.0, 500.0, 999.0, 1000.0, -3.0])
    assert stage_index(t, 5).tolist() == [0, 0, 1, 2, 4, 4, 0]
    assert stage_index(t, 1).tolist() == [0] * 7


def test_each_identity_row_gets_its_own_stage_and_other_rows_are_untouched():
    a, b = stages(1), stages(2)
    context = torch.randn(4, 77, 8)
    y = torch.randn(4, 5)
    t = torch.tensor([950.0, 50.0, 450.0, 450.0])
    keys, values, y_out = route(context, y, t, [a, b, None, a])
    assert torch.equal(keys[0], a.keys[4]) and torch.equal(values[0], a.values[4])
    assert torch.equal(keys[1], b.keys[0]) and torch.equal(values[1], b.values[0])
    assert torch.equal(keys[3], a.keys[2]) and torch.equal(values[3], a.values[2])
    assert torch.equal(keys[2], context[2]) and torch.equal(values[2], context[2])  # not an identity row
    assert torch.equal(y_out[0, :3], a.pooled[4]) and torch.equal(y_out[0, 3:], y[0, 3:])  # sizes kept
    assert torch.equal(y_out[2], y[2])
    assert torch.equal(context, context.clone()) and keys.data_ptr() != context.data_ptr()  # input not modified


def test_a_row_repeat_padded_to_a_longer_batch_is_routed_over_its_whole_length():
    """ComfyUI repeats a 77-token prompt to 154 tokens when it is batched with a 154-token one."""
    a = stages(1)
    row = torch.randn(77, 8)
    context = row.repeat(2, 1).unsqueeze(0)
    keys, values, _ = route(context, None, torch.tensor([10.0]), [a])
    assert torch.equal(keys[0], a.keys[0].repeat(2, 1)) and torch.equal(values[0], a.values[0].repeat(2, 1))


def test_text_concatenated_after_the_prompt_keeps_its_own_context():
    a = stages(1)
    other = torch.randn(77, 8)
    context = torch.cat([torch.randn(77, 8), other]).unsqueeze(0)  # ConditioningConcat(ours, other)
    keys, values, _ = route(context, None, torch.tensor([10.0]), [a])
    assert torch.equal(keys[0, :77], a.keys[0]) and torch.equal(keys[0, 77:], other)
    assert torch.equal(values[0, 77:], other)


def test_a_long_prompt_of_its_own_length_is_replaced_whole():
    long = stages(3, length=154)
    keys, _, _ = route(torch.randn(1, 154, 8), None, torch.tensor([999.0]), [long])
    assert torch.equal(keys[0], long.keys[4])


def test_a_shortened_prompt_is_an_error_that_says_what_to_connect():
    with pytest.raises(IdentityError, match="Connect Apply ID Embedding's positive"):
        route(torch.randn(1, 77, 8), None, torch.tensor([1.0]), [stages(1, length=154)])


def test_contexts_are_moved_once_per_device_and_dtype():
    a = stages(1)
    first = a.on(torch.device("cpu"), torch.float16)
    assert first[0].dtype == torch.float16 and a.on(torch.device("cpu"), torch.float16)[0] is first[0]
