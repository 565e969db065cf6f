"""load_facet5_encoder: sources (.pt as released, .safetensors, in-memory dict), dtypes, refusals (including each
encoder's file given to the other variant's loader), and encode_tokens / encode argument checking."""
from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

import faceclip_core
from faceclip_core import FaceCLIPInputError, FaceCLIPStateDictError, FaceCLIPWeightsError
from faceclip_core.facet5 import FaceT5TokenizerError
from tests.core._encoder_fixture import fixture_state_dict as sdxl_state_dict
from tests.core._encoder_fixture import max_abs
from tests.core._facet5_fixture import case_images, case_prompts, case_tokens, cases, fixture_state_dict

TOL = 1e-4


def _outputs(enc, case="a"):
    return enc.encode_tokens(case_images(case), *case_tokens(case))


def _assert_parity(enc, case="a"):
    embeds, pooled = _outputs(enc, case)
    assert max_abs(embeds, cases()[f"{case}.prompt_embeds"]) <= TOL
    assert max_abs(pooled, cases()[f"{case}.pooled"]) <= TOL


@pytest.fixture(scope="module")
def enc():
    return faceclip_core.load_facet5_encoder(fixture_state_dict())


# ---- sources ---------------------------------------------------------------------------------------------------
def test_pt_safetensors_and_memory_give_the_same_outputs(tmp_path, enc):
    """The release is a torch.save pickle of the exact keys (no prefix); a .safetensors copy has the same keys."""
    pt, st = tmp_path / "face_t5_encoder.pt", tmp_path / "face_t5_encoder.safetensors"
    torch.save(fixture_state_dict(), pt)
    save_file(fixture_state_dict(), str(st))
    ref = _outputs(enc)
    for source in (pt, str(pt), st, str(st)):
        got = _outputs(faceclip_core.load_facet5_encoder(source))
        assert torch.equal(got[0], ref[0]) and torch.equal(got[1], ref[1]), source
    _assert_parity(enc)


def test_prefixed_and_nested_state_dicts_load(tmp_path, enc):
    """Not the official layout, but what re-saved checkpoints look like (DataParallel prefix, a wrapper dict)."""
    ref = _outputs(enc)
    prefixed = faceclip_core.load_facet5_encoder({f"module.{k}": v for k, v in fixture_state_dict().items()})
    assert torch.equal(_outputs(prefixed)[0], ref[0])
    path = tmp_path / "nested.pt"
    torch.save({"state_dict": fixture_state_dict()}, path)
    assert torch.equal(_outputs(faceclip_core.load_facet5_encoder(path))[0], ref[0])


def test_load_from_memory_does_not_mutate_callers_dict():
    sd = fixture_state_dict()
    before = {k: (v.dtype, v.shape) for k, v in sd.items()}
    model = faceclip_core.load_facet5_encoder(sd, dtype=torch.bfloat16)
    assert {k: (v.dtype, v.shape) for k, v in sd.items()} == before
    assert not any(p.requires_grad for p in model.parameters()) and not model.training


def test_weights_held_in_the_requested_dtype_norms_in_float32():
    sd = faceclip_core.load_facet5_encoder(fixture_state_dict(), dtype=torch.bfloat16).state_dict()
    for key in ("encoder_2.t5_encoder.embed_tokens.weight", "encoder_2.t5_encoder.block.1.ff_layer.wo.weight",
                "encoder_2.positional_embedding.weight", "encoder_2.fuser.encoder.layers.0.self_attn.v_proj.weight",
                "encoder_1.text_model.encoder.layers.0.self_attn.q_proj.weight",
                "encoder_2.face_encoder.blocks.0.attn.qkv.weight"):
        assert sd[key].dtype == torch.bfloat16, key
    for key in ("encoder_2.t5_encoder.final_layer_norm.weight",
                "encoder_2.t5_encoder.block.0.ff_layer.layer_norm.weight",
                "encoder_2.fuser.encoder.fusion_layers.0.layer_norm_v.weight", "encoder_2.face_encoder.norm.weight",
                "encoder_1.text_model.final_layer_norm.weight"):
        assert sd[key].dtype == torch.float32, key


