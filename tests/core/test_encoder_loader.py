"""load_encoder: sources (.safetensors, official-style .pt, in-memory dict), refusals, face-ViT sharing, dtypes."""
from __future__ import annotations

import pickle

import pytest
import torch
from safetensors.torch import save_file

import faceclip_core
from faceclip_core import FaceCLIPStateDictError, FaceCLIPWeightsError
from faceclip_core.sdxl.loader import encoder_from_state_dict, face_encoders_identical
from tests.core._encoder_fixture import case_inputs, cases, fixture_state_dict, max_abs

TOL = 1e-4


def _assert_parity(enc, case="a"):
    faces, prompts, mask = case_inputs(case)
    emb, pooled = enc.encode(faces, prompts, mask)
    assert max_abs(emb, cases()[f"{case}.embeddings"]) <= TOL
    assert max_abs(pooled, cases()[f"{case}.pooled"]) <= TOL


def test_load_from_safetensors(tmp_path):
    path = tmp_path / "enc.safetensors"
    save_file(fixture_state_dict(), str(path))
    _assert_parity(faceclip_core.load_encoder(path))
    _assert_parity(faceclip_core.load_encoder(str(path)))


def test_load_from_official_style_pt_with_model_prefix(tmp_path):
    path = tmp_path / "face_clip_encoder.pt"
    torch.save({f"model.{k}": v for k, v in fixture_state_dict().items()}, path)
    _assert_parity(faceclip_core.load_encoder(path))


def test_load_from_memory_does_not_mutate_callers_dict():
    sd = fixture_state_dict()
    keys = set(sd)
    dtypes = {k: v.dtype for k, v in sd.items()}
    enc = faceclip_core.load_encoder(sd)
    assert set(sd) == keys and {k: v.dtype for k, v in sd.items()} == dtypes
    _assert_parity(enc)
    assert not any(p.requires_grad for p in enc.parameters())
    assert not enc.training


def test_bf16_weights_are_held_in_bf16():
    enc = faceclip_core.load_encoder(fixture_state_dict(), dtype=torch.bfloat16)
    sd = enc.state_dict()
    assert sd["face_clip_l.transformer.resblocks.0.mlp.c_fc.weight"].dtype == torch.bfloat16
    assert sd["face_clip_l.token_embedding.weight"].dtype == torch.bfloat16
    assert sd["face_clip_l.face_encoder.feature.1.running_var"].dtype == torch.float32
    assert sd["face_clip_l.face_encoder.feature.1.num_batches_tracked"].dtype == torch.int64
    assert sd["face_clip_g.fuser.encoder.fusion_layers.0.layer_norm_v.weight"].dtype == torch.float32


def test_rejects_unknown_dtype():
    with pytest.raises(FaceCLIPWeightsError, match="dtype"):
        faceclip_core.load_encoder(fixture_state_dict(), dtype=torch.int8)


# ---- refusals ----------------------------------------------------------------------------------------------------
def test_refuses_state_dict_of_another_model():
    other = {"conv_in.weight": torch.zeros(4, 4, 3, 3), "down_blocks.0.resnets.0.conv1.weight": torch.zeros(4, 4, 3, 3)}
    with pytest.raises(FaceCLIPStateDictError) as info:
        faceclip_core.load_encoder(other)
    msg = str(info.value)
    # what to do comes first; the key lists after it
    assert msg.startswith("this file is a UNet (diffusion model): load it with ComfyUI's Load Diffusion Model node, "
                          'not the "Load FaceCLIP" node.')
    assert "Not a FaceCLIP-SDXL encoder" in msg and "face_clip_l.token_embedding.weight" in msg
    assert "face_clip_g.positional_embedding" in info.value.missing


def test_reports_missing_unexpected_and_wrong_shape_keys():
    sd = fixture_state_dict()
    del sd["face_clip_g.fuser.encoder.layers.1.linear2.bias"]
    sd["face_clip_l.extra.weight"] = torch.zeros(2)
    sd["face_clip_l.proj1.bias"] = torch.zeros(3)
    with pytest.raises(FaceCLIPStateDictError) as info:
        faceclip_core.load_encoder(sd)
    err = info.value
    assert err.missing == ["face_clip_g.fuser.encoder.layers.1.linear2.bias"]
    assert err.unexpected == ["face_clip_l.extra.weight"]
    assert len(err.mismatched) == 1 and err.mismatched[0].startswith("face_clip_l.proj1.bias (3,)")
    for text in ("missing", "unexpected", "wrong shape", "linear2.bias", "extra.weight"):
        assert text in str(err)


def test_refuses_reduced_token_table_form():
    """The fixture's compact token table is a test convenience, not a weights format the product accepts."""
    sd = fixture_state_dict()
    del sd["face_clip_l.token_embedding.weight"]
    with pytest.raises(FaceCLIPStateDictError, match="token_embedding"):
        faceclip_core.load_encoder(sd)


def test_refuses_truncated_safetensors(tmp_path):
    path = tmp_path / "enc.safetensors"
    save_file(fixture_state_dict(), str(path))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(FaceCLIPWeightsError, match="truncated or corrupt"):
        faceclip_core.load_encoder(path)


def test_refuses_truncated_pt(tmp_path):
    path = tmp_path / "enc.pt"
    torch.save(fixture_state_dict(), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])
    with pytest.raises(FaceCLIPWeightsError, match="truncated or corrupt"):
        faceclip_core.load_encoder(path)


