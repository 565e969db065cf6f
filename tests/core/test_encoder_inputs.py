"""FaceCLIPEncoder.encode argument checking: every bad input gets a FaceCLIPInputError that names the problem."""
from __future__ import annotations

import logging
import math

import pytest
import torch

import faceclip_core
from faceclip_core import FaceCLIPError, FaceCLIPInputError
from tests.core._encoder_fixture import fixture_state_dict


@pytest.fixture(scope="module")
def enc():
    return faceclip_core.load_encoder(fixture_state_dict())


def _faces(b=1, h=64, w=48):
    return torch.rand(b, 3, h, w, generator=torch.Generator().manual_seed(0))


def test_good_call_any_size(enc):
    for h, w in ((112, 112), (448, 448), (64, 48), (1, 1)):
        emb, pooled = enc.encode(_faces(2, h, w), ["a man", "a woman"], torch.tensor([True, False]))
        assert emb.shape == (2, 77, 64 + 128) and pooled.shape == (2, 128)
        assert torch.isfinite(emb).all() and torch.isfinite(pooled).all()


def test_mask_as_list_and_faces_in_other_float_dtypes(enc):
    ref = enc.encode(_faces(), ["x"], torch.tensor([True]))[0]
    assert torch.equal(enc.encode(_faces().double(), ["x"], [True])[0], ref)  # fp32 values carried in fp64
    other_face = (enc.encode(torch.rand(1, 3, 64, 48), ["x"], [True])[0] - ref).abs().max()
    for dtype in (torch.float16, torch.bfloat16):
        # the pixels' rounding moves the output far less than another face does
        diff = (enc.encode(_faces().to(dtype), ["x"], [True])[0] - ref).abs().max()
        assert diff < 0.01 * other_face, (dtype, float(diff), float(other_face))


@pytest.mark.parametrize("faces,match", [
    (torch.rand(3, 64, 64), "batch dimension"),
    (torch.rand(1, 64, 64, 3), "channels-last"),
    (torch.rand(1, 4, 64, 64), r"RGB \[B,3,H,W\]"),
    (torch.rand(1, 1, 64, 64), r"RGB \[B,3,H,W\]"),
    (torch.rand(64, 64), r"RGB \[B,3,H,W\]"),
    (torch.zeros(0, 3, 64, 64), "empty"),
    (torch.zeros(1, 3, 0, 64), "empty"),
    ((torch.rand(1, 3, 64, 64) * 255).to(torch.uint8), "uint8.*divide"),
    (torch.rand(1, 3, 64, 64) * 255, r"\[0,1\].*divide by 255"),
    (torch.rand(1, 3, 64, 64) * 2 - 1, r"\[0,1\].*\(x\+1\)/2"),
    (torch.full((1, 3, 8, 8), 1.2), r"\[0,1\]"),
    (torch.full((1, 3, 8, 8), float("nan")), "NaN"),
    (torch.tensor([[[[float("inf")]]] * 3]), "NaN or infinite"),
    ([torch.rand(3, 8, 8)], "torch.Tensor"),
    (None, "torch.Tensor"),
])
def test_bad_faces(enc, faces, match):
    with pytest.raises(FaceCLIPInputError, match=match):
        enc.encode(faces, ["p"] * (faces.shape[0] if isinstance(faces, torch.Tensor) and faces.ndim == 4 else 1),
                   [True] * (faces.shape[0] if isinstance(faces, torch.Tensor) and faces.ndim == 4 else 1))


def test_tiny_overshoot_is_accepted(enc):
    faces = _faces()
    faces[0, 0, 0, 0] = 1.0005  # resampling ringing from upstream resizes
    enc.encode(faces, ["p"], [True])


