"""Parity of faceclip_core's encoder with the official FaceCLIP implementation
(fixture: tests/fixtures/faceclip_parity).

fp32 must match every recorded intermediate within 1e-4 absolute. bf16 / fp16 weights are checked against the same
fp32 golden values with tolerances measured on this fixture (see BF16_TOL / FP16_TOL).
"""
from __future__ import annotations

import ast

import pytest
import torch

import faceclip_core
from faceclip_core.layers import DEFAULT_OPERATIONS
from faceclip_core.sdxl.checkpoint_layout import official_layout
from faceclip_core.sdxl.encoder import default_config
from faceclip_core.sdxl.loader import build_meta, infer_config
from tests.core._encoder_fixture import (
    BRANCH,
    CASES,
    FLOAT_FIELDS,
    KEY_LIST,
    case_inputs,
    cases,
    fixture_state_dict,
    max_abs,
)

FP32_TOL = 1e-4
# Measured on this fixture (torch 2.13 CPU): worst max-abs error over all cases and fields was 0.051 for bf16 and
# 0.0054 for fp16 (values are O(1), |max| about 5; the official script's own bf16 autocast moves embeddings by 0.038).
# The bounds leave about 2x headroom.
BF16_TOL = 0.1
FP16_TOL = 0.012


@pytest.fixture(scope="module")
def enc32():
    return faceclip_core.load_encoder(fixture_state_dict(), dtype=torch.float32)


def _branch_outputs(enc, case):
    faces, prompts, mask = case_inputs(case)
    with torch.inference_mode():
        return enc.forward_all(enc.prepare(faces, prompts, mask))


def test_tokenize_matches_fixture_ids():
    c = cases()
    from tests.core._encoder_fixture import config
    for case in CASES:
        texts = config()["cases"][case]["branch_texts"]
        ids = faceclip_core.tokenize(texts)
        assert ids.dtype == torch.long and ids.shape == (len(texts), 77)
        assert torch.equal(ids, c[f"{case}.l.token_ids"]), case
        assert torch.equal(ids, c[f"{case}.g.token_ids"]), case


@pytest.mark.parametrize("case", CASES)
def test_fp32_parity_all_fields(enc32, case):
    c = cases()
    out = _branch_outputs(enc32, case)
    for br, name in BRANCH.items():
        o = out[name]
        # The encoder adds the prefix itself from the mask, so these check prefix + id position logic too.
        assert torch.equal(o["token_ids"], c[f"{case}.{br}.token_ids"]), (case, br)
        assert torch.equal(o["id_insert_mask"], c[f"{case}.{br}.id_insert_mask"]), (case, br)
        for field in FLOAT_FIELDS:
            err = max_abs(o[field], c[f"{case}.{br}.{field}"])
            assert err <= FP32_TOL, f"case {case} {br}.{field}: max abs diff {err:.3g}"


@pytest.mark.parametrize("case", CASES)
def test_fp32_encode_outputs(enc32, case):
    c = cases()
    faces, prompts, mask = case_inputs(case)
    emb, pooled = enc32.encode(faces, prompts, mask)
    assert emb.dtype == torch.float32 and pooled.dtype == torch.float32
    assert emb.shape == c[f"{case}.embeddings"].shape and pooled.shape == c[f"{case}.pooled"].shape
    assert max_abs(emb, c[f"{case}.embeddings"]) <= FP32_TOL
    assert max_abs(pooled, c[f"{case}.pooled"]) <= FP32_TOL


def test_mask_false_rows_ignore_the_image(enc32):
    """A row with face_mask False takes the zero-face path whatever image is passed (case b used zeros)."""
    c = cases()
    faces, prompts, mask = case_inputs("b")
    noise = torch.rand_like(faces)
    emb, pooled = enc32.encode(noise, prompts, mask)
    assert max_abs(emb, c["b.embeddings"]) <= FP32_TOL
    assert max_abs(pooled, c["b.pooled"]) <= FP32_TOL


def test_batch_rows_match_single_runs(enc32):
    """Case d (mixed mask batch) row by row equals the batch run: no cross-row leakage beyond float noise."""
    faces, prompts, mask = case_inputs("d")
    emb, pooled = enc32.encode(faces, prompts, mask)
    for i in range(2):
        e1, p1 = enc32.encode(faces[i:i + 1], prompts[i:i + 1], mask[i:i + 1])
        assert max_abs(e1, emb[i:i + 1]) <= 1e-5
        assert max_abs(p1, pooled[i:i + 1]) <= 1e-5


@pytest.mark.parametrize("dtype,tol", [(torch.bfloat16, BF16_TOL), (torch.float16, FP16_TOL)])
def test_reduced_precision_within_measured_tolerance(dtype, tol):
    enc = faceclip_core.load_encoder(fixture_state_dict(), dtype=dtype)
    lin = enc.face_clip_g.fuser.encoder.text_layers[0].linear1
    assert lin.weight.dtype == dtype  # weights are held in the requested dtype ...
    assert enc.face_clip_g.ln_final.weight.dtype == torch.float32  # ... norms stay float32
    c = cases()
    worst = 0.0
    for case in CASES:
        faces, prompts, mask = case_inputs(case)
        emb, pooled = enc.encode(faces, prompts, mask)
        assert torch.isfinite(emb).all() and torch.isfinite(pooled).all()
        worst = max(worst, max_abs(emb, c[f"{case}.embeddings"]), max_abs(pooled, c[f"{case}.pooled"]))
    assert worst <= tol, f"{dtype}: max abs diff {worst:.3g} > {tol}"
    assert worst > 0  # it really ran in reduced precision


def test_full_size_structure_matches_reference_key_list():
    model = build_meta(default_config())
    assert all(t.is_meta for t in model.state_dict().values())  # nothing allocated
    got = official_layout(model.state_dict())  # the released names and shapes this model loads
    ref = {}
    for line in KEY_LIST.read_text().splitlines():
        key, shape, _dtype = line.split("\t")
        ref[key] = tuple(ast.literal_eval(shape))
    assert len(ref) == 1686
    assert sorted(set(ref) - set(got)) == [] and sorted(set(got) - set(ref)) == []
    assert {k: v for k, v in got.items() if ref[k] != v} == {}
    # and the loader infers exactly the default architecture back from those shapes
    released = {k: torch.empty(shape, device="meta") for k, shape in ref.items()}
    assert infer_config(released) == default_config()


def test_every_weight_lives_in_an_operations_layer():
    """So that ComfyUI's model manager can cast, move, partially load and stream every one of them."""
    ops = DEFAULT_OPERATIONS
    layers = (ops.Linear, ops.LayerNorm, ops.Conv2d, ops.Embedding, ops.BatchNorm2d)
    model = build_meta(default_config())
    holders = {name: type(m).__name__ for name, m in model.named_modules()
               if (m._parameters or m._buffers) and not isinstance(m, layers)}
    assert holders == {}
