"""Parity of faceclip_core's FaceT5-FLUX encoder with the official FaceCLIP code (fixture: tests/fixtures/facet5_parity,
golden outputs of the official code on a tiny random model).

fp32 must match every recorded output and intermediate within 1e-4 absolute for the cases the official code runs
one row at a time (a, b, e, f: what its FLUX script does). For the batched cases (c, d) the official fuser mixes
rows through its batch-axis attention; this port encodes each row as if alone, so those rows must equal the rows
encoded alone, and the fixture's per-row parts. bf16 / fp16 weights are checked against the fp32 golden values
with tolerances measured on this fixture (BF16_TOL / FP16_TOL).
"""
from __future__ import annotations

import ast
import re
from types import SimpleNamespace

import pytest
import torch

import faceclip_core
from faceclip_core import FaceCLIPWeightsError, layers
from faceclip_core.facet5 import default_config, infer_config
from faceclip_core.facet5.layout import FaceT5Layout
from faceclip_core.facet5.loader import build_meta, check_state_dict
from tests.core._encoder_fixture import max_abs
from tests.core._facet5_fixture import (
    CASES,
    COUPLED,
    KEY_LIST,
    UNCOUPLED,
    case_images,
    case_prompts,
    case_tokens,
    cases,
    fixture_state_dict,
    t5_tokenizer_json,
)

FP32_TOL = 1e-4
# Measured on this fixture (torch 2.13 CPU, 1 thread): worst max-abs error against the fp32 golden outputs over
# every case was 0.067 (prompt_embeds) / 0.029 (pooled) for bf16 weights and 0.0101 / 0.0025 for fp16. Values are
# O(1), |max| about 5; the official script's own bf16 autocast moves prompt_embeds by 0.09-0.16 (fact sheet).
# The bounds leave about 2x headroom.
BF16_TOL = 0.13
FP16_TOL = 0.02
# Per-row fields: one row's value never depends on the other rows of its call, in the official code too.
ROW_FIELDS = ("face_patches", "face_stream_in", "t5_hidden", "clip_last_hidden", "pooled")


@pytest.fixture(scope="module")
def enc32():
    return faceclip_core.load_facet5_encoder(fixture_state_dict(), dtype=torch.float32)


@pytest.mark.parametrize("case", UNCOUPLED)
def test_fp32_outputs_of_single_row_cases(enc32, case):
    c = cases()
    embeds, pooled = enc32.encode_tokens(case_images(case), *case_tokens(case))
    assert embeds.dtype == torch.float32 and pooled.dtype == torch.float32
    assert embeds.shape == c[f"{case}.prompt_embeds"].shape == (1, 512, 64)
    assert pooled.shape == c[f"{case}.pooled"].shape == (1, 128)
    err_e, err_p = max_abs(embeds, c[f"{case}.prompt_embeds"]), max_abs(pooled, c[f"{case}.pooled"])
    assert err_e <= FP32_TOL and err_p <= FP32_TOL, f"case {case}: prompt_embeds {err_e:.3g}, pooled {err_p:.3g}"


@pytest.mark.parametrize("case", CASES)
def test_fp32_per_row_intermediates(enc32, case):
    """Localises a bug to the face ViT, the face projection, T5 or CLIP-L, in every case (coupled ones too)."""
    out = enc32.forward_all(case_images(case), *case_tokens(case))
    for field in ROW_FIELDS:
        err = max_abs(out[field], cases()[f"{case}.{field}"])
        assert err <= FP32_TOL, f"case {case} {field}: max abs diff {err:.3g}"


def test_fp32_fuser_streams_after_every_sub_layer(enc32):
    """Case a records the fuser's face and text streams after each BiAttention, text layer and face layer."""
    c = cases()
    out = enc32.forward_all(case_images("a"), *case_tokens("a"), streams=True)
    golden = {k[len("a."):] for k in c if k.startswith("a.fuser.")}
    last = enc32.cfg.fuser.layers - 1
    # the last face layer's output is never read, so that layer is not built
    assert golden - set(out) == {f"fuser.{last}.face"}
    for key in sorted(golden & set(out)):
        err = max_abs(out[key], c[f"a.{key}"])
        assert err <= FP32_TOL, f"{key}: max abs diff {err:.3g}"


