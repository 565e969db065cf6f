"""faceclip_core.identity on tiny stand-in models: the loop learns in every training dtype, the loss terms are on
the papers' scale, ID-EA follows its reference code, files round-trip, interrupt + resume is exact."""
from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from faceclip_core.identity import (
    AlignmentPlan,
    CLIPStack,
    IDEAConfig,
    IdentityError,
    IdentityFileError,
    MethodConfig,
    SeFiConfig,
    StepStats,
    TrainConfig,
    alignment_plan,
    anchor_words,
    load_embedding,
    load_state,
    save_embedding,
    save_state,
    stage_index,
    token_gradients,
    tokenize_prompt,
    train_identity,
)
from faceclip_core.identity.attention import alignment_term
from faceclip_core.identity.config import IDEA_TEMPLATES, METHOD_DEFAULTS, method_default
from faceclip_core.identity.losses import denoising_loss
from faceclip_core.identity.params import IDEAParams
from faceclip_core.identity.routing import stage_timesteps
from tests.harness.identity_tiny import WordTokenizer, problem, text_encoder

HALF = {"fp16": torch.float16, "bf16": torch.bfloat16}


def config(method: str, steps: int, lr: float = 0.05, sefi: dict | None = None, idea: dict | None = None,
           **train) -> MethodConfig:
    train = {"seed": 7, "batch_size": 2, **train}
    return MethodConfig(method, train=TrainConfig(steps=steps, lr=lr, **train),
                        sefi=SeFiConfig(**{"stages": 3, "attention_blocks": (("middle", 0),), **(sefi or {})}),
                        idea=IDEAConfig(**{"adapter_heads": 2, "anchor_names": "person, somebody else",
                                           "reg_weight": 1e-5, **(idea or {})}))


def held_out_loss(prob, embedding, method: str) -> float:
    """Denoising loss of the learned tokens alone (what a user's prompt gets) on fixed noise and timesteps."""
    g = torch.Generator().manual_seed(123)
    cfg = config(method, 1)
    prompt = tokenize_prompt(prob.tokenize, cfg.templates[0], embedding.num_tokens)
    total = 0.0
    prob.attention.arm(None, None)
    for t in (50, 250, 450, 650, 850):
        stage = int(stage_index(torch.tensor(float(t)), embedding.stages))
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


# ID-EA starts at the cross-initialised anchor (the text encoders' final-LayerNorm output) and spends early steps on
# its training-only adapter, so its tokens improve more slowly on the tiny model (~0.97 after 30 steps)
@pytest.mark.parametrize(("method", "factor"), [("SeFi-IDE", 0.9), ("ID-EA", 0.98)])
def test_a_few_steps_reduce_the_loss_of_the_learned_tokens(method, factor):
    prob = problem(method)
    before = train_identity(prob, config(method, 1, lr=1e-9)).embedding  # ~ the initial tokens
    after = train_identity(prob, config(method, 30))
    assert len(after.losses) == 30 and all(map(lambda x: x == x, after.losses))
    assert held_out_loss(prob, after.embedding, method) < factor * held_out_loss(prob, before, method)


# ------------------------------------------------------------------ precision: fp16 / bf16 UNet compute

def _flat(grads: dict[str, torch.Tensor]) -> torch.Tensor:
    return torch.cat([g.reshape(-1) for _, g in sorted(grads.items())])


@pytest.mark.parametrize("method", ["SeFi-IDE", "ID-EA"])
@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_half_precision_unet_gives_the_fp32_gradient_direction_at_1024_px(method, precision):
    """SDXL at 1024 px: 128x128 latents, so the loss's per-element gradient is ~1e-5 (sub-normal in fp16)."""
    ref_stats, ref = token_gradients(problem(method, latent=128), config(method, 1, batch_size=1))
    stats, grads = token_gradients(problem(method, latent=128, dtype=HALF[precision]),
                                   config(method, 1, batch_size=1, precision=precision))
    a, b = _flat(ref), _flat(grads)
    assert torch.isfinite(b).all() and b.abs().sum() > 0
    assert float(F.cosine_similarity(a, b, dim=0)) > 0.9
    assert 0.5 < stats.grad_norm / ref_stats.grad_norm < 2.0  # unscaled again before anyone sees it
    assert stats.loss_scale == (2.0 ** 16 if precision == "fp16" else None)
    assert not stats.skipped


UNDERFLOW_GAIN = 1e-3  # the stand-in's output layer, so that the unscaled fp16 gradients behind it underflow