@pytest.mark.parametrize("prompts,mask,match", [
    (["a"], [True, True], "one flag per face"),
    (["a", "b"], [True, True], r"2 face\(s\) but 1 prompt|1 face\(s\) but 2 prompt"),
    ("a man", [True], "single string"),
    ([None], [True], r"prompts\[0\] must be a str"),
    ([b"bytes"], [True], r"prompts\[0\] must be a str"),
    (["bad \ud800 surrogate"], [True], "not valid Unicode"),
    (["a"], [1], "must be bool"),
    (["a"], torch.tensor([[True]]), "one flag per face"),
    (["a"], "yes", "bool"),
    ({"a": 1}, [True], "list of strings"),
])
def test_bad_prompts_and_masks(enc, prompts, mask, match):
    with pytest.raises(FaceCLIPInputError, match=match):
        enc.encode(_faces(1), prompts, mask)


def test_batch_mismatch_faces_vs_prompts(enc):
    with pytest.raises(FaceCLIPInputError, match=r"2 face\(s\) but 3 prompt"):
        enc.encode(_faces(2), ["a", "b", "c"], [True, True])
    with pytest.raises(FaceCLIPInputError, match=r"shape \[2\]"):
        enc.encode(_faces(2), ["a", "b"], [True])


def test_errors_are_value_errors_for_nodes(enc):
    with pytest.raises(ValueError):
        enc.encode(_faces(2), ["a"], [True, True])
    assert issubclass(FaceCLIPInputError, FaceCLIPError)


def test_empty_prompt_is_valid(enc):
    """An empty prompt is the usual empty negative: tokens [SOT, EOT, 0...], finite outputs, no error."""
    emb, pooled = enc.encode(_faces(2), ["", "   "], [False, True])
    assert torch.isfinite(emb).all() and torch.isfinite(pooled).all()
    ids = faceclip_core.tokenize(["", "   "])
    assert ids[:, :2].tolist() == [[49406, 49407]] * 2 and (ids[:, 2:] == 0).all()


def test_long_prompt_is_truncated_with_a_warning(enc, caplog):
    long = "a very long prompt about a person " * 30
    with caplog.at_level(logging.WARNING, logger="faceclip_core"):
        emb, _ = enc.encode(_faces(), [long], [True])
    assert any("truncat" in r.getMessage() or "only the first 77" in r.getMessage() for r in caplog.records)
    assert torch.isfinite(emb).all()
    # truncated exactly like the official tokenizer: 77 ids, the last one EOT, with the 6-token prefix
    ids = faceclip_core.tokenize(["Photo of a id person. " + long])
    assert ids[0, -1].item() == 49407 and (ids[0] != 0).all()


def test_non_ascii_prompts_work(enc):
    emb, _ = enc.encode(_faces(3), ["Café crème ☕", "日本語のテキスト", "emoji 😀👍🏽 and ünïcödé"], [True] * 3)
    assert torch.isfinite(emb).all()


# how far a row's half-precision kernels may move with the batch around it: a rounding flip or two at the output's
# largest magnitude. A fixed bound fails by one ULP on some thread counts (bf16's ULP at 8..16 is 0.0625).
def _two_ulps_at_max(values: torch.Tensor, dtype: torch.dtype) -> float:
    return 2 * torch.finfo(dtype).eps * 2.0 ** math.floor(math.log2(values.abs().max().item()))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_chunked_encode_in_the_gpus_dtype_equals_one_batch_and_reports_progress(dtype):
    """What FaceCLIP Encode runs on a GPU: half-precision weights, a batch in chunks, an artist's long prompt."""
    enc = faceclip_core.load_encoder(fixture_state_dict(), dtype=dtype)
    prompt = ", ".join(["a woman in a blue denim shirt on a rocky desert plateau at golden hour"] * 8)
    faces, mask = _faces(5), torch.tensor([True, False, True, True, False])
    whole = enc.encode(faces, [prompt] * 5, mask)
    done = []
    chunked = enc.encode(faces, [prompt] * 5, mask, chunk_size=2, between=lambda d, t: done.append((d, t)))
    assert done == [(2, 5), (4, 5), (5, 5)]
    assert whole[0].dtype == torch.float32 and torch.isfinite(chunked[0]).all()
    for part, ref in zip(chunked, whole, strict=True):  # rows do not depend on their batch
        torch.testing.assert_close(part, ref, atol=_two_ulps_at_max(ref, dtype), rtol=0)