@pytest.mark.parametrize("case", COUPLED)
def test_batched_rows_equal_rows_encoded_alone(enc32, case):
    images, (t5_ids, clip_ids) = case_images(case), case_tokens(case)
    embeds, pooled = enc32.encode_tokens(images, t5_ids, clip_ids)
    for i in range(images.shape[0]):
        e1, p1 = enc32.encode_tokens(images[i:i + 1], t5_ids[i:i + 1], clip_ids[i:i + 1])
        assert max_abs(e1, embeds[i:i + 1]) <= 1e-5 and max_abs(p1, pooled[i:i + 1]) <= 1e-5, (case, i)
        assert max_abs(p1, cases()[f"{case}.pooled"][i:i + 1]) <= FP32_TOL
    # The official B=2 call mixed its rows (its face self-attention runs over the batch axis): not reproduced.
    assert max_abs(embeds, cases()[f"{case}.prompt_embeds"]) > 1e-3


def test_cond_and_uncond_in_one_batch_equal_the_official_separate_calls(enc32):
    """Case d holds case a's and case b's inputs in one batch: its rows are the official B=1 outputs a and b."""
    embeds, pooled = enc32.encode_tokens(case_images("d"), *case_tokens("d"))
    for row, single in enumerate(("a", "b")):
        assert max_abs(embeds[row:row + 1], cases()[f"{single}.prompt_embeds"]) <= FP32_TOL
        assert max_abs(pooled[row:row + 1], cases()[f"{single}.pooled"]) <= FP32_TOL