@pytest.mark.parametrize("method", ["SeFi-IDE", "ID-EA"])
def test_fp16_loss_scaling_recovers_gradients_that_underflow_without_it(method):
    """A negative control for the test above: where fp16 gradients do underflow, a run without loss scaling
    (scale 1) loses the direction, and the scaled run keeps fp32's."""
    def grads(dtype, **train):
        cfg = config(method, 1, batch_size=1, sefi={"attention_weight": 0.0}, **train)
        return _flat(token_gradients(problem(method, latent=128, dtype=dtype, out_gain=UNDERFLOW_GAIN), cfg)[1])

    ref = grads(torch.float32)
    scaled = grads(torch.float16, precision="fp16")
    unscaled = grads(torch.float16, precision="fp16", loss_scale=1.0)
    assert float(F.cosine_similarity(ref, scaled, dim=0)) > 0.99
    lost = float((unscaled == 0).float().mean())
    assert float(F.cosine_similarity(ref, unscaled, dim=0)) < 0.9 or lost > 0.5, lost


@pytest.mark.parametrize("method", ["SeFi-IDE", "ID-EA"])
def test_gradient_checkpointing_gives_the_same_raw_gradients(method):
    """Recomputing the denoiser's cross-attention (with SeFi-IDE's hooks in it) and the text encoders' layers in
    the backward pass changes memory, not the gradients: the raw first-step gradients, and the per-term
    gradient norms of later steps, when the attention term is no longer zero."""
    cfg = config(method, 3, sefi={"attention_weight": 0.3})
    plain, ckpt = (token_gradients(problem(method, checkpointing=c), cfg)[1] for c in (False, True))
    assert plain.keys() == ckpt.keys() and _flat(plain).abs().sum() > 0
    for name, g in plain.items():
        assert torch.allclose(ckpt[name], g, rtol=1e-5, atol=1e-9), name
    runs = [train_identity(problem(method, checkpointing=c), cfg).history for c in (False, True)]
    for h0, h1 in zip(*runs, strict=True):
        for key in ("grad_norm", "grad_norm_denoise", "grad_norm_attention", "grad_norm_reg"):
            assert (h0[key] is None and h1[key] is None) or h1[key] == pytest.approx(h0[key], rel=1e-5), key


def test_fp16_step_whose_scaled_gradients_overflow_is_skipped_not_applied():
    prob = problem("SeFi-IDE", dtype=torch.float16)
    start = train_identity(prob, config("SeFi-IDE", 1, lr=1e-12, precision="fp16")).embedding
    run = train_identity(prob, config("SeFi-IDE", 1, precision="fp16", loss_scale=2.0 ** 40))
    (first,) = run.history
    assert first["skipped"] and first["loss_scale"] == 2.0 ** 40
    assert run.state.scaler["scale"] == 2.0 ** 39  # backed off
    assert run.state.optimizer["state"] == {}  # AdamW never stepped
    for name in ("clip_l", "clip_g"):
        assert torch.equal(run.embedding.tokens[name], start.tokens[name])
    # the scale keeps halving until the gradients fit, then steps apply
    longer = train_identity(prob, config("SeFi-IDE", 40, precision="fp16", loss_scale=2.0 ** 40))
    skipped = [h["skipped"] for h in longer.history]
    assert skipped[0] and not skipped[-1] and skipped.index(False) < 35
    assert not torch.equal(longer.embedding.tokens["clip_l"], start.tokens["clip_l"])


def test_fp16_run_resumes_with_its_loss_scale(tmp_path):
    cfg = config("ID-EA", 4, precision="fp16", loss_scale=2.0 ** 30)
    full = train_identity(problem("ID-EA", dtype=torch.float16), cfg)

    class Stop(Exception):
        pass

    def stop_after_two(done, total, stats):
        if done == 2:
            raise Stop

    saved = {}
    with pytest.raises(Stop):
        train_identity(problem("ID-EA", dtype=torch.float16), cfg, progress=stop_after_two,
                       on_stop=lambda r: saved.setdefault("path", save_state(tmp_path / "s.safetensors", r.state)))
    resumed = train_identity(problem("ID-EA", dtype=torch.float16), cfg, resume=load_state(saved["path"]))
    assert resumed.losses == full.losses
    assert [h["loss_scale"] for h in resumed.history] == [h["loss_scale"] for h in full.history]
    assert torch.equal(resumed.embedding.tokens["clip_g"], full.embedding.tokens["clip_g"])


