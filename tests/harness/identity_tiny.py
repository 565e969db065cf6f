"""Tiny stand-ins for the core tests of faceclip_core.identity (no ComfyUI): two CLIP text stacks in the
HF/ComfyUI module layout, a word-level tokenizer with CLIP's special ids, and an epsilon-prediction denoiser
whose one cross-attention calls attn2 hooks the way ComfyUI's transformer blocks do."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

BOS, EOS = 49406, 49407
WIDTHS = {"clip_l": 16, "clip_g": 24}


class _Attn(nn.Module):
    def __init__(self, d: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.q_proj, self.k_proj, self.v_proj, self.out_proj = (nn.Linear(d, d) for _ in range(4))

    def forward(self, x, mask=None, optimized_attention=None):
        return self.out_proj(optimized_attention(self.q_proj(x), self.k_proj(x), self.v_proj(x), self.heads, mask))


class _MLP(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(d, 2 * d), nn.Linear(2 * d, d)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x)))


class _Layer(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.layer_norm1, self.layer_norm2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.self_attn, self.mlp = _Attn(d, 2), _MLP(d)


class _Embeddings(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.token_embedding = nn.Embedding(49408, d)
        self.position_embedding = nn.Embedding(77, d)


class _Encoder(nn.Module):
    def __init__(self, d: int, layers: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(_Layer(d) for _ in range(layers))


class _TextModel(nn.Module):
    def __init__(self, d: int, layers: int) -> None:
        super().__init__()
        self.embeddings, self.encoder, self.final_layer_norm = _Embeddings(d), _Encoder(d, layers), nn.LayerNorm(d)


class TinyCLIP(nn.Module):
    def __init__(self, d: int, layers: int = 3) -> None:
        super().__init__()
        self.text_model = _TextModel(d, layers)
        self.text_projection = nn.Linear(d, d, bias=False)


def text_encoder(seed: int = 0, checkpointing: bool = False):
    from faceclip_core.identity import CLIPStack, SDXLTextEncoder

    torch.manual_seed(seed)
    stacks = {n: TinyCLIP(d).requires_grad_(False) for n, d in WIDTHS.items()}
    return SDXLTextEncoder(CLIPStack(stacks["clip_l"], gradient_checkpointing=checkpointing),
                           CLIPStack(stacks["clip_g"], gradient_checkpointing=checkpointing))


class WordTokenizer:
    """Words -> stable ids (BOS/EOS like CLIP, 77 long; CLIP-L pads with EOS, CLIP-G with 0)."""

    def __init__(self) -> None:
        self.vocab: dict[str, int] = {}

    def __call__(self, text: str) -> dict[str, list[int]]:
        ids = [BOS] + [self.vocab.setdefault(w, 1000 + len(self.vocab)) for w in text.lower().split()] + [EOS]
        return {"clip_l": ids + [EOS] * (77 - len(ids)), "clip_g": ids + [0] * (77 - len(ids))}


class TinyDenoiser(nn.Module):
    """eps-prediction on 4-channel latents, one cross-attention block ("middle", 0) with ComfyUI-style hooks.
    ``dtype``: the compute dtype (weights and activations), as ComfyUI casts an fp16/bf16 UNet; the noise
    prediction comes back as float32, as ComfyUI's ``calculate_denoised`` returns it. ``out_gain`` scales the
    output layer (a small gain makes every gradient behind it small); ``checkpointing`` recomputes the
    cross-attention block in the backward pass, as the nodes' gradient checkpointing does with SDXL's blocks."""

    def __init__(self, context_dim: int = 40, pooled_dim: int = 24, ch: int = 16, seed: int = 0,
                 dtype: torch.dtype = torch.float32, out_gain: float = 1.0, checkpointing: bool = False) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.inp = nn.Conv2d(4, ch, 3, padding=1)
        self.to_q, self.to_k, self.to_v = nn.Linear(ch, ch), nn.Linear(context_dim, ch), nn.Linear(context_dim, ch)
        self.to_out = nn.Linear(ch, ch)
        self.pool = nn.Linear(pooled_dim, ch)
        self.out = nn.Conv2d(ch, 4, 3, padding=1)
        with torch.no_grad():  # a strong text path, so that a few steps on tokens show in the loss
            self.to_out.weight.mul_(4.0)
            self.pool.weight.mul_(4.0)
            # SDXL's cross-attention is far from uniform: per query its logits span ~10 (the start token takes
            # most of the mass); random init gives ~0.7, so the queries are scaled to SDXL's spread
            self.to_q.weight.mul_(15.0)
            self.out.weight.mul_(out_gain)
        self.checkpointing = checkpointing
        self.requires_grad_(False)
        betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000) ** 2
        alphas = torch.cumprod(1 - betas, 0)
        self.register_buffer("sigmas", ((1 - alphas) / alphas) ** 0.5)
        self.patch = None  # an object with attn2_patch / attn2_replace (TrainingAttention)
        self.seen: list[tuple[torch.Tensor, torch.Tensor]] = []  # (context, value) fed to the keys/values
        self.sizes: list[torch.Tensor | None] = []  # original_size given to each call
        self.compute_dtype = dtype
        self.to(dtype)
        self.sigmas = self.sigmas.float()

    def sigma_of(self, timesteps: torch.Tensor) -> torch.Tensor:
        return self.sigmas[timesteps.long().clamp(0, 999)]

    def add_noise(self, x0, noise, sigma):
        return x0 + noise * sigma.view(-1, 1, 1, 1)

    def predict_noise(self, x_t, sigma, context, pooled, original_size=None):
        self.sizes.append(original_size)
        dt = self.compute_dtype
        x = (x_t / (sigma.view(-1, 1, 1, 1) ** 2 + 1) ** 0.5).to(dt)
        context, pooled = context.to(dt), pooled.to(dt)
        h = F.silu(self.inp(x))
        b, c, hh, ww = h.shape
        n = h.flatten(2).transpose(1, 2)
        if self.checkpointing:
            a = checkpoint(self._cross_attention, n, context, use_reentrant=False)
        else:
            a = self._cross_attention(n, context)
        n = n + self.to_out(a) + self.pool(pooled).unsqueeze(1)
        return self.out(n.transpose(1, 2).reshape(b, c, hh, ww)).float()

    def _cross_attention(self, n, context):
        extra = {"block": ("middle", 0), "n_heads": 2, "cond_or_uncond": [0]}
        value = context
        if self.patch is not None:
            n, context, value = self.patch.attn2_patch(n, context, value, extra)
        self.seen.append((context.detach(), value.detach()))
        q, k, v = self.to_q(n), self.to_k(context), self.to_v(value)
        if self.patch is not None:
            return self.patch.attn2_replace(q, k, v, extra)
        w = torch.softmax(q @ k.transpose(1, 2) / math.sqrt(n.shape[-1]), -1)
        return w @ v


def problem(method: str, seed: int = 0, photos: int = 2, latent: int = 8, dtype: torch.dtype = torch.float32,
            out_gain: float = 1.0, checkpointing: bool = False):
    """A TrainingProblem over the tiny parts (random 'photo' latents and face embedding from ``seed``);
    ``latent`` is the latents' side (128 = SDXL at 1024 px), ``dtype`` the denoiser's compute dtype;
    ``out_gain`` and ``checkpointing`` as TinyDenoiser's (``checkpointing`` for the text encoders too)."""
    from faceclip_core.identity import TrainingAttention, TrainingProblem

    g = torch.Generator().manual_seed(seed + 100)
    denoiser = TinyDenoiser(seed=seed, dtype=dtype, out_gain=out_gain, checkpointing=checkpointing)
    attention = TrainingAttention(blocks=frozenset({("middle", 0)}))
    denoiser.patch = attention
    face = F.normalize(torch.randn(32, generator=g), dim=0)
    latents = torch.randn(photos, 4, latent, latent, generator=g)
    return TrainingProblem(latents=latents, text=text_encoder(seed, checkpointing), denoiser=denoiser,
                           tokenize=WordTokenizer(), attention=attention, face=face,
                           original_sizes=torch.full((photos,), 8 * latent))
