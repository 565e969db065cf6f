"""One optimisation loop for both methods; what differs (parameterisation, initialisation, losses) plugs in.

The loop sees the diffusion model only through ``Denoiser`` (three plain callables) and the text encoders
only through ``TextEncoder.encode(prompt, rows)``; the ComfyUI nodes adapt MODEL and CLIP into these.
Every random draw comes from one ``torch.Generator`` whose state is saved with the run, so an interrupted
and resumed run repeats an uninterrupted one exactly.

Precision: the tokens, the optimizer state and the loss are float32 whatever the UNet computes in. With an fp16
UNet the per-element gradient of a 1024 px denoising loss (~1e-5) is below fp16's normal range, so the loss is
scaled before the backward pass and the gradients unscaled after it (torch's GradScaler, as ComfyUI's own LoRA
trainer does); a step whose scaled gradients overflow is skipped and the scale halves.
"""
from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from .attention import GROUPS, AlignmentPlan, TrainingAttention, alignment_plan
from .config import ID_SLOT, MethodConfig
from .embedding import IDEmbedding
from .errors import IdentityError
from .files import TrainState
from .losses import attention_alignment_parts, denoising_loss
from .params import IDEAParams, Parameterisation, StagedTokens
from .prompts import PromptTokens, Tokenizer, tokenize_prompt
from .routing import stage_timesteps
from .text import ENCODERS

logger = logging.getLogger(__name__)

CELEBRITY_NAMES = Path(__file__).resolve().parents[1] / "data" / "celebrity_names.txt"


@dataclass(frozen=True)
class StepStats:
    """What one optimisation step did. ``attention`` and ``regulariser`` are the weighted terms as they enter the
    loss (lambda * L_attn, reg_weight * L_reg); ``grad_norm`` is the gradient norm of everything trained, after
    unscaling; ``skipped``: the step's (scaled fp16) gradients overflowed, so nothing was updated.

    ``grad_norm_denoise``, ``grad_norm_attention``, ``grad_norm_reg``: the norm of each weighted term's own
    gradient on the token parameters (unscaled; None where the term is off), to see which term steers the
    tokens. ``attention_identity_share``: the identity columns' share of the attention term (the rest is the
    later columns'). Every field after ``skipped`` has a default, so older states' histories still load."""

    step: int
    loss: float
    denoising: float
    attention: float | None = None
    regulariser: float | None = None
    grad_norm: float = 0.0
    loss_scale: float | None = None
    skipped: bool = False
    grad_norm_denoise: float | None = None
    grad_norm_attention: float | None = None
    grad_norm_reg: float | None = None
    attention_identity_share: float | None = None

    def text(self) -> str:
        parts = [f"loss {self.loss:.4f}", f"denoise {self.denoising:.4f}"]
        if self.attention is not None:
            share = "" if self.attention_identity_share is None else \
                f" (identity {self.attention_identity_share:.0%})"
            parts.append(f"attention {self.attention:.4f}{share}")
        if self.regulariser is not None:
            parts.append(f"anchor {self.regulariser:.5f}")
        norms = [f"{name} {value:.2g}" for name, value in (
            ("denoise", self.grad_norm_denoise), ("attention", self.grad_norm_attention),
            ("anchor", self.grad_norm_reg)) if value is not None]
        if norms:
            parts.append("|grad| " + ", ".join(norms))
        if self.loss_scale is not None:
            parts.append(f"loss scale {self.loss_scale:g}")
        if self.skipped:
            parts.append("skipped (fp16 overflow)")
        return "  ".join(parts)


# called after every step; may raise to stop (e.g. the user's interrupt)
Progress = Callable[[int, int, StepStats], None]


class Denoiser(Protocol):
    def sigma_of(self, timesteps: torch.Tensor) -> torch.Tensor:
        """Discrete-time timesteps [B] (0 = clean) -> the model's sigmas [B]."""

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """Noisy latents at ``sigma``."""

    def predict_noise(self, x_t: torch.Tensor, sigma: torch.Tensor, context: torch.Tensor, pooled: torch.Tensor,
                      original_size: torch.Tensor | None = None) -> torch.Tensor:
        """The model's noise prediction (epsilon), differentiable in ``context`` and ``pooled``;
        ``original_size`` [B]: each photo's side in source pixels (SDXL's size conditioning)."""