# ------------------------------------------------------------------ SeFi-IDE's attention loss

def test_sefi_attention_term_and_denoising_term_are_reported_separately_and_both_count():
    run = train_identity(problem("SeFi-IDE"), config("SeFi-IDE", 12))
    for h in run.history:
        assert h["loss"] == pytest.approx(h["denoising"] + h["attention"], rel=1e-6)
    assert run.history[0]["attention"] == pytest.approx(0.0, abs=1e-9)  # the tokens start as the class word
    assert run.history[-1]["attention"] > 0


def test_sefi_default_attention_weight_changes_what_is_learned():
    """At the paper's lambda (0.003) the attention term must steer the tokens; under the old softmax-probability
    form it was ~1e-7 of the loss and the tokens were the same as with lambda = 0."""
    assert SeFiConfig().attention_weight == 0.003
    start = train_identity(problem("SeFi-IDE"), config("SeFi-IDE", 1, lr=1e-12)).embedding.tokens["clip_g"]
    runs = {lam: train_identity(problem("SeFi-IDE"), config("SeFi-IDE", 40, sefi={"attention_weight": lam}))
            for lam in (0.003, 0.0)}
    with_loss, without = (runs[lam].embedding.tokens["clip_g"] for lam in (0.003, 0.0))
    assert (with_loss - without).norm() > 0.03 * (without - start).norm()
    assert all(h["attention"] is None for h in runs[0.0].history)
    # the weighted attention term is within two orders of magnitude of the denoising term
    late = runs[0.003].history[-10:]
    ratio = sum(h["attention"] for h in late) / sum(h["denoising"] for h in late)
    assert 1e-2 < ratio < 1e2, ratio


def test_a_wrong_attention_layer_string_is_an_error_not_a_silent_no_op():
    cfg = config("SeFi-IDE", 2, sefi={"attention_blocks": (("input", 1),)})  # SD1.5 numbering
    with pytest.raises(IdentityError, match="attention_layers"):
        train_identity(problem("SeFi-IDE"), cfg)


def test_all_tokens_alignment_covers_exactly_the_columns_the_identity_changes():
    """CLIP's encoders are causal: the identity changes its own columns and every later one (end token and
    padding), never the earlier ones. 'all' aligns exactly those; 'identity' only its own."""
    text, tok = text_encoder(), WordTokenizer()
    prompt = tokenize_prompt(tok, "a photo of the face of {id}", 2)
    reference = tokenize_prompt(tok, "a photo of the face of {id}", 1, word="person")
    rows = {"clip_l": torch.randn(2, 16), "clip_g": torch.randn(2, 24)}
    ours, _ = text.encode(prompt, rows)
    theirs, _ = text.encode(reference)
    first = prompt.slots[0]
    assert torch.equal(ours[0, :first], theirs[0, :first])
    plan = alignment_plan(prompt.slots, reference.slots, 77, "all")
    assert plan.train[:2] == prompt.slots and plan.reference[:2] == (reference.slots,) * 2
    assert plan.train[2:] == tuple(range(prompt.slots[-1] + 1, 77))
    assert plan.reference[2:] == tuple((c,) for c in range(reference.slots[-1] + 1, 76))
    assert min(plan.train) == first  # nothing before the identity
    assert alignment_plan(prompt.slots, reference.slots, 77, "identity").train == prompt.slots
    assert SeFiConfig().attention_tokens == "all"


def _sefi_keys(perturbed: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, AlignmentPlan]:
    """Queries, reference keys and training keys for SeFi's prompt, where the training keys differ from the
    reference's by the same vector on the identity's column only, or on every aligned column ("all")."""
    tok = WordTokenizer()
    prompt = tokenize_prompt(tok, SeFiConfig().templates[0], 1)
    reference = tokenize_prompt(tok, SeFiConfig().templates[0], 1, word="person")
    plan = alignment_plan(prompt.slots, reference.slots, 77, "all")
    g = torch.Generator().manual_seed(0)
    q, k_ref = torch.randn(1, 16, 8, generator=g), torch.randn(1, 77, 8, generator=g)
    shift = torch.randn(8, generator=g)
    k_train = k_ref.clone()
    columns = list(plan.train) if perturbed == "all" else list(prompt.slots)
    k_train[0, columns] += shift  # the same logit error on every perturbed column
    return q, k_ref, k_train, plan