def test_unused_tensors_are_not_built_and_sliced_ones_hold_no_extra_memory():
    model = faceclip_core.load_facet5_encoder(fixture_state_dict())
    keys = set(model.state_dict())
    assert not any(k.startswith(("encoder_2.face_pos_proj.", "encoder_2.fuser.enc_output")) for k in keys)
    assert not any(".face_encoder.feature." in k or k.endswith("mask_token") or ".gamma_" in k for k in keys)
    assert not any(k.startswith("encoder_2.fuser.encoder.layers.1.") for k in keys)  # the last face layer
    v = model.state_dict()["encoder_2.fuser.encoder.layers.0.self_attn.v_proj.weight"]
    assert v.shape == (64, 64) and v.untyped_storage().nbytes() == v.numel() * v.element_size()
    # the value rows of the packed projection, not the query or key rows
    packed = fixture_state_dict()["encoder_2.fuser.encoder.layers.0.self_attn.in_proj_weight"]
    assert torch.equal(v, packed[128:].float())


def test_positional_embedding_is_the_stored_table():
    """The fuser's text positions are the checkpoint's bf16 buffer, not a recomputed sinusoid."""
    sd = fixture_state_dict()
    sd["encoder_2.positional_embedding"] = sd["encoder_2.positional_embedding"] * 0.5
    model = faceclip_core.load_facet5_encoder(sd)
    assert torch.equal(model.state_dict()["encoder_2.positional_embedding.weight"],
                       sd["encoder_2.positional_embedding"][0].float())
    assert max_abs(_outputs(model)[0], cases()["a.prompt_embeds"]) > 1e-3


def test_parameters_that_never_reach_the_outputs_change_nothing(enc):
    sd = fixture_state_dict()
    for key in [k for k in sd if k.startswith(("encoder_2.face_pos_proj.", "encoder_2.fuser.enc_output",
                                                "encoder_2.face_encoder.feature.", "encoder_2.fuser.encoder.layers.1."))
                or k.endswith("mask_token")]:
        if sd[key].is_floating_point():
            sd[key] = sd[key] + 0.3
    got, ref = _outputs(faceclip_core.load_facet5_encoder(sd)), _outputs(enc)
    assert torch.equal(got[0], ref[0]) and torch.equal(got[1], ref[1])


def test_rejects_unknown_dtype():
    with pytest.raises(FaceCLIPWeightsError, match="dtype"):
        faceclip_core.load_facet5_encoder(fixture_state_dict(), dtype=torch.int8)


def test_t5_tokenizer_given_at_load_is_checked_and_used(tmp_path):
    from tests.core._facet5_fixture import t5_tokenizer_json

    with pytest.raises(FaceT5TokenizerError, match="not found"):
        faceclip_core.load_facet5_encoder(fixture_state_dict(), t5_tokenizer=tmp_path / "tokenizer.json")
    model = faceclip_core.load_facet5_encoder(fixture_state_dict(), t5_tokenizer=t5_tokenizer_json())
    embeds, pooled = model.encode(case_images("b"), case_prompts("b"))
    assert max_abs(embeds, cases()["b.prompt_embeds"]) <= TOL and max_abs(pooled, cases()["b.pooled"]) <= TOL


# ---- refusals --------------------------------------------------------------------------------------------------
def test_refuses_the_sdxl_encoder_and_names_its_node():
    with pytest.raises(FaceCLIPStateDictError) as info:
        faceclip_core.load_facet5_encoder(sdxl_state_dict())
    msg = str(info.value)
    assert msg.startswith('this file is a FaceCLIP-SDXL encoder (face_clip_encoder.pt): load it with the "Load '
                          'FaceCLIP" node, not the "Load FaceT5" node.')
    assert "Not a FaceT5-FLUX encoder" in msg
    assert "face_clip_g." in msg  # what was found
    assert "encoder_2.t5_encoder.embed_tokens.weight" in info.value.missing