class TextEncoder(Protocol):
    def encode(self, prompt: PromptTokens, rows: Mapping[str, torch.Tensor] | None = None
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """[B, L, C] context and [B, P] pooled, with ``rows`` in the prompt's identity slots."""

    def encode_batch(self, prompts: Sequence[PromptTokens], rows: Sequence[Mapping[str, torch.Tensor]]
                     ) -> tuple[torch.Tensor, torch.Tensor]:
        """Prompts of one length, each with its rows, in one call: [len(prompts), L, C] and [len(prompts), P]."""

    def word_rows(self, prompt: PromptTokens) -> dict[str, torch.Tensor]:
        """Input token embeddings at ``prompt.slots``."""

    def encode_final(self, prompt: PromptTokens, rows: Mapping[str, torch.Tensor] | None = None
                     ) -> dict[str, torch.Tensor]:
        """Per encoder, the final-LayerNorm output [B, L, D] with ``rows`` in the prompt's identity slots."""


@dataclass
class TrainingProblem:
    """Everything fixed during a run. ``latents``: the training images' VAE latents in the model's space
    [M, C, h, w] (mirror images included when wanted); ``original_sizes`` [M]: each image's side in source
    pixels; ``face``: mean face-recognition embedding (ID-EA)."""

    latents: torch.Tensor
    text: TextEncoder
    denoiser: Denoiser
    tokenize: Tokenizer
    attention: TrainingAttention | None = None
    face: np.ndarray | torch.Tensor | None = None
    device: torch.device | str = "cpu"
    original_sizes: torch.Tensor | None = None


@dataclass
class TrainResult:
    embedding: IDEmbedding
    state: TrainState
    losses: list[float] = field(default_factory=list)
    interrupted: bool = False

    @property
    def history(self) -> list[dict]:
        return self.state.history


@dataclass
class _Prepared:
    params: Parameterisation
    prompts: list[PromptTokens]
    reference_contexts: list[torch.Tensor]  # per template [1, L, C] (SeFi-IDE with lambda > 0)
    plans: list[AlignmentPlan]  # per template


def read_name_list(path: Path = CELEBRITY_NAMES) -> list[str]:
    lines = (ln.split("#", 1)[0].strip() for ln in path.read_text(encoding="utf-8").splitlines())
    return [ln for ln in lines if ln]


def anchor_words(names: str) -> list[str]:
    """``names``: "celebrities" (the shipped list) or comma-separated words or names."""
    if names.strip().lower() == "celebrities":
        return read_name_list()
    words = [w.strip() for w in names.split(",") if w.strip()]
    if not words:
        raise IdentityError("anchor_names is empty: give 'celebrities' or comma-separated names, e.g. "
                            "'Tom Hanks, Meryl Streep'")
    return words


def _anchor_rows(problem: TrainingProblem, names: str, n: int) -> dict[str, torch.Tensor]:
    """Cross Initialization's anchor: column i is the mean of the i-th token embedding over the names that have
    an i-th token; a column no name reaches repeats the last one."""
    per_name = [problem.text.word_rows(tokenize_prompt(problem.tokenize, ID_SLOT, 1, word=w))
                for w in anchor_words(names)]
    out = {}
    for enc in ENCODERS:
        columns = []
        for i in range(n):
            have = [rows[enc][i] for rows in per_name if rows[enc].shape[0] > i]
            columns.append(torch.stack(have).mean(0) if have else columns[-1])
        out[enc] = torch.stack(columns)
    return out


def _cross_init(problem: TrainingProblem, rows: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Cross Initialization: each text encoder's own output for the anchor rows (BOS, rows, EOS) at the rows'
    positions, after its final LayerNorm, as the reference code reads it (the text model's last hidden state),
    not SDXL's penultimate-layer context."""
    n = next(iter(rows.values())).shape[0]
    prompt = tokenize_prompt(problem.tokenize, ID_SLOT, n)
    with torch.no_grad():
        final = problem.text.encode_final(prompt, rows)
    return {name: final[name][0, list(prompt.slots)].float() for name in ENCODERS}


def _on(params: Parameterisation, device: torch.device | str) -> Parameterisation:
    """``params`` on ``device``; left as they are when already there (fake tensors cannot be moved in place)."""
    device = torch.device(device)
    if all(t.device == device for t in params.state_dict().values()):
        return params
    return params.to(device)


def prepare(problem: TrainingProblem, config: MethodConfig, seed: int) -> _Prepared:
    """Prompts, reference encodings and the initialised parameterisation for ``config.method``."""
    prompts = [tokenize_prompt(problem.tokenize, t, config.num_tokens) for t in config.templates]
    if config.is_sefi:
        c = config.sefi
        if problem.attention is not None:  # the config names the probed blocks (the caller patched them)
            problem.attention.blocks = frozenset(c.attention_blocks)
        refs = [tokenize_prompt(problem.tokenize, t, 1, word=c.class_word) for t in config.templates]
        word = problem.text.word_rows(refs[0])
        init = {k: v.mean(0, keepdim=True).expand(c.num_tokens, -1) for k, v in word.items()}
        params: Parameterisation = StagedTokens(init, c.stages, 2 if c.kv_split else 1)
        plans = [alignment_plan(p.slots, r.slots, len(p.ids["clip_l"]), c.attention_tokens)
                 for p, r in zip(prompts, refs, strict=True)]
        with torch.no_grad():
            ref_ctx = [problem.text.encode(r)[0].detach() for r in refs] if c.attention_weight > 0 else []
        return _Prepared(_on(params, problem.device), prompts, ref_ctx, plans)
    c = config.idea
    if problem.face is None:
        raise IdentityError("ID-EA needs face-recognition embeddings of the photos. Load a face-detector pack "
                            "that has a recognition model (e.g. antelopev2 with glintr100.onnx) in Prepare Faces.")
    anchor = _cross_init(problem, _anchor_rows(problem, c.anchor_names, c.num_tokens))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # the enhancer/adapter init depends on the seed only
        face = torch.as_tensor(problem.face, dtype=torch.float32)
        params = IDEAParams(anchor, face, c.adapter_heads, c.adapter_scale, c.reg_eps, c.train_enhancer, c.adapter_fade)
    return _Prepared(_on(params, problem.device), prompts, [], [])


def _optimizer(params: Parameterisation, config: MethodConfig) -> torch.optim.Optimizer:
    t = config.train
    return torch.optim.AdamW(params.trainable(), lr=t.lr, betas=(0.9, 0.999), eps=t.adam_eps,
                             weight_decay=t.weight_decay)


def _scaler(problem: TrainingProblem, config: MethodConfig) -> torch.amp.GradScaler:
    device_type = torch.device(problem.device).type
    return torch.amp.GradScaler(device_type, init_scale=config.train.loss_scale, growth_interval=100,
                                enabled=config.train.precision == "fp16")


@dataclass(frozen=True)
class _Draws:
    """One step's random choices, per sample."""

    stages: torch.Tensor
    templates: torch.Tensor
    images: torch.Tensor
    timesteps: torch.Tensor
    noise: torch.Tensor


def draw_step(generator: torch.Generator, config: MethodConfig, prep: _Prepared, latents: torch.Tensor) -> _Draws:
    """All of a step's draws, in a fixed order, from the run's generator (so resume repeats them)."""
    b = config.train.batch_size
    stages = config.sefi.stages if config.is_sefi else 1
    stage = torch.randint(stages, (b,), generator=generator)
    template = torch.randint(len(prep.prompts), (b,), generator=generator)
    image = torch.randint(latents.shape[0], (b,), generator=generator)
    t = stage_timesteps(stage, torch.rand(b, generator=generator), stages, config.train.num_train_timesteps)
    noise = torch.randn((b, *latents.shape[1:]), generator=generator)
    return _Draws(stage, template, image, t, noise)


def _encode_rows(problem: TrainingProblem, prep: _Prepared, tokens: dict[str, torch.Tensor], templates: list[int],
                 stages: list[int], part: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per sample, its template encoded with its stage's tokens of side ``part``: [b, L, C] and [b, P]. The distinct
    (template, stage) pairs of the pass are encoded in one batched call through each text encoder."""
    pairs = list(dict.fromkeys(zip(templates, stages, strict=True)))
    context, pooled = problem.text.encode_batch([prep.prompts[j] for j, _ in pairs],
                                                [{n: v[s, part] for n, v in tokens.items()} for _, s in pairs])
    index = torch.tensor([pairs.index(pair) for pair in zip(templates, stages, strict=True)], device=context.device)
    return context.index_select(0, index), pooled.index_select(0, index)


@dataclass
class _Forward:
    """One micro-batch's forward. The UNet reads detached copies (``leaves``) of the text side's outputs
    (``text``: key context after the adapter, value context, pooled), and the attention alignment reads its own
    copy (``aligned``) of the key context: the UNet's backward stops at these copies, so the attention term's
    gradient on the context is known apart from the denoising loss's before the text side's backward runs once
    for both. ``parts``: the unweighted attention term per column group (attention.GROUPS), or None."""

    denoise: torch.Tensor
    parts: torch.Tensor | None
    text: list[torch.Tensor | None]
    leaves: list[torch.Tensor | None]
    aligned: torch.Tensor | None

    @property
    def attention(self) -> torch.Tensor | None:
        return None if self.parts is None else self.parts.sum()


def _leaf(t: torch.Tensor | None) -> torch.Tensor | None:
    return None if t is None else t.detach().requires_grad_(t.requires_grad)


def _pass(problem: TrainingProblem, config: MethodConfig, prep: _Prepared, params: Parameterisation,
          latents: torch.Tensor, draws: _Draws, rows: slice, progress: float) -> _Forward:
    """Forward of one micro-batch: its denoising loss and its (unweighted) attention term."""
    attention = problem.attention
    templates = draws.templates.tolist()[rows]
    stages = draws.stages.tolist()[rows]
    tokens = params.tokens()
    context, pooled = _encode_rows(problem, prep, tokens, templates, stages, 0)
    value = None
    if tokens["clip_l"].shape[1] == 2:
        value, _ = _encode_rows(problem, prep, tokens, templates, stages, 1)
    context = params.adapt_context(context, progress)
    text = [context, value, pooled]
    leaves = [_leaf(t) for t in text]
    lam = config.sefi.attention_weight if config.is_sefi else 0.0
    aligned = _leaf(context) if lam > 0 else None
    if attention is not None:
        reference = torch.cat([prep.reference_contexts[j] for j in templates]) if lam > 0 else None
        attention.arm(leaves[1], reference, [prep.plans[j] for j in templates] if prep.plans else (), aligned)
    elif value is not None or lam > 0:
        raise IdentityError("a key/value split or an attention loss needs the model's attention hooks "
                            "(TrainingProblem.attention)")
    idx = draws.images[rows]
    x0 = latents[idx].to(problem.device)
    noise = draws.noise[rows].to(problem.device)
    sigma = problem.denoiser.sigma_of(draws.timesteps[rows].to(problem.device))
    sizes = problem.original_sizes[idx].to(problem.device) if problem.original_sizes is not None else None
    x_t = problem.denoiser.add_noise(x0, noise, sigma)
    predicted = problem.denoiser.predict_noise(x_t, sigma, leaves[0], leaves[2], sizes)
    denoise = denoising_loss(predicted, noise)
    parts = None
    if lam > 0:
        parts = attention_alignment_parts(attention.terms)
        if parts is None:
            blocks = ", ".join(f"{b}:{i}" for b, i in config.sefi.attention_blocks)
            raise IdentityError(f"the attention loss is on (attention_weight {lam:g}) but none of the blocks "
                                f"'{blocks}' has a cross-attention layer in this model. SDXL's are input:4, "
                                "input:5, input:7, input:8, middle:0 and output:0 to output:5; fix "
                                "attention_layers, or set attention_weight to 0 to train without the loss.")
    return _Forward(denoise, parts, text, leaves, aligned)


def _token_grads(output: torch.Tensor, params: Parameterisation, grad: torch.Tensor | None = None
                 ) -> list[torch.Tensor]:
    """d output / d (token parameters), zeros where it does not reach; the graph is kept for the real backward."""
    found = torch.autograd.grad(output, params.token_parameters(), grad, retain_graph=True, allow_unused=True)
    return [torch.zeros_like(p) if g is None else g.detach().float()
            for p, g in zip(params.token_parameters(), found, strict=True)]


def _text_backward(fwd: _Forward, params: Parameterisation, term_grads: dict[str, list[torch.Tensor]]) -> None:
    """After the UNet's backward: the attention term's own gradient on the tokens (a second backward through the
    text side only), then one backward through the text side with every term's context gradient."""
    outputs, grads = [], []
    for out, leaf in zip(fwd.text, fwd.leaves, strict=True):
        if leaf is not None and leaf.grad is not None:
            outputs.append(out)
            grads.append(leaf.grad)
    if fwd.aligned is not None and fwd.aligned.grad is not None:
        _accumulate(term_grads, "attention", _token_grads(fwd.text[0], params, fwd.aligned.grad))
        if outputs and outputs[0] is fwd.text[0]:
            grads[0] = grads[0] + fwd.aligned.grad
        else:
            outputs.insert(0, fwd.text[0])
            grads.insert(0, fwd.aligned.grad)
    if outputs:
        torch.autograd.backward(outputs, grads)


def _accumulate(term_grads: dict[str, list[torch.Tensor]], name: str, grads: list[torch.Tensor]) -> None:
    have = term_grads.get(name)
    term_grads[name] = grads if have is None else [a + b for a, b in zip(have, grads, strict=True)]


def forward_loss(problem: TrainingProblem, config: MethodConfig, prep: _Prepared, latents: torch.Tensor,
                 draws: _Draws, rows: slice, step: int) -> tuple[_Forward, torch.Tensor, torch.Tensor | None]:
    """One micro-batch of step ``step`` (the samples ``rows`` of ``draws``): its forward, its loss (weighted so a
    step's passes add up to the batch mean) and the weighted anchor regulariser (in the step's first pass only).
    Nothing here or in ``backward_pass`` reads a value back to the host, so both also run on fake tensors
    (bench/regime.py measures a step's memory and FLOPs with them)."""
    t = config.train
    lam = config.sefi.attention_weight if config.is_sefi else 0.0
    reg_weight = 0.0 if config.is_sefi else config.idea.reg_weight
    fwd = _pass(problem, config, prep, prep.params, latents, draws, rows, step / t.steps)
    attn = fwd.attention
    loss = fwd.denoise if attn is None else fwd.denoise + lam * attn
    loss = loss * ((rows.stop - rows.start) / t.batch_size)
    reg = reg_weight * prep.params.regulariser() if reg_weight > 0 and rows.start == 0 else None
    return fwd, loss, reg


def backward_pass(problem: TrainingProblem, fwd: _Forward, loss: torch.Tensor, reg: torch.Tensor | None,
                  params: Parameterisation, scaler: torch.amp.GradScaler,
                  term_grads: dict[str, list[torch.Tensor]]) -> None:
    """The backward of one micro-batch: the UNet's part down to the text side's copies (the attention hooks stay
    armed through it: with gradient checkpointing the UNet's blocks run again there and must see the same value
    context and reference as in the forward pass), then the text side's, then the anchor term's."""
    try:
        scaler.scale(loss).backward()
    finally:
        if problem.attention is not None:
            problem.attention.disarm()
    _text_backward(fwd, params, term_grads)
    if reg is not None:  # independent of the UNet: its own gradient costs next to nothing
        _accumulate(term_grads, "reg", _token_grads(reg, params))
        scaler.scale(reg).backward()


def _backward(problem: TrainingProblem, config: MethodConfig, prep: _Prepared, params: Parameterisation,
              latents: torch.Tensor, draws: _Draws, scaler: torch.amp.GradScaler, step: int
              ) -> tuple[dict[str, float | None], dict[str, list[torch.Tensor]]]:
    """Forward and backward of one step over its micro-batches; the (scaled) gradients accumulate in the
    parameters. Returns the step's loss terms (batch means, weighted as in the loss) and the attention and
    anchor terms' own gradients on the token parameters (the attention's scaled like the loss, the anchor's
    unscaled)."""
    t = config.train
    lam = config.sefi.attention_weight if config.is_sefi else 0.0
    terms: dict[str, float | None] = {"loss": 0.0, "denoising": 0.0, "attention": 0.0 if lam > 0 else None,
                                      "regulariser": None}
    term_grads: dict[str, list[torch.Tensor]] = {}
    parts_sum = None
    b, size = t.batch_size, t.pass_size
    for start in range(0, b, size):
        rows = slice(start, min(start + size, b))
        share = (rows.stop - rows.start) / b
        try:
            fwd, loss, reg = forward_loss(problem, config, prep, latents, draws, rows, step)
            if reg is not None:
                terms["regulariser"] = float(reg.detach())
            total = loss if reg is None else loss + reg
            if not torch.isfinite(total):
                raise IdentityError(f"the loss became {float(total)} at step {step + 1}: the model's output "
                                    "overflowed. Lower the learning rate, or use training_dtype bf16 or fp32.")
        except BaseException:
            if problem.attention is not None:
                problem.attention.disarm()
            raise
        terms["denoising"] += float(fwd.denoise.detach()) * share
        attn = fwd.attention
        if attn is not None:
            terms["attention"] += lam * float(attn.detach()) * share
            weighted = fwd.parts.detach() * share
            parts_sum = weighted if parts_sum is None else parts_sum + weighted
        backward_pass(problem, fwd, loss, reg, params, scaler, term_grads)
    terms["loss"] = terms["denoising"] + (terms["attention"] or 0.0) + (terms["regulariser"] or 0.0)
    if parts_sum is not None:
        whole = float(parts_sum.sum())
        terms["attention_identity_share"] = float(parts_sum[0]) / whole if whole > 0 else None
        logger.debug("step %d: attention term by column group: %s", step + 1,
                     ", ".join(f"{g} {float(v):.3g}" for g, v in zip(GROUPS, parts_sum, strict=True)))
    return terms, term_grads


def _grad_norm(params: Parameterisation) -> float:
    grads = [p.grad.detach().float().reshape(-1) for p in params.trainable() if p.grad is not None]
    return float(torch.cat(grads).norm()) if grads else 0.0


def _norm(grads: list[torch.Tensor]) -> float:
    return float(torch.cat([g.reshape(-1) for g in grads]).norm())


def _term_norms(params: Parameterisation, term_grads: dict[str, list[torch.Tensor]], scale: float | None
                ) -> dict[str, float | None]:
    """Each term's gradient norm on the token parameters, unscaled. The denoising loss's is what remains of the
    (unscaled) total once the others are taken out, so it costs no backward of its own."""
    total = [torch.zeros_like(p) if p.grad is None else p.grad.detach().float() for p in params.token_parameters()]
    attention = [g / (scale or 1.0) for g in term_grads["attention"]] if "attention" in term_grads else None
    reg = term_grads.get("reg")
    denoise = total
    for other in (attention, reg):
        if other is not None:
            denoise = [a - b for a, b in zip(denoise, other, strict=True)]
    return {"grad_norm_denoise": _norm(denoise), "grad_norm_attention": None if attention is None else _norm(attention),
            "grad_norm_reg": None if reg is None else _norm(reg)}


def token_gradients(problem: TrainingProblem, config: MethodConfig) -> tuple[StepStats, dict[str, torch.Tensor]]:
    """The first step's unscaled gradients of the learnable tensors (seeded by ``config.train.seed``), without
    updating anything: the direction each training dtype would move the identity in (tests and benchmarks)."""
    prep = prepare(problem, config, config.train.seed)
    params = prep.params
    optimizer = _optimizer(params, config)
    scaler = _scaler(problem, config)
    generator = torch.Generator().manual_seed(config.train.seed)
    draws = draw_step(generator, config, prep, problem.latents.float())
    optimizer.zero_grad(set_to_none=True)
    terms, term_grads = _backward(problem, config, prep, params, problem.latents.float(), draws, scaler, 0)
    scale = scaler.get_scale() if scaler.is_enabled() else None
    scaler.unscale_(optimizer)
    norm = _grad_norm(params)
    stats = StepStats(1, grad_norm=norm, loss_scale=scale, skipped=not math.isfinite(norm), **terms,
                      **_term_norms(params, term_grads, scale))
    return stats, {name: p.grad.detach().float().clone() for name, p in params.named_parameters()
                   if p.requires_grad and p.grad is not None}


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
    prep = prepare(problem, config, t.seed)
    params = prep.params
    optimizer = _optimizer(params, config)
    scaler = _scaler(problem, config)
    generator = torch.Generator().manual_seed(t.seed)
    step, history = 0, []
    if resume is not None:
        if resume.config.get("method") != config.method:
            raise IdentityError(f"the saved state is a {resume.config.get('method')} run, not {config.method}; "
                                "turn resume off or use the same method")
        params.load_state_dict({k: v.to(problem.device) for k, v in resume.params.items()})
        optimizer.load_state_dict(resume.optimizer)
        if resume.scaler:
            scaler.load_state_dict(resume.scaler)
        generator.set_state(resume.rng)
        step, history = resume.step, list(resume.history)
        logger.info("resuming %s at step %d of %d", config.method, step, t.steps)
    params.train()

    # the generator's state after the last completed step: an interrupt inside a step (ComfyUI checks for one
    # in every layer) discards that step's draws, so the resumed run draws them again
    rng_done = generator.get_state()

    def snapshot() -> TrainResult:
        state = TrainState(step=step, params={k: v.detach().cpu() for k, v in params.state_dict().items()},
                           optimizer=optimizer.state_dict(), rng=rng_done.clone(), config=config.to_dict(),
                           history=list(history), scaler=scaler.state_dict() if scaler.is_enabled() else {})
        emb = IDEmbedding(config.method, {k: v.detach() for k, v in params.tokens().items()}, t.num_train_timesteps,
                          {"class_word": config.class_word, "steps": str(step)}).detach()
        return TrainResult(emb, state, [h["loss"] for h in history], interrupted=step < t.steps)

    try:
        while step < t.steps:
            stats = _step(problem, config, prep, params, optimizer, scaler, generator, latents, step)
            step += 1
            rng_done = generator.get_state()
            history.append(asdict(stats))
            if progress is not None:
                progress(step, t.steps, stats)
    except BaseException:
        if on_stop is not None and step > (resume.step if resume is not None else 0):
            on_stop(snapshot())  # nothing learned is lost: the caller saves it, then the error goes on
        raise
    return snapshot()


def _step(problem: TrainingProblem, config: MethodConfig, prep: _Prepared, params: Parameterisation,
          optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler, generator: torch.Generator,
          latents: torch.Tensor, step: int) -> StepStats:
    """One optimisation step. Parameters change only at its very end (the optimizer's step)."""
    draws = draw_step(generator, config, prep, latents)
    optimizer.zero_grad(set_to_none=True)
    terms, term_grads = _backward(problem, config, prep, params, latents, draws, scaler, step)
    scale = scaler.get_scale() if scaler.is_enabled() else None
    scaler.unscale_(optimizer)
    norm = _grad_norm(params)
    norms = _term_norms(params, term_grads, scale)  # before clipping: what each term asked for
    finite = math.isfinite(norm)
    if not finite and not scaler.is_enabled():
        raise IdentityError(f"the gradients became {norm} at step {step + 1}; lower the learning rate")
    if finite and config.train.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(params.trainable(), config.train.grad_clip)
    scaler.step(optimizer)  # skipped by the scaler when the fp16 gradients overflowed
    scaler.update()
    if not finite:
        logger.warning("step %d: fp16 gradients overflowed at loss scale %g; step skipped, scale lowered to %g",
                       step + 1, scale, scaler.get_scale())
    return StepStats(step + 1, grad_norm=norm, loss_scale=scale, skipped=not finite, **terms, **norms)