def test_all_tokens_alignment_gives_the_identity_columns_at_least_half_of_the_term():
    """SeFi's prompt ends with the identity, so "all" aligns it and ~70 end/padding columns; the identity must
    not be drowned by them."""
    q, k_ref, k_all, plan = _sefi_keys("all")
    _, _, k_identity, _ = _sefi_keys("identity")
    assert len(plan.train) > 60
    whole = float(alignment_term(q, k_all, k_ref, 2, [plan]))
    identity = float(alignment_term(q, k_identity, k_ref, 2, [plan]))
    assert whole > 0 and identity / whole >= 0.5 - 1e-6


def test_attention_term_moves_the_identity_keys_not_the_queries():
    """The queries belong to the frozen image path: the loss must not fall by moving them."""
    q, k_ref, k_train, plan = _sefi_keys("all")
    q.requires_grad_(True)
    k_train.requires_grad_(True)
    alignment_term(q, k_train, k_ref, 2, [plan]).backward()
    assert q.grad is None or not q.grad.any()
    assert k_train.grad[0, list(plan.train)].abs().sum() > 0


def test_step_stats_carry_each_loss_terms_gradient_norm_on_the_tokens():
    sefi = train_identity(problem("SeFi-IDE"), config("SeFi-IDE", 3)).history[-1]
    assert sefi["grad_norm_reg"] is None
    for key in ("grad_norm_denoise", "grad_norm_attention"):
        assert 0 < sefi[key] < float("inf"), key
    assert 0 < sefi["attention_identity_share"] <= 1
    idea = train_identity(problem("ID-EA"), config("ID-EA", 3, idea={"reg_weight": 1e-3})).history[-1]
    assert idea["grad_norm_attention"] is None and idea["attention_identity_share"] is None
    for key in ("grad_norm_denoise", "grad_norm_reg"):
        assert 0 < idea[key] < float("inf"), key
    # with the attention loss off, the denoising loss's gradient is the whole gradient (SeFi trains only tokens)
    plain = train_identity(problem("SeFi-IDE"), config("SeFi-IDE", 2, sefi={"attention_weight": 0.0})).history
    for h in plain:
        assert h["grad_norm_attention"] is None
        assert h["grad_norm_denoise"] == pytest.approx(h["grad_norm"], rel=1e-5)
    assert "|grad| denoise" in StepStats(**sefi).text()
    # a history saved before these fields existed still reads back
    old = {k: v for k, v in sefi.items() if not k.startswith("grad_norm_") and k != "attention_identity_share"}
    assert StepStats(**old).text().startswith("loss")


def test_training_draws_each_sample_inside_its_stage():
    stages = torch.arange(5).repeat_interleave(200)
    t = stage_timesteps(stages, torch.rand(1000), 5)
    assert torch.equal(stage_index(t, 5), stages)


def test_sefi_embedding_has_per_stage_key_and_value_tokens_that_differ():
    emb = train_identity(problem("SeFi-IDE"), config("SeFi-IDE", 6)).embedding
    assert (emb.stages, emb.parts, emb.num_tokens) == (3, 2, 1)
    assert emb.tokens["clip_l"].shape == (3, 2, 1, 16) and emb.tokens["clip_g"].shape == (3, 2, 1, 24)
    assert not torch.equal(emb.tokens["clip_l"][:, 0], emb.tokens["clip_l"][:, 1])  # K and V differ


# ------------------------------------------------------------------ ID-EA as its reference code

def test_idea_defaults_follow_the_reference_code():
    assert METHOD_DEFAULTS["ID-EA"] == {"lr": 0.012, "batch_size": 8, "num_tokens": 2}
    assert method_default("ID-EA", "lr", 0) == 0.012 and method_default("ID-EA", "lr", 0.001) == 0.001
    assert len(IDEA_TEMPLATES) == 81 == len(set(IDEA_TEMPLATES))
    assert all(t.count("{id}") == 1 and "{class}" in t for t in IDEA_TEMPLATES)
    cfg = MethodConfig("ID-EA", idea=IDEAConfig(class_word="woman"))
    assert all("{id} woman" in t for t in cfg.templates)
    assert IDEAConfig().anchor_names == "celebrities" and len(anchor_words("celebrities")) >= 100
    assert anchor_words(" Tom Hanks , Meryl Streep ") == ["Tom Hanks", "Meryl Streep"]


