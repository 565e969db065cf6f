"""One optimisation loop for both methods; what differs (parameterisation, initialisation, losses) plugs in.

The loop sees the diffusion model only through ``Denoiser`` (three plain callables) and the text encoders
only through ``TextEncoder.encode(prompt, rows)``; the ComfyUI nodes adapt MODEL and CLIP into these.
Every random draw comes from one ``torch.Generator`` whose state is saved with the run, so an interrupted
and resumed run repeats an uninterrupted one exactly.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import torch

from .attention import TrainingAttention
from .config import MethodConfig
from .embedding import IDEmbedding
from .errors import IdentityError
from .files import TrainState
from .losses import attention_alignment_loss, denoising_loss
from .params import IDEAParams, Parameterisation, StagedTokens
from .prompts import PromptTokens, Tokenizer, tokenize_prompt
from .text import ENCODERS

logger = logging.getLogger(__name__)

# (steps done, total steps, loss of the last step); may raise to stop (e.g. the user's interrupt)
Progress = Callable[[int, int, float], None]


class Denoiser(Protocol):
    def sigma_of(self, timesteps: torch.Tensor) -> torch.Tensor:
        """Discrete-time timesteps [B] (0 = clean) -> the model's sigmas [B]."""

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """Noisy latents at ``sigma``."""

    def predict_noise(self, x_t: torch.Tensor, sigma: torch.Tensor, context: torch.Tensor,
                      pooled: torch.Tensor) -> torch.Tensor:
        """The model's noise prediction (epsilon), differentiable in ``context`` and ``pooled``."""