def test_sdxl_loader_refuses_a_facet5_file_and_names_its_node(tmp_path):
    for source in (fixture_state_dict(), {f"model.{k}": v for k, v in fixture_state_dict().items()}):
        with pytest.raises(FaceCLIPStateDictError) as info:
            faceclip_core.load_encoder(source)
        msg = str(info.value)
        assert msg.startswith("this file is a FaceT5-FLUX encoder (face_t5_encoder.pt, FaceCLIP's FLUX variant): "
                              'load it with the "Load FaceT5" node, not the "Load FaceCLIP" node.')
        assert "Not a FaceCLIP-SDXL encoder" in msg
    path = tmp_path / "face_t5_encoder.safetensors"
    save_file(fixture_state_dict(), str(path))
    with pytest.raises(FaceCLIPStateDictError, match='"Load FaceT5"'):
        faceclip_core.load_encoder(path)


def test_refuses_a_random_safetensors(tmp_path):
    path = tmp_path / "other.safetensors"
    save_file({"conv_in.weight": torch.zeros(4, 4, 3, 3), "time_embed.0.weight": torch.zeros(8, 4)}, str(path))
    with pytest.raises(FaceCLIPStateDictError) as info:
        faceclip_core.load_facet5_encoder(path)
    msg = str(info.value)
    assert msg.startswith('this file is not a FaceT5-FLUX encoder: pick face_t5_encoder.pt')
    assert msg.index('"Load FaceT5"') < msg.index("found keys like conv_in.weight") < msg.index("missing key(s)")


@pytest.mark.parametrize("keys,first", [
    (["transformer_blocks.0.attn.to_q.weight", "x_embedder.weight"],
     "this file is a FLUX diffusion model (such as FaceT5's dit.pt): load it with ComfyUI's Load Diffusion Model"),
    (["encoder.block.0.layer.0.SelfAttention.q.weight", "shared.weight"],
     "this file is a stock T5 text encoder: load it with ComfyUI's Load CLIP node"),
    (["text_model.embeddings.token_embedding.weight"],
     "this file is a stock CLIP text encoder: load it with ComfyUI's Load CLIP node"),
    (["model.diffusion_model.input_blocks.0.0.weight", "conditioner.embedders.0.transformer.text_model.x.weight",
      "first_stage_model.encoder.down.0.block.0.conv1.weight"],
     "this file is a Stable Diffusion / SDXL checkpoint (UNet, text encoders and VAE in one file): load it with "
     "ComfyUI's Load Checkpoint node"),
    (["lora_unet_input_blocks_4_1_proj_in.lora_down.weight", "lora_te1_text_model_encoder_layers_0.alpha"],
     "this file is a LoRA: load it with ComfyUI's Load LoRA node"),
    (["encoder.down.0.block.0.conv1.weight", "decoder.up.0.block.0.conv1.weight"],
     "this file is a VAE: load it with ComfyUI's Load VAE node"),
])
@pytest.mark.parametrize("load", [faceclip_core.load_facet5_encoder, faceclip_core.load_encoder])
def test_refusal_of_other_models_says_first_which_node_loads_them(keys, first, load):
    with pytest.raises(FaceCLIPStateDictError) as info:
        load({k: torch.zeros(2, 2) for k in keys})
    assert str(info.value).startswith(first)


def test_reports_missing_unexpected_and_wrong_shape_keys():
    sd = fixture_state_dict()
    del sd["encoder_2.fuser.encoder.text_layers.1.linear2.bias"]
    del sd["encoder_2.face_encoder.feature.3.running_var"]  # unused, but part of the released file
    sd["encoder_2.extra.weight"] = torch.zeros(2)
    sd["encoder_2.face_patch_proj.bias"] = torch.zeros(3)
    with pytest.raises(FaceCLIPStateDictError) as info:
        faceclip_core.load_facet5_encoder(sd)
    err = info.value
    assert err.missing == ["encoder_2.face_encoder.feature.3.running_var",
                           "encoder_2.fuser.encoder.text_layers.1.linear2.bias"]
    assert err.unexpected == ["encoder_2.extra.weight"]
    assert len(err.mismatched) == 1 and err.mismatched[0].startswith("encoder_2.face_patch_proj.bias (3,)")
    for text in ("FaceT5-FLUX encoder architecture", "missing", "unexpected", "wrong shape"):
        assert text in str(err)


