"""faceclip_core.identity on tiny stand-in models: the loop learns, files round-trip, interrupt + resume is
exact, and the stage router touches only the conditional rows of its own prompt."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from faceclip_core.identity import (IDEAConfig, IdentityError, IdentityFileError, MethodConfig, SeFiConfig,
                                    StageRouter, TrainConfig, load_embedding, load_state, save_embedding,
                                    save_state, tokenize_prompt, train_identity)
from faceclip_core.identity.losses import denoising_loss
from tests.harness.identity_tiny import WordTokenizer, problem


def config(method: str, steps: int, lr: float = 0.05, **kw) -> MethodConfig:
    sefi = SeFiConfig(stages=3, kv_split=True, attention_blocks=(("middle", 0),), attention_weight=0.5)
    return MethodConfig(method, train=TrainConfig(steps=steps, lr=lr, seed=7, batch_size=2, **kw), sefi=sefi,
                        idea=IDEAConfig(adapter_heads=2, anchor_names="person, somebody else", reg_weight=1e-5))


def held_out_loss(prob, embedding, method: str) -> float:
    """Denoising loss of the learned tokens alone (what a user's prompt gets) on fixed noise and timesteps."""
    g = torch.Generator().manual_seed(123)
    cfg = config(method, 1)
    prompt = tokenize_prompt(prob.tokenize, cfg.templates[0], embedding.num_tokens)
    total = 0.0
    prob.attention.arm(None, None, (), ())
    for t in (50, 250, 450, 650, 850):
        stage = embedding.stage_of(t)
        context, pooled = prob.text.encode(prompt, embedding.rows(stage, 0))
        value, _ = prob.text.encode(prompt, embedding.rows(stage, 1))
        prob.attention.value = value
        x0 = prob.latents
        noise = torch.randn(x0.shape, generator=g)
        sigma = prob.denoiser.sigma_of(torch.full((x0.shape[0],), t))
        with torch.no_grad():
            pred = prob.denoiser.predict_noise(prob.denoiser.add_noise(x0, noise, sigma), sigma,
                                               context.expand(x0.shape[0], -1, -1), pooled.expand(x0.shape[0], -1))
        total += float(denoising_loss(pred, noise))
    prob.attention.disarm()
    return total / 5


# ID-EA spends much of its early steps on the training-only adapter, so its tokens improve more slowly
@pytest.mark.parametrize(("method", "factor"), [("SeFi-IDE", 0.9), ("ID-EA", 0.99)])
def test_a_few_steps_reduce_the_loss_of_the_learned_tokens(method, factor):
    prob = problem(method)
    before = train_identity(prob, config(method, 1, lr=1e-9)).embedding  # ~ the initial tokens
    after = train_identity(prob, config(method, 30))
    assert len(after.losses) == 30 and all(map(lambda x: x == x, after.losses))
    assert held_out_loss(prob, after.embedding, method) < factor * held_out_loss(prob, before, method)


def test_sefi_embedding_has_per_stage_key_and_value_tokens_that_differ():
    result = train_identity(problem("SeFi-IDE"), config("SeFi-IDE", 6))
    emb = result.embedding
    assert (emb.stages, emb.parts, emb.num_tokens) == (3, 2, 1)
    assert emb.tokens["clip_l"].shape == (3, 2, 1, 16) and emb.tokens["clip_g"].shape == (3, 2, 1, 24)
    assert not torch.equal(emb.tokens["clip_l"][:, 0], emb.tokens["clip_l"][:, 1])  # K and V differ


def test_sefi_attention_loss_reaches_the_tokens():
    prob = problem("SeFi-IDE")
    with_attn = train_identity(prob, dataclasses.replace(config("SeFi-IDE", 2),
                                                         sefi=SeFiConfig(stages=1, attention_weight=50.0,
                                                                         attention_blocks=(("middle", 0),))))
    without = train_identity(prob, dataclasses.replace(config("SeFi-IDE", 2),
                                                       sefi=SeFiConfig(stages=1, attention_weight=0.0,
                                                                       attention_blocks=(("middle", 0),))))
    assert not torch.allclose(with_attn.embedding.tokens["clip_l"], without.embedding.tokens["clip_l"])


def test_idea_exports_two_plain_tokens_and_needs_a_face():
    result = train_identity(problem("ID-EA"), config("ID-EA", 2))
    emb = result.embedding
    assert emb.is_plain and emb.num_tokens == 2
    prob = problem("ID-EA")
    prob.face = None
    with pytest.raises(IdentityError, match="recognition"):
        train_identity(prob, config("ID-EA", 1))


@pytest.mark.parametrize("method", ["SeFi-IDE", "ID-EA"])
def test_saved_embedding_reloads_to_the_same_tensors(method, tmp_path):
    emb = train_identity(problem(method), config(method, 2)).embedding
    path = save_embedding(tmp_path / "alice.safetensors", emb)
    again = load_embedding(path)
    assert again.method == method and again.metadata["class_word"] == "person"
    for name in ("clip_l", "clip_g"):
        assert torch.equal(again.tokens[name], emb.tokens[name])
    from safetensors.torch import load_file

    plain = load_file(str(path))
    assert plain["clip_l"].shape == (emb.num_tokens, 16) and plain["clip_g"].shape == (emb.num_tokens, 24)
    with pytest.raises(IdentityFileError, match="exists already"):
        save_embedding(path, emb)
    save_embedding(path, emb, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["alice.safetensors"]  # no temporary file left


@pytest.mark.parametrize("method", ["SeFi-IDE", "ID-EA"])
def test_interrupt_then_resume_equals_an_uninterrupted_run(method, tmp_path):
    full = train_identity(problem(method), config(method, 5))

    class Stop(Exception):
        pass

    saved = {}

    def progress(done, total, loss):
        if done == 2:
            raise Stop

    def on_stop(result):
        saved["path"] = save_state(tmp_path / "run.state.safetensors", result.state)
        saved["result"] = result

    with pytest.raises(Stop):
        train_identity(problem(method), config(method, 5), progress=progress, on_stop=on_stop)
    assert saved["result"].interrupted and saved["result"].state.step == 2
    state = load_state(saved["path"])
    resumed = train_identity(problem(method), config(method, 5), resume=state)
    assert resumed.state.step == 5 and resumed.losses == full.losses
    for name in ("clip_l", "clip_g"):
        assert torch.equal(resumed.embedding.tokens[name], full.embedding.tokens[name])


def test_interrupt_inside_a_step_keeps_the_last_completed_step_and_resumes_exactly(tmp_path):
    """ComfyUI raises its interrupt from inside any layer: the half-done step is dropped, not half-saved."""
    full = train_identity(problem("SeFi-IDE"), config("SeFi-IDE", 4))
    prob = problem("SeFi-IDE")
    calls = {"n": 0}
    forward = prob.denoiser.predict_noise

    class Stop(Exception):
        pass

    def interrupted(*args):
        calls["n"] += 1
        if calls["n"] == 3:  # inside step 3
            raise Stop
        return forward(*args)

    prob.denoiser.predict_noise = interrupted
    saved = {}
    with pytest.raises(Stop):
        train_identity(prob, config("SeFi-IDE", 4), on_stop=lambda r: saved.setdefault("state", r.state))
    assert saved["state"].step == 2
    resumed = train_identity(problem("SeFi-IDE"), config("SeFi-IDE", 4), resume=saved["state"])
    assert resumed.losses == full.losses
    assert torch.equal(resumed.embedding.tokens["clip_g"], full.embedding.tokens["clip_g"])


def test_resuming_a_different_method_is_refused(tmp_path):
    state = train_identity(problem("ID-EA"), config("ID-EA", 1)).state
    with pytest.raises(IdentityError, match="resume"):
        train_identity(problem("SeFi-IDE"), config("SeFi-IDE", 2), resume=state)


def test_not_a_safetensors_file_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not safetensors")
    with pytest.raises(IdentityFileError, match="not a readable safetensors"):
        load_embedding(bad)
    with pytest.raises(IdentityFileError, match="does not exist"):
        load_embedding(tmp_path / "missing.safetensors")


def test_prompts_need_one_identity_slot_and_find_the_reference_word():
    tok = WordTokenizer()
    with pytest.raises(IdentityError, match="exactly one"):
        tokenize_prompt(tok, "a photo of a person", 1)
    p = tokenize_prompt(tok, "a photo of {id} smiling", 3)
    assert p.slots == (4, 5, 6) and p.eos == 8
    assert all(p.ids[n][i] == 0 for n in p.ids for i in p.slots)
    ref = tokenize_prompt(tok, "a photo of {id} smiling", 1, word="person")
    assert ref.slots == (4,)


def test_stage_router_swaps_keys_and_values_on_its_own_conditional_rows_only():
    ours = torch.randn(1, 77, 8)
    other = torch.randn(1, 77, 8)
    ks = [torch.full((1, 77, 8), float(s)) for s in range(5)]
    vs = [torch.full((1, 77, 8), 10.0 + s) for s in range(5)]
    router = StageRouter(ks, vs, ours, timestep_of=lambda sigma: sigma * 100)  # sigma 9.5 -> t 950 -> stage 4
    context = torch.cat([ours, other, ours])  # chunks: cond (ours), cond (another prompt), uncond (same tensor)
    n = torch.randn(3, 16, 4)
    extra = {"cond_or_uncond": [0, 0, 1], "sigmas": torch.tensor([9.5, 9.5, 9.5])}
    n2, c2, v2 = router.attn2_patch(n, context, context, extra)
    assert torch.equal(n2, n)
    assert torch.equal(c2[0], ks[4][0]) and torch.equal(v2[0], vs[4][0])
    assert torch.equal(c2[1], other[0]) and torch.equal(v2[1], other[0])
    assert torch.equal(c2[2], ours[0]) and torch.equal(v2[2], ours[0])  # unconditional: untouched
    _, c_low, v_low = router.attn2_patch(n, context, context, {**extra, "sigmas": torch.tensor([0.1] * 3)})
    assert torch.equal(c_low[0], ks[0][0]) and torch.equal(v_low[0], vs[0][0])