class TextEncoder(Protocol):
    def encode(self, prompt: PromptTokens, rows: Mapping[str, torch.Tensor] | None = None
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """[B, 77, C] context and [B, P] pooled, with ``rows`` in the prompt's identity slots."""

    def word_rows(self, prompt: PromptTokens) -> dict[str, torch.Tensor]:
        """Input token embeddings at ``prompt.slots``."""


@dataclass
class TrainingProblem:
    """Everything fixed during a run. ``latents``: the photos' VAE latents in the model's space [M, C, h, w]
    (mirror images are added by the loop when ``flip``); ``face``: mean face-recognition embedding (ID-EA)."""

    latents: torch.Tensor
    text: TextEncoder
    denoiser: Denoiser
    tokenize: Tokenizer
    attention: TrainingAttention | None = None
    face: torch.Tensor | None = None
    device: torch.device | str = "cpu"


@dataclass
class TrainResult:
    embedding: IDEmbedding
    state: TrainState
    losses: list[float] = field(default_factory=list)
    interrupted: bool = False


@dataclass
class _Prepared:
    params: Parameterisation
    prompts: list[PromptTokens]
    references: list[PromptTokens]
    reference_contexts: list[torch.Tensor]


def _anchor_rows(problem: TrainingProblem, names: str, n: int) -> dict[str, torch.Tensor]:
    """Mean over the anchor names of each name's first n token embeddings (shorter names repeat their last)."""
    words = [w.strip() for w in names.split(",") if w.strip()]
    if not words:
        raise IdentityError("anchor_names is empty: give at least one word or name, e.g. 'person'")
    per_name = []
    for word in words:
        prompt = tokenize_prompt(problem.tokenize, "{id}", 1, word=word)
        rows = problem.text.word_rows(prompt)
        per_name.append({k: torch.cat([v, v[-1:].expand(max(n - v.shape[0], 0), -1)])[:n] for k, v in rows.items()})
    return {k: torch.stack([p[k] for p in per_name]).mean(0) for k in ENCODERS}


def _cross_init(problem: TrainingProblem, rows: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Cross Initialization: the text encoder's own output for the anchor rows (BOS, rows, EOS)."""
    n = next(iter(rows.values())).shape[0]
    prompt = tokenize_prompt(problem.tokenize, "{id}", n)
    with torch.no_grad():
        context, _ = problem.text.encode(prompt, rows)
    out, start = {}, 0
    for name in ENCODERS:
        width = rows[name].shape[-1]
        out[name] = context[0, list(prompt.slots), start:start + width].float()
        start += width
    return out


def prepare(problem: TrainingProblem, config: MethodConfig, seed: int) -> _Prepared:
    """Prompts, reference encodings and the initialised parameterisation for ``config.method``."""
    if config.method == "SeFi-IDE":
        c = config.sefi
        prompts = [tokenize_prompt(problem.tokenize, t, c.num_tokens) for t in c.templates]
        refs = [tokenize_prompt(problem.tokenize, t, 1, word=c.class_word) for t in c.templates]
        word = problem.text.word_rows(refs[0])
        init = {k: v.mean(0, keepdim=True).expand(c.num_tokens, -1) for k, v in word.items()}
        params: Parameterisation = StagedTokens(init, c.stages, 2 if c.kv_split else 1)
        with torch.no_grad():
            ref_ctx = [problem.text.encode(r)[0].detach() for r in refs] if c.attention_weight > 0 else []
        return _Prepared(params.to(problem.device), prompts, refs, ref_ctx)
    c = config.idea
    if problem.face is None:
        raise IdentityError("ID-EA needs face-recognition embeddings of the photos. Load a face-detector pack "
                            "that has a recognition model (e.g. antelopev2 with glintr100.onnx) in Prepare Faces.")
    prompts = [tokenize_prompt(problem.tokenize, t, c.num_tokens) for t in c.templates]
    anchor = _cross_init(problem, _anchor_rows(problem, c.anchor_names, c.num_tokens))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # the enhancer/adapter init depends on the seed only
        params = IDEAParams(anchor, problem.face, c.adapter_heads, c.adapter_scale, c.reg_eps, c.train_enhancer)
    return _Prepared(params.to(problem.device), prompts, [], [])


def _optimizer(params: Parameterisation, config: MethodConfig) -> torch.optim.Optimizer:
    t = config.train
    return torch.optim.AdamW(params.trainable(), lr=t.lr, betas=(0.9, 0.999), eps=t.adam_eps,
                             weight_decay=t.weight_decay)


def train_identity(problem: TrainingProblem, config: MethodConfig, resume: TrainState | None = None,
                   progress: Progress | None = None, on_stop: Callable[[TrainResult], None] | None = None
                   ) -> TrainResult:
    """Run (or continue) the optimisation up to ``config.train.steps``.

    ``progress`` is called after every step. If anything raises (the user's interrupt, from ``progress`` or
    from inside the model), ``on_stop`` receives the result after the last completed step (nothing learned is
    lost) and the exception propagates.
    """
    t = config.train
    latents = problem.latents.float()
    if latents.dim() != 4 or latents.shape[0] < 1:
        raise IdentityError(f"expected latents [M, C, h, w] of at least one photo, got {tuple(latents.shape)}")
    if t.flip:
        latents = torch.cat([latents, latents.flip(-1)])
    prep = prepare(problem, config, t.seed)
    params = prep.params
    optimizer = _optimizer(params, config)
    generator = torch.Generator().manual_seed(t.seed)
    step, losses = 0, []
    if resume is not None:
        if resume.config.get("method") != config.method:
            raise IdentityError(f"the saved state is a {resume.config.get('method')} run, not {config.method}; "
                                "turn resume off or use the same method")
        params.load_state_dict({k: v.to(problem.device) for k, v in resume.params.items()})
        optimizer.load_state_dict(resume.optimizer)
        generator.set_state(resume.rng)
        step, losses = resume.step, list(resume.losses)
        logger.info("resuming %s at step %d of %d", config.method, step, t.steps)

    sefi = config.method == "SeFi-IDE"
    stages = config.sefi.stages if sefi else 1
    lam = config.sefi.attention_weight if sefi else 0.0
    reg_weight = 0.0 if sefi else config.idea.reg_weight
    params.train()

    # the generator's state after the last completed step: an interrupt inside a step (ComfyUI checks for one
    # in every layer) discards that step's draws, so the resumed run draws them again
    rng_done = generator.get_state()

    def snapshot() -> TrainResult:
        state = TrainState(step=step, params={k: v.detach().cpu() for k, v in params.state_dict().items()},
                           optimizer=optimizer.state_dict(), rng=rng_done.clone(), config=config.to_dict(),
                           losses=list(losses))
        emb = IDEmbedding(config.method, {k: v.detach() for k, v in params.tokens().items()}, t.num_train_timesteps,
                          {"class_word": config.sefi.class_word if sefi else config.idea.class_word,
                           "steps": str(step)}).detach()
        return TrainResult(emb, state, list(losses), interrupted=step < t.steps)

    try:
        while step < t.steps:
            loss = _step(problem, config, prep, params, optimizer, generator, latents, stages, lam, reg_weight)
            step += 1
            rng_done = generator.get_state()
            losses.append(loss)
            if progress is not None:
                progress(step, t.steps, loss)
    except BaseException:
        if on_stop is not None and step > (resume.step if resume is not None else 0):
            on_stop(snapshot())  # nothing learned is lost: the caller saves it, then the error goes on
        raise
    return snapshot()


def _step(problem: TrainingProblem, config: MethodConfig, prep: _Prepared, params: Parameterisation,
          optimizer: torch.optim.Optimizer, generator: torch.Generator, latents: torch.Tensor, stages: int,
          lam: float, reg_weight: float) -> float:
    """One optimisation step; returns its loss. Parameters change only at its very end (optimizer.step)."""
    t = config.train
    attention = problem.attention
    # all draws first, from the run's generator, in a fixed order
    stage = int(torch.randint(stages, (1,), generator=generator))
    j = int(torch.randint(len(prep.prompts), (1,), generator=generator))
    idx = torch.randint(latents.shape[0], (t.batch_size,), generator=generator)
    span = t.num_train_timesteps / stages
    timesteps = (stage * span + torch.rand(t.batch_size, generator=generator) * span).floor().clamp_max(
        t.num_train_timesteps - 1)
    x0 = latents[idx]
    noise = torch.randn(x0.shape, generator=generator)
    x0, noise = x0.to(problem.device), noise.to(problem.device)
    sigma = problem.denoiser.sigma_of(timesteps.to(problem.device))

    tokens = params.tokens()
    context, pooled = problem.text.encode(prep.prompts[j], {n: v[stage, 0] for n, v in tokens.items()})
    value = None
    if tokens["clip_l"].shape[1] == 2:
        value, _ = problem.text.encode(prep.prompts[j], {n: v[stage, 1] for n, v in tokens.items()})
    context = params.adapt_context(context)
    if attention is not None:
        reference = prep.reference_contexts[j] if lam > 0 and prep.reference_contexts else None
        attention.arm(value, reference, prep.prompts[j].slots, prep.references[j].slots if prep.references else ())
    elif value is not None:
        raise IdentityError("a key/value split needs the model's attention hooks (TrainingProblem.attention)")
    # The hooks stay armed through backward: with gradient checkpointing the UNet's blocks run again there and
    # must see the same value context and reference as in the forward pass.
    try:
        x_t = problem.denoiser.add_noise(x0, noise, sigma)
        predicted = problem.denoiser.predict_noise(x_t, sigma, context.expand(x0.shape[0], -1, -1),
                                                   pooled.expand(x0.shape[0], -1))
        terms = list(attention.terms) if attention is not None else []
        loss = denoising_loss(predicted, noise)
        attn = attention_alignment_loss(terms) if lam > 0 else None
        if attn is not None:
            loss = loss + lam * attn
        if reg_weight > 0:
            loss = loss + reg_weight * params.regulariser()
        if not torch.isfinite(loss):
            raise IdentityError(f"the loss became {float(loss)}; lower the learning rate")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
    finally:
        if attention is not None:
            attention.disarm()
    if t.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(params.trainable(), t.grad_clip)
    optimizer.step()
    return float(loss.detach())


def mean_face(embeddings: Sequence | torch.Tensor | None, has_face: Sequence[bool] | None = None
              ) -> torch.Tensor | None:
    """Mean of the L2-normalised face embeddings of the photos that have a face, renormalised."""
    if embeddings is None:
        return None
    e = torch.as_tensor(embeddings, dtype=torch.float32)
    if has_face is not None:
        e = e[torch.as_tensor(has_face, dtype=torch.bool)]
    if e.shape[0] == 0 or not torch.isfinite(e).all():
        return None
    m = e.mean(0)
    return m / m.norm().clamp_min(1e-8)