def test_every_idea_template_puts_the_identity_in_the_references_face_filler():
    """The reference code's captions say "face of <tokens> person" where the name would be."""
    for word in ("person", "woman"):
        templates = MethodConfig("ID-EA", idea=IDEAConfig(class_word=word)).templates
        missing = [t for t in templates if f"face of {{id}} {word}" not in t]
        assert not missing, missing[:3]


def test_idea_enhancer_reads_the_fixed_anchor_not_the_learnable_tokens():
    prob = problem("ID-EA")
    params = train_identity(prob, config("ID-EA", 3)).state.params
    module = IDEAParams({n: params[f"anchor_{n}"] for n in ("clip_l", "clip_g")}, prob.face, 2, 0.4, 2e-5, False)
    module.load_state_dict(params)
    module.adapter.gamma.data.fill_(1.0)  # an adapter that does something
    context = torch.randn(1, 77, 40)
    before = module.adapt_context(context)
    with torch.no_grad():
        for t in module.tokens_.values():
            t.add_(torch.randn_like(t))
    assert torch.equal(module.adapt_context(context), before)
    module.adapt_context(context).sum().backward()
    assert all(t.grad is None for t in module.tokens_.values())


def test_idea_adapter_fades_out_so_the_tokens_alone_carry_the_identity_at_the_end():
    prob = problem("ID-EA")
    module = IDEAParams({"clip_l": torch.randn(2, 16), "clip_g": torch.randn(2, 24)}, prob.face, 2, 0.4, 2e-5,
                        False, fade=0.2)
    assert [module.adapter_strength(p) for p in (0.0, 0.5, 0.8, 0.9, 1.0)] == pytest.approx([1, 1, 1, 0.5, 0])
    module.adapter.gamma.data.fill_(1.0)
    context = torch.randn(1, 77, 40)
    assert torch.equal(module.adapt_context(context, progress=1.0), context)
    assert not torch.equal(module.adapt_context(context, progress=0.5), context)


def test_idea_anchor_averages_each_token_column_over_the_names_that_have_it():
    prob = problem("ID-EA")
    run = train_identity(prob, config("ID-EA", 1, lr=1e-12, idea={"anchor_names": "ann lee, bo"}))
    words = {w: prob.text.word_rows(tokenize_prompt(prob.tokenize, "{id}", 1, word=w)) for w in ("ann lee", "bo")}
    expected = torch.stack([(words["ann lee"]["clip_l"][0] + words["bo"]["clip_l"][0]) / 2,
                            words["ann lee"]["clip_l"][1]])  # "bo" has no second token: not averaged in
    rows = {"clip_l": expected, "clip_g": torch.stack([
        (words["ann lee"]["clip_g"][0] + words["bo"]["clip_g"][0]) / 2, words["ann lee"]["clip_g"][1]])}
    prompt = tokenize_prompt(prob.tokenize, "{id}", 2)
    slots = list(prompt.slots)
    with torch.no_grad():
        context, _ = prob.text.encode(prompt, rows)
        final = {}
        for name, stack in prob.text.stacks().items():  # the last layer's output after the final LayerNorm
            embeds = stack.token_embeddings(torch.tensor(prompt.ids[name])).clone()
            embeds[slots] = rows[name]
            last, _ = CLIPStack(stack.module, hidden_layer=-1).forward(embeds[None], [prompt.eos], False)
            final[name] = stack.module.text_model.final_layer_norm(last)[0, slots]
    # Cross Initialization reads what the reference code reads: each encoder's final-LayerNorm output
    for name in ("clip_l", "clip_g"):
        assert torch.allclose(run.state.params[f"anchor_{name}"], final[name], atol=1e-5), name
    # ... not SDXL's penultimate-layer context
    assert not torch.allclose(run.state.params["anchor_clip_l"], context[0, slots, :16], atol=1e-2)


def test_idea_exports_two_plain_tokens_and_needs_a_face():
    emb = train_identity(problem("ID-EA"), config("ID-EA", 2)).embedding
    assert emb.is_plain and emb.num_tokens == 2
    prob = problem("ID-EA")
    prob.face = None
    with pytest.raises(IdentityError, match="recognition"):
        train_identity(prob, config("ID-EA", 1))


# ------------------------------------------------------------------ batches, sizes, files, resume