def test_face_layer_attention_is_the_official_batch_axis_attention_with_one_row(enc32):
    """The official face layer feeds [B=1, 144, d] to a sequence-first nn.MultiheadAttention (8 heads): 144
    independent sequences of length 1. The port's out_proj(v_proj(x)) must be that, with the checkpoint's weights."""
    sd = fixture_state_dict()
    prefix = "encoder_2.fuser.encoder.layers.0.self_attn."
    mha = torch.nn.MultiheadAttention(64, 8)
    mha.load_state_dict({k[len(prefix):]: v.float() for k, v in sd.items() if k.startswith(prefix)})
    x = torch.randn(1, 144, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        official = mha(x, x, x, need_weights=False)[0]
        ported = enc32.encoder_2.fuser.encoder.layers[0].self_attn(x)
    assert max_abs(ported, official) <= 1e-5


@pytest.mark.parametrize("case", CASES)
def test_encode_from_raw_prompts(enc32, case):
    """encode() tokenises the raw prompts itself: the same result as the fixture's stored ids."""
    images = case_images(case)
    got = enc32.encode(images, case_prompts(case), t5_tokenizer=t5_tokenizer_json())
    want = enc32.encode_tokens(images, *case_tokens(case))
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
    if case in UNCOUPLED:
        assert max_abs(got[0], cases()[f"{case}.prompt_embeds"]) <= FP32_TOL
        assert max_abs(got[1], cases()[f"{case}.pooled"]) <= FP32_TOL


@pytest.mark.parametrize("dtype,tol", [(torch.bfloat16, BF16_TOL), (torch.float16, FP16_TOL)])
def test_reduced_precision_within_measured_tolerance(dtype, tol):
    enc = faceclip_core.load_facet5_encoder(fixture_state_dict(), dtype=dtype)
    assert enc.compute_dtype == dtype
    assert enc.encoder_2.t5_encoder.block[0].ff_layer.wo.weight.dtype == dtype  # weights in the requested dtype
    assert enc.encoder_2.t5_encoder.final_layer_norm.weight.dtype == torch.float32  # ... norms stay float32
    assert enc.encoder_1.text_model.final_layer_norm.weight.dtype == torch.float32
    c = cases()
    worst = 0.0
    for case in UNCOUPLED:
        embeds, pooled = enc.encode_tokens(case_images(case), *case_tokens(case))
        assert embeds.dtype == torch.float32 and torch.isfinite(embeds).all() and torch.isfinite(pooled).all()
        worst = max(worst, max_abs(embeds, c[f"{case}.prompt_embeds"]), max_abs(pooled, c[f"{case}.pooled"]))
    for case in COUPLED:  # their per-row parts
        out = enc.forward_all(case_images(case), *case_tokens(case))
        worst = max(worst, max_abs(out["t5_hidden"], c[f"{case}.t5_hidden"]),
                    max_abs(out["pooled"], c[f"{case}.pooled"]))
    assert worst <= tol, f"{dtype}: max abs diff {worst:.3g} > {tol}"
    assert worst > 0  # it really ran in reduced precision


class _CastLinear(layers.Linear):
    """comfy.ops.manual_cast in miniature: the weights stay in their storage dtype and are cast to the input's."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = None if self.bias is None else self.bias.to(x.dtype)
        return torch.nn.functional.linear(x, self.weight.to(x.dtype), bias)


class _CastConv2d(layers.Conv2d):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, self.weight.to(x.dtype), self.bias.to(x.dtype))


def test_half_weights_with_float32_compute():
    """The nodes' setting: bf16 storage, float32 activations through casting ops. The fixture's weights are
    bf16-exact, so only the BiAttention output projections, folded with their layer-scale vectors and rounded to
    bf16, move the result: measured 0.0028 on prompt_embeds (pooled: fp32 parity), bound 0.006."""
    ops = SimpleNamespace(**{**vars(layers.DEFAULT_OPERATIONS), "Linear": _CastLinear, "Conv2d": _CastConv2d})
    enc = faceclip_core.load_facet5_encoder(fixture_state_dict(), dtype=torch.bfloat16, operations=ops,
                                            compute_dtype=torch.float32)
    assert enc.encoder_2.fuser.encoder.text_layers[0].linear1.weight.dtype == torch.bfloat16
    for case in UNCOUPLED:
        embeds, pooled = enc.encode_tokens(case_images(case), *case_tokens(case))
        assert max_abs(embeds, cases()[f"{case}.prompt_embeds"]) <= 6e-3
        assert max_abs(pooled, cases()[f"{case}.pooled"]) <= FP32_TOL


def _rel_l2(got: torch.Tensor, want: torch.Tensor) -> float:
    return float((got - want).norm() / want.norm())


def test_8bit_linear_weights_with_float32_compute_cost_what_the_help_page_states():
    """Load FaceT5's fp8_e4m3fn: every Linear weight in float8_e4m3fn (no scale, like ComfyUI's fp8 text encoders),
    the rest bf16 / norms fp32, activations fp32. Measured on this fixture: prompt_embeds rel. L2 0.145 and
    cosine >= 0.989 per row against the official fp32 outputs (bf16 storage: 7e-4), pooled max diff 0.16; bounds
    0.2, 0.98 and 0.25. Random weights, so what this costs on the released weights is not measured here."""
    ops = SimpleNamespace(**{**vars(layers.DEFAULT_OPERATIONS), "Linear": _CastLinear, "Conv2d": _CastConv2d})
    enc = faceclip_core.load_facet5_encoder(fixture_state_dict(), dtype=torch.bfloat16, operations=ops,
                                            compute_dtype=torch.float32, linear_dtype=torch.float8_e4m3fn)
    linears = [m for m in enc.modules() if isinstance(m, torch.nn.Linear)]
    assert linears and all(m.weight.dtype == torch.float8_e4m3fn for m in linears)
    assert all(m.bias is None or m.bias.dtype == torch.bfloat16 for m in linears)
    assert enc.encoder_2.t5_encoder.final_layer_norm.weight.dtype == torch.float32
    assert enc.encoder_2.t5_encoder.embed_tokens.weight.dtype == torch.bfloat16
    for case in UNCOUPLED:
        embeds, pooled = enc.encode_tokens(case_images(case), *case_tokens(case))
        want = cases()[f"{case}.prompt_embeds"]
        assert embeds.dtype == torch.float32 and torch.isfinite(embeds).all()
        assert 1e-3 < _rel_l2(embeds, want) <= 0.2  # really 8-bit, and within the stated cost
        assert torch.nn.functional.cosine_similarity(embeds.flatten(1), want.flatten(1)).min() >= 0.98
        assert max_abs(pooled, cases()[f"{case}.pooled"]) <= 0.25


def test_8bit_storage_clamps_out_of_range_values_instead_of_making_nan():
    model = torch.nn.Sequential(layers.Linear(2, 2), layers.LayerNorm(2))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[1000.0, -0.5], [0.25, -600.0]]))
    assert layers.store_linear_weights(model, torch.float8_e4m3fn) == 2
    weight = model[0].weight.float()
    assert torch.isfinite(weight).all() and weight[0, 0] == 448 and weight[1, 1] == -448
    assert weight[0, 1] == -0.5 and model[1].weight.dtype == torch.float32


def test_8bit_weights_without_casting_layers_are_refused():
    with pytest.raises(FaceCLIPWeightsError, match="cast weights at compute"):
        faceclip_core.load_facet5_encoder(fixture_state_dict(), dtype=torch.bfloat16,
                                          linear_dtype=torch.float8_e4m3fn)
    with pytest.raises(FaceCLIPWeightsError, match="linear_dtype"):
        faceclip_core.load_facet5_encoder(fixture_state_dict(), linear_dtype=torch.float16)


# ---- full size ------------------------------------------------------------------------------------------------
def _reference_keys() -> dict[str, tuple[int, ...]]:
    ref = {}
    for line in KEY_LIST.read_text().splitlines():
        if line.startswith("#"):
            continue
        key, shape, _dtype = line.split("\t")
        ref[key] = tuple(ast.literal_eval(shape))
    return ref


def test_full_size_structure_matches_reference_key_list():
    ref = _reference_keys()
    assert len(ref) == 958
    model = build_meta(default_config())
    assert all(t.is_meta for t in model.state_dict().values())  # nothing allocated
    layout = FaceT5Layout(default_config())
    got = layout.official_layout(model.state_dict())  # the released names and shapes this model loads
    assert sorted(set(ref) - set(got)) == [] and sorted(set(got) - set(ref)) == []
    assert {k: v for k, v in got.items() if ref[k] != v} == {}
    # the loader infers exactly the default architecture back from those shapes, and accepts them
    released = {k: torch.empty(shape, device="meta", dtype=torch.int64 if k.endswith("num_batches_tracked")
                               else torch.bfloat16) for k, shape in ref.items()}
    assert infer_config(released) == default_config()
    check_state_dict(released)
    # what is read and what is not: every tensor is consumed except these (never reaching the outputs)
    unused = sorted(k for k in ref if layout.unused(k))
    assert {re.sub(r"\.\d+\.", ".N.", k) for k in unused} == {
        "encoder_2.face_encoder.mask_token", "encoder_2.face_pos_proj.weight", "encoder_2.face_pos_proj.bias",
        "encoder_2.fuser.enc_output.weight", "encoder_2.fuser.enc_output.bias",
        "encoder_2.fuser.enc_output_norm.weight", "encoder_2.fuser.enc_output_norm.bias",
        *(f"encoder_2.face_encoder.feature.N.{p}" for p in ("weight", "bias", "running_mean", "running_var",
                                                            "num_batches_tracked")),
        *(f"encoder_2.fuser.encoder.layers.N.{p}" for p in (
            "self_attn.in_proj_weight", "self_attn.in_proj_bias", "self_attn.out_proj.weight",
            "self_attn.out_proj.bias", "linear1.weight", "linear1.bias", "linear2.weight", "linear2.bias",
            "norm1.weight", "norm1.bias", "norm2.weight", "norm2.bias"))}
    assert all(".layers.5." in k for k in unused if ".fuser.encoder.layers." in k)  # the last face layer only
    assert len(unused) == 12 + 1 + 2 + 4 + 12


def test_full_size_parameter_counts_match_the_fact_sheet():
    """Elements per group of face_t5_encoder.pt (facet5-flux.md section 2.1), less what is deliberately not built:
    the ViT's mask_token, the folded BiAttention gammas, and in the face layers the last layer and the q/k rows."""
    model = build_meta(default_config())
    counts: dict[str, int] = {}
    for name, t in model.state_dict().items():
        group = next(g for g in ("encoder_1", "encoder_2.t5_encoder.embed_tokens", "encoder_2.t5_encoder",
                                 "encoder_2.face_encoder", "encoder_2.positional_embedding",
                                 "encoder_2.face_patch_proj", "encoder_2.fuser.encoder.fusion_layers",
                                 "encoder_2.fuser.encoder.text_layers", "encoder_2.fuser.encoder.layers")
                     if name.startswith(g + "."))
        counts[group] = counts.get(group, 0) + t.numel()
    d = 4096
    face_layer = 503_549_952 // 6
    assert counts == {
        "encoder_1": 123_060_480,
        "encoder_2.t5_encoder.embed_tokens": 131_596_288,
        "encoder_2.t5_encoder": 4_630_714_368,  # 24 blocks + final norm: T5-v1.1-XXL
        "encoder_2.face_encoder": 170_353_920 - 768,
        "encoder_2.positional_embedding": 2_097_152,
        "encoder_2.face_patch_proj": 3_149_824,
        "encoder_2.fuser.encoder.fusion_layers": 151_216_128 - 6 * 2 * d,
        "encoder_2.fuser.encoder.text_layers": 453_212_160,
        "encoder_2.fuser.encoder.layers": 5 * (face_layer - 2 * d * d - 2 * d),
    }


def test_every_weight_lives_in_an_operations_layer():
    """So that ComfyUI's model manager can cast, move, partially load and stream every one of them."""
    ops = layers.DEFAULT_OPERATIONS
    kinds = (ops.Linear, ops.LayerNorm, ops.Conv2d, ops.Embedding, ops.BatchNorm2d, ops.RMSNorm)
    model = build_meta(default_config())
    holders = {name: type(m).__name__ for name, m in model.named_modules()
               if (m._parameters or m._buffers) and not isinstance(m, kinds)}
    assert holders == {}