def test_refuses_garbage_and_empty_and_missing_files(tmp_path):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"\x00not a checkpoint\xff" * 50)
    with pytest.raises(FaceCLIPWeightsError):
        faceclip_core.load_encoder(junk)
    empty = tmp_path / "empty.safetensors"
    empty.write_bytes(b"")
    with pytest.raises(FaceCLIPWeightsError, match="empty"):
        faceclip_core.load_encoder(empty)
    with pytest.raises(FaceCLIPWeightsError, match="not found"):
        faceclip_core.load_encoder(tmp_path / "nope.safetensors")
    with pytest.raises(FaceCLIPWeightsError, match="path or a state dict"):
        faceclip_core.load_encoder(12345)


class _Payload:
    """Any class: weights_only=True refuses to unpickle it (it could run code)."""


def test_refuses_pickle_with_objects(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"model.face_clip_l.proj1.weight": torch.zeros(2), "extra": _Payload()}, path)
    with pytest.raises(FaceCLIPWeightsError, match="more than tensors") as err:
        faceclip_core.load_encoder(path)
    message = str(err.value)
    assert "(it refers to " in message and "test_encoder_loader._Payload)" in message
    assert "\x1b" not in message and "weights_only` set to `False" not in message and message.endswith(".safetensors.")


def test_refuses_raw_pickle_of_a_class(tmp_path):
    path = tmp_path / "raw.pt"
    path.write_bytes(pickle.dumps(_Payload(), protocol=2))
    with pytest.raises(FaceCLIPWeightsError):
        faceclip_core.load_encoder(path)


def test_refuses_dict_with_non_tensor_values(tmp_path):
    path = tmp_path / "mixed.pt"
    sd = fixture_state_dict()
    sd["epoch"] = 3  # allowed by weights_only, but not a plain state dict
    torch.save(sd, path)
    with pytest.raises(FaceCLIPWeightsError, match="not a plain state dict.*epoch"):
        faceclip_core.load_encoder(path)


def test_accepts_checkpoint_nested_under_state_dict(tmp_path):
    path = tmp_path / "nested.pt"
    torch.save({"state_dict": fixture_state_dict()}, path)
    _assert_parity(faceclip_core.load_encoder(path))


# ---- face ViT sharing ----------------------------------------------------------------------------------------------
def _with_identical_face_encoders():
    sd = fixture_state_dict()
    for k in [k for k in sd if k.startswith("face_clip_l.face_encoder.")]:
        sd["face_clip_g" + k[len("face_clip_l"):]] = sd[k].clone()
    return sd


def test_face_encoders_not_shared_when_different():
    sd = fixture_state_dict()
    assert not face_encoders_identical(sd)
    enc = faceclip_core.load_encoder(sd)
    assert not enc.face_encoder_shared
    assert enc.face_clip_l.face_encoder is not enc.face_clip_g.face_encoder


def test_face_encoders_shared_when_identical():
    sd = _with_identical_face_encoders()
    assert face_encoders_identical(sd)
    shared = faceclip_core.load_encoder(sd)
    assert shared.face_encoder_shared
    assert shared.face_clip_l.face_encoder is shared.face_clip_g.face_encoder
    # one set of ViT tensors, not two
    ptrs = {p.data_ptr() for p in shared.parameters()}
    assert len(ptrs) == len(list(shared.parameters()))
    assert len(list(shared.parameters())) < len(list(faceclip_core.load_encoder(fixture_state_dict()).parameters()))
    # same result as an unshared model with the same weights, and the full key set is still there
    unshared = encoder_from_state_dict(_with_identical_face_encoders(), share_face_encoder=False)
    assert not unshared.face_encoder_shared
    assert set(shared.state_dict()) == set(unshared.state_dict())
    faces, prompts, mask = case_inputs("c")
    a = shared.encode(faces, prompts, mask)
    b = unshared.encode(faces, prompts, mask)
    assert max_abs(a[0], b[0]) <= 1e-6 and max_abs(a[1], b[1]) <= 1e-6


def test_one_differing_element_prevents_sharing():
    sd = _with_identical_face_encoders()
    sd["face_clip_g.face_encoder.blocks.1.mlp.fc2.bias"][3] += 1e-3
    assert not face_encoders_identical(sd)
    assert not faceclip_core.load_encoder(sd).face_encoder_shared


def test_identical_face_encoders_from_safetensors_share_memory(tmp_path):
    path = tmp_path / "shared.safetensors"
    save_file(_with_identical_face_encoders(), str(path))
    enc = faceclip_core.load_encoder(path)
    assert enc.face_encoder_shared
    sd = enc.state_dict()
    assert sd["face_clip_g.face_encoder.blocks.0.attn.qkv.weight"].data_ptr() == \
        sd["face_clip_l.face_encoder.blocks.0.attn.qkv.weight"].data_ptr()
    ref = encoder_from_state_dict(_with_identical_face_encoders(), share_face_encoder=False)
    faces, prompts, mask = case_inputs("a")
    assert max_abs(enc.encode(faces, prompts, mask)[0], ref.encode(faces, prompts, mask)[0]) <= 1e-6


def test_safetensors_with_bad_header_is_refused(tmp_path):
    path = tmp_path / "bad.safetensors"
    path.write_bytes((16).to_bytes(8, "little") + b"{not json at all")
    with pytest.raises(FaceCLIPWeightsError, match="bad.safetensors .*JSON.*truncated or corrupt"):
        faceclip_core.load_encoder(path)
    path.write_bytes((10 ** 12).to_bytes(8, "little") + b"{}")
    with pytest.raises(FaceCLIPWeightsError, match="bad.safetensors .*header.*truncated or corrupt"):
        faceclip_core.load_encoder(path)