def test_refuses_reduced_token_table_form():
    """The fixture's compact token tables are a test convenience, not a weights format the product accepts."""
    from tests.harness.tiny_facet5 import fixture_weights

    with pytest.raises(FaceCLIPStateDictError, match="token_embedding.weight"):
        faceclip_core.load_facet5_encoder(dict(fixture_weights()))


def test_refuses_inconsistent_architecture():
    sd = fixture_state_dict()
    # a T5 attention width that does not split into the bias table's 4 heads
    for name in ("Wq", "Wk", "Wv"):
        key = f"encoder_2.t5_encoder.block.0.self_attention_layer.self_attention.{name}.weight"
        sd[key] = torch.zeros(66, 64)
    with pytest.raises(FaceCLIPStateDictError, match="cannot infer its architecture.*heads"):
        faceclip_core.load_facet5_encoder(sd)


def test_refuses_integer_where_float_expected():
    sd = fixture_state_dict()
    sd["encoder_2.face_patch_proj.bias"] = sd["encoder_2.face_patch_proj.bias"].long()
    with pytest.raises(FaceCLIPStateDictError, match="wrong kind of dtype"):
        faceclip_core.load_facet5_encoder(sd)


def test_refuses_truncated_files(tmp_path):
    pt, st = tmp_path / "enc.pt", tmp_path / "enc.safetensors"
    torch.save(fixture_state_dict(), pt)
    save_file(fixture_state_dict(), str(st))
    for path in (pt, st):
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
        with pytest.raises(FaceCLIPWeightsError, match="truncated or corrupt"):
            faceclip_core.load_facet5_encoder(path)
    with pytest.raises(FaceCLIPWeightsError, match="not found"):
        faceclip_core.load_facet5_encoder(tmp_path / "nope.pt")


# ---- encode arguments ----------------------------------------------------------------------------------------------
def test_any_face_size_and_a_batch_in_chunks(enc):
    t5, clip = case_tokens("c")
    for h, w in ((112, 112), (448, 448), (64, 48)):
        embeds, pooled = enc.encode_tokens(torch.rand(2, 3, h, w), t5, clip)
        assert embeds.shape == (2, 512, 64) and pooled.shape == (2, 128) and torch.isfinite(embeds).all()
    whole = enc.encode_tokens(case_images("c"), t5, clip)
    done = []
    chunked = enc.encode_tokens(case_images("c"), t5, clip, chunk_size=1, between=lambda d, t: done.append((d, t)))
    assert done == [(1, 2), (2, 2)]
    assert max_abs(chunked[0], whole[0]) <= 1e-5 and max_abs(chunked[1], whole[1]) <= 1e-5


@pytest.mark.parametrize("change,match", [
    (lambda i, t, c: (i * 255, t, c), "0..255"),
    (lambda i, t, c: (i[0], t, c), "batched"),
    (lambda i, t, c: (i, t[:, :256], c), r"t5_ids must have shape \[1, 512\]"),
    (lambda i, t, c: (i, t, c[:, :70]), r"clip_ids must have shape \[1, 77\]"),
    (lambda i, t, c: (i, t.float(), c), "integer token ids"),
    (lambda i, t, c: (i, t + 40000, c), "outside the model's vocabulary"),
    (lambda i, t, c: (i, t.tolist(), c), "torch.Tensor"),
    (lambda i, t, c: (i.expand(2, -1, -1, -1), t, c), r"shape \[2, 512\]"),
])
def test_bad_encode_tokens_arguments(enc, change, match):
    t5, clip = case_tokens("a")
    with pytest.raises(FaceCLIPInputError, match=match):
        enc.encode_tokens(*change(case_images("a"), t5, clip))


def test_prompt_count_must_match_faces(enc):
    with pytest.raises(FaceCLIPInputError, match="1 face.* 2 prompt"):
        enc.encode(case_images("a"), ["x", "y"])
    with pytest.raises(FaceCLIPInputError, match="list of strings"):
        enc.encode(case_images("a"), "x")