@pytest.mark.parametrize("method", ["SeFi-IDE", "ID-EA"])
def test_gradient_accumulation_learns_what_one_big_batch_learns(method):
    whole = train_identity(problem(method), config(method, 3, batch_size=4))
    passes = train_identity(problem(method), config(method, 3, batch_size=4, micro_batch=1))
    assert passes.losses == pytest.approx(whole.losses, rel=1e-4)
    for name in ("clip_l", "clip_g"):
        assert torch.allclose(passes.embedding.tokens[name], whole.embedding.tokens[name], atol=1e-5)


def test_each_photo_reaches_the_model_with_its_own_original_size():
    prob = problem("ID-EA", photos=3)
    prob.original_sizes = torch.tensor([300, 700, 1500])
    train_identity(prob, config("ID-EA", 2, batch_size=4))
    seen = {int(s) for sizes in prob.denoiser.sizes for s in sizes}
    assert seen <= {300, 700, 1500} and len(seen) >= 2


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

    def progress(done, total, stats):
        if done == 2:
            raise Stop

    def on_stop(result):
        saved["path"] = save_state(tmp_path / "run.state.safetensors", result.state)
        saved["result"] = result

    with pytest.raises(Stop):
        train_identity(problem(method), config(method, 5), progress=progress, on_stop=on_stop)
    assert saved["result"].interrupted and saved["result"].state.step == 2
    state = load_state(saved["path"])
    assert state.history == saved["result"].state.history
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


def test_a_state_file_of_the_previous_format_is_refused_with_what_to_do(tmp_path):
    state = train_identity(problem("ID-EA"), config("ID-EA", 1)).state
    path = save_state(tmp_path / "old.safetensors", state)
    from safetensors import safe_open

    from faceclip_core.identity.files import STATE_FORMAT

    with safe_open(str(path), framework="pt") as f:
        meta = dict(f.metadata())
    meta["format"] = STATE_FORMAT.replace("/2", "/1")
    save_file(load_file(str(path)), str(path), metadata=meta)
    with pytest.raises(IdentityFileError, match="older version.*resume off"):
        load_state(path)


def test_not_a_safetensors_file_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not safetensors")
    with pytest.raises(IdentityFileError, match="not a readable safetensors"):
        load_embedding(bad)
    with pytest.raises(IdentityFileError, match="does not exist"):
        load_embedding(tmp_path / "missing.safetensors")


def test_embeddings_that_would_give_black_or_broken_images_are_refused_by_name(tmp_path):
    good = {"clip_l": torch.randn(2, 768), "clip_g": torch.randn(2, 1280)}
    save_file(good, str(tmp_path / "good.safetensors"))
    assert load_embedding(tmp_path / "good.safetensors").num_tokens == 2
    nan = dict(good, clip_g=good["clip_g"].clone())
    nan["clip_g"][1, 5] = float("nan")
    save_file(nan, str(tmp_path / "diverged.safetensors"))
    with pytest.raises(IdentityFileError, match=r"diverged\.safetensors: its clip_g tokens hold NaN.*Train it again"):
        load_embedding(tmp_path / "diverged.safetensors")
    save_file(dict(good, clip_l=torch.full((2, 768), float("inf"))), str(tmp_path / "inf.safetensors"))
    with pytest.raises(IdentityFileError, match="inf.safetensors: its clip_l tokens hold NaN or infinite"):
        load_embedding(tmp_path / "inf.safetensors")
    save_file(dict(good, clip_g=torch.randn(3, 1280)), str(tmp_path / "mixed.safetensors"))
    with pytest.raises(IdentityFileError, match=r"mixed\.safetensors: its clip_l and clip_g .* \(2 and 3\).*choose "
                                                r"another embedding"):
        load_embedding(tmp_path / "mixed.safetensors")


def test_prompts_need_one_identity_slot_and_find_the_reference_word():
    tok = WordTokenizer()
    with pytest.raises(IdentityError, match="exactly once"):
        tokenize_prompt(tok, "a photo of a person", 1)
    p = tokenize_prompt(tok, "a photo of {id} smiling", 3)
    assert p.slots == (4, 5, 6) and p.eos == 8
    assert all(p.ids[n][i] == 0 for n in p.ids for i in p.slots)
    ref = tokenize_prompt(tok, "a photo of {id} smiling", 1, word="person")
    assert ref.slots == (4,)


def test_config_round_trips_through_its_dict():
    cfg = config("SeFi-IDE", 3, precision="fp16", micro_batch=1, sefi={"attention_tokens": "identity"})
    assert MethodConfig.from_dict(cfg.to_dict()) == cfg
    assert dataclasses.replace(cfg.train, batch_size=8, micro_batch=3).pass_size == 3
