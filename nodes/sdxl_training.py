"""ComfyUI objects -> the callables faceclip_core.identity trains through: CLIP -> a tokenizer and a differentiable
SDXL text encoder over training copies of its CLIP modules, MODEL -> a Denoiser (noise schedule, size conditioning
and noise prediction through the training copy of the model, in the training dtype), VAE -> latents.

Memory on the GPU: both training copies hold their weights in the training dtype, cast once when they are made
(ComfyUI's casting layers would otherwise make a fresh cast copy of every weight at every call, and autograd would
keep those copies until the backward pass: a second UNet and an fp32 CLIP held through every step). They are
ModelPatchers, loaded together by one ``load_models_gpu`` call that reserves the step's activations, so loading the
text encoders can never push part of the UNet off the GPU.
"""
from __future__ import annotations

import copy
import logging
from dataclasses import dataclass

import comfy.ldm.modules.attention
import comfy.ldm.modules.diffusionmodules.openaimodel
import comfy.model_base
import comfy.model_management as mm
import comfy.model_patcher
import torch

from ..faceclip_core.dtypes import WEIGHT_DTYPES
from ..faceclip_core.identity import CLIPStack, IdentityError, MethodConfig, SDXLTextEncoder, TrainingAttention
from ..faceclip_core.identity.checkpointing import checkpoint_modules

logger = logging.getLogger(__name__)

TRAINING_DTYPES = ("auto", "bf16", "fp16", "fp32")


def resolve_training_dtype(choice: str, device: torch.device) -> str:
    """"auto": bf16 where the device computes it well, else fp16 (with loss scaling), fp32 on the CPU; the same
    rule as ComfyUI's own LoRA trainer."""
    if choice != "auto":
        return choice
    if mm.is_device_cpu(device):
        return "fp32"
    return "bf16" if mm.should_use_bf16(device) else "fp16"


def comfy_tokenizer(clip, max_chunks: int = 1):
    """CLIP -> ``text -> {"clip_l": ids, "clip_g": ids}``: the tokenizer's 77-token chunks back to back."""
    def tokenize(text: str) -> dict[str, list[int]]:
        tokens = clip.tokenize(text)
        if set(tokens) != {"l", "g"}:
            raise IdentityError("ID embeddings need an SDXL CLIP (CLIP-L + CLIP-G); this CLIP has "
                                f"{sorted(tokens)} encoders. Load an SDXL checkpoint or DualCLIPLoader type sdxl.")
        out = {}
        for ours, theirs in (("clip_l", "l"), ("clip_g", "g")):
            chunks = tokens[theirs]
            if len(chunks) > max_chunks:
                raise IdentityError(f"the prompt {text!r} is longer than {max_chunks * 75} tokens; shorten it")
            ids = [t for chunk in chunks for t, *_ in chunk]
            if not all(isinstance(t, int) for t in ids):
                raise IdentityError(f"the prompt {text!r} holds an embedding:name; an ID embedding's prompt can "
                                    "only hold words (put other embeddings in a separate CLIPTextEncode)")
            if any(w != 1.0 for chunk in chunks for _, w, *_ in chunk):
                logger.warning("prompt weights like (word:1.2) are ignored in %r", text)
            out[ours] = ids
        return out
    return tokenize


def _clip_transformers(clip) -> tuple[torch.nn.Module, torch.nn.Module]:
    model = clip.cond_stage_model
    if not (hasattr(model, "clip_l") and hasattr(model, "clip_g")):
        raise IdentityError("ID embeddings need an SDXL CLIP (CLIP-L + CLIP-G). Load an SDXL checkpoint, or "
                            "DualCLIPLoader with type sdxl.")
    return model.clip_l.transformer, model.clip_g.transformer


def comfy_text_encoder(clip) -> SDXLTextEncoder:
    """The CLIP's own modules, for encoding without gradients (Apply ID Embedding), in fp32 as ever."""
    modules = _clip_transformers(clip)
    mm.load_models_gpu([clip.patcher])
    return SDXLTextEncoder(*(CLIPStack(m, dtype=torch.float32) for m in modules), device=clip.patcher.load_device)


def _training_copy(module: torch.nn.Module, dtype: torch.dtype, device: torch.device) -> torch.nn.Module:
    """A copy of ``module`` whose parameters are ordinary frozen tensors in ``dtype`` on ``device``, each made in one
    pass from the original (weights ComfyUI loaded in inference mode cannot be saved for backward)."""
    memo = {id(p): torch.nn.Parameter(p.detach().to(device=device, dtype=dtype, copy=True), requires_grad=False)
            for p in module.parameters()}
    return copy.deepcopy(module, memo)


def text_training_dtype(precision: str, device: torch.device) -> torch.dtype:
    """The text encoders compute in the training dtype on a GPU; on the CPU in fp32, since its half-precision
    matrix products are several times slower than fp32 (measured 4.5x for bf16 on the test machines)."""
    return torch.float32 if mm.is_device_cpu(device) else WEIGHT_DTYPES[precision]


def training_text_encoder(clip, precision: str, gradient_checkpointing: bool = False,
                          dtype: torch.dtype | None = None
                          ) -> tuple[SDXLTextEncoder, comfy.model_patcher.ModelPatcher]:
    """Training copies of CLIP-L and CLIG-G (in ``dtype``, else ``text_training_dtype``), made on the CPU side
    (the original CLIP need not be on the GPU), and the ModelPatcher that loads them."""
    dtype = dtype or text_training_dtype(precision, clip.patcher.load_device)
    offload = clip.patcher.offload_device
    copies = torch.nn.ModuleDict({name: _training_copy(m, dtype, offload)
                                  for name, m in zip(("clip_l", "clip_g"), _clip_transformers(clip), strict=True)})
    patcher = comfy.model_patcher.ModelPatcher(copies, load_device=clip.patcher.load_device, offload_device=offload)
    stacks = [CLIPStack(copies[name], gradient_checkpointing=gradient_checkpointing) for name in ("clip_l", "clip_g")]
    return SDXLTextEncoder(*stacks, device=clip.patcher.load_device), patcher


def check_sdxl(model) -> None:
    base = model.model
    if not isinstance(base, comfy.model_base.SDXL):
        raise IdentityError(f"ID embeddings are for SDXL models; this MODEL is {type(base).__name__}.")
    if base.model_type not in (comfy.model_base.ModelType.EPS, comfy.model_base.ModelType.V_PREDICTION):
        raise IdentityError(f"unsupported model type {base.model_type.name}: only eps- and v-prediction SDXL")


def _cast_parameters(module: torch.nn.Module, dtype: torch.dtype) -> None:
    """Every floating-point parameter of ``module`` replaced by a frozen one in ``dtype`` (in place, unlike
    ``Module.to``, which fake tensors and swapped tensors refuse)."""
    for sub in module.modules():
        for name, p in list(sub._parameters.items()):
            if p is not None and p.is_floating_point() and p.dtype != dtype:
                sub._parameters[name] = torch.nn.Parameter(p.detach().to(dtype), requires_grad=False)


def prepare_training_unet(patcher, precision: str, gradient_checkpointing: bool) -> None:
    """Make a training copy of the model (``clone(force_deepcopy=True)``) compute in ``precision``: its UNet's
    weights are cast to that dtype once, here, so its casting layers pass them through untouched."""
    dtype = WEIGHT_DTYPES[precision]
    _cast_parameters(patcher.model.diffusion_model, dtype)
    # what ComfyUI's own trainer does: the model's layers compute in this dtype
    patcher.set_model_compute_dtype(dtype)
    # ComfyUI's chunked attention kernels size their chunks by the free memory at the time, so the same step
    # could compute differently from run to run (and a checkpointed block differently in its recomputation);
    # training uses one unchunked kernel, so a seed gives one result.
    patcher.model_options.setdefault("transformer_options", {})["optimized_attention_override"] = \
        _unchunked_attention
    if gradient_checkpointing:
        checkpoint_unet_blocks(patcher.model.diffusion_model)


class ComfyDenoiser:
    """MODEL (the training copy, prepared by ``prepare_training_unet``) -> the core's Denoiser. Noise prediction
    comes from ComfyUI's x0 prediction: eps = (x_t - x0) / sigma, exact for SDXL's eps- and v-prediction
    schedules. SDXL's size conditioning says each photo's crop was ``original_size`` pixels, shown at the training
    resolution."""

    def __init__(self, patcher, resolution: int) -> None:
        check_sdxl(patcher)
        self.patcher, self.base = patcher, patcher.model
        self.resolution = resolution
        self.device = patcher.load_device

    def sigma_of(self, timesteps: torch.Tensor) -> torch.Tensor:
        return self.base.model_sampling.sigma(timesteps.float()).to(self.device)

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        return self.base.model_sampling.noise_scaling(sigma.view(-1, 1, 1, 1), noise, x0)

    def _adm(self, pooled: torch.Tensor, original_size: torch.Tensor | None) -> torch.Tensor:
        res = self.resolution
        sizes = [res] * pooled.shape[0] if original_size is None else [int(s) for s in original_size]
        rows = [self.base.encode_adm(pooled_output=pooled[i:i + 1], width=s, height=s, target_width=res,
                                     target_height=res, crop_w=0, crop_h=0) for i, s in enumerate(sizes)]
        return torch.cat(rows).to(self.device)

    def predict_noise(self, x_t, sigma, context, pooled, original_size=None):
        options = dict(self.patcher.model_options.get("transformer_options", {}))
        options.update({"cond_or_uncond": [0], "sigmas": sigma})
        x0 = self.base.apply_model(x_t, sigma, c_crossattn=context, y=self._adm(pooled, original_size),
                                   transformer_options=options)
        return (x_t - x0.float()) / sigma.view(-1, 1, 1, 1)


def _unchunked_attention(kernel, *args, **kwargs):
    return comfy.ldm.modules.attention.attention_pytorch(*args, **kwargs)


# What gradient checkpointing recomputes: each residual block and each transformer block (ComfyUI runs SDXL's
# 10-block transformers as one layer; checkpointing at that level would keep a whole 10-block recomputation alive
# in the backward pass, so the peak would hardly move).
CHECKPOINTED = (comfy.ldm.modules.diffusionmodules.openaimodel.ResBlock,
                comfy.ldm.modules.attention.BasicTransformerBlock)


def checkpoint_unet_blocks(unet: torch.nn.Module) -> int:
    """Recompute each residual and transformer block's activations in the backward pass instead of keeping them:
    a 1024 px SDXL step then keeps only the blocks' inputs, for about one more forward pass of compute. Only
    ever applied to the training copy of the model. Returns how many blocks were wrapped."""
    return checkpoint_modules(m for m in unet.modules() if isinstance(m, CHECKPOINTED))


def _deep_copy(model):
    """A training copy of MODEL with its own weights, under the classic patcher where ComfyUI has the dynamic VRAM
    one: training needs every weight resident for the whole step (they are saved for backward), which is what a
    forced full load gives; dynamic VRAM would stream them per layer and copy each at every call."""
    try:
        return model.clone(disable_dynamic=True, force_deepcopy=True)
    except TypeError:  # a ComfyUI from before dynamic VRAM: its clone has no disable_dynamic
        return model.clone(force_deepcopy=True)


@dataclass
class TrainingModels:
    """The training copies of the UNet and the text encoders, their adapters and the SeFi-IDE hooks."""

    unet: comfy.model_patcher.ModelPatcher
    text_patcher: comfy.model_patcher.ModelPatcher
    denoiser: ComfyDenoiser
    text: SDXLTextEncoder
    attention: TrainingAttention | None

    @property
    def device(self) -> torch.device:
        return self.unet.load_device

    def load(self, reserve_bytes: int) -> None:
        """Both copies on the GPU in one call, with ``reserve_bytes`` kept free for the step's activations: the
        model manager offloads every other model first, so nothing of these is left in low-VRAM streaming."""
        mm.load_models_gpu([self.unet, self.text_patcher], memory_required=reserve_bytes, force_full_load=True)

    def release(self) -> None:
        """Both copies out of the model manager and their memory back, now: left to it, they would stay loaded
        until another model needed the room (about 6.3 GB of a 12 GB card)."""
        ours = (self.unet, self.text_patcher)
        for loaded in list(mm.current_loaded_models):
            if any(loaded.model is p for p in ours):
                loaded.model_unload()
                mm.current_loaded_models.remove(loaded)
        mm.soft_empty_cache()


def training_models(model, clip, config: MethodConfig, resolution: int, gradient_checkpointing: bool,
                    unet_copy=None, text_dtype: torch.dtype | None = None) -> TrainingModels:
    """Training copies of MODEL and CLIP for ``config`` (not loaded yet: see ``TrainingModels.load``).
    ``unet_copy``: a patcher of MODEL's that is already the run's own (the benchmarks build one), else a deep copy
    is made; ``text_dtype``: the text encoders' (default: ``text_training_dtype``; the benchmarks give a GPU's)."""
    check_sdxl(model)
    precision = config.train.precision
    # ComfyUI loads weights in inference mode; autograd cannot save those for backward, so train on a deep copy
    # made outside it, as ComfyUI's own trainer does
    unet = _deep_copy(model) if unet_copy is None else unet_copy
    attention = None
    if config.is_sefi:
        attention = TrainingAttention(blocks=frozenset(config.sefi.attention_blocks))
        unet.set_model_attn2_patch(attention.attn2_patch)
        for block, number in config.sefi.attention_blocks:
            unet.set_model_attn2_replace(attention.attn2_replace, block, number)
    prepare_training_unet(unet, precision, gradient_checkpointing)
    text, text_patcher = training_text_encoder(clip, precision, gradient_checkpointing, text_dtype)
    return TrainingModels(unet, text_patcher, ComfyDenoiser(unet, resolution), text, attention)


def encode_latents(vae, model, pixels: torch.Tensor, chunk: int = 4) -> torch.Tensor:
    """[M, S, S, 3] IMAGE -> the model's latent space, a few images at a time (a 1024 px encode is heavy)."""
    out = [model.model.process_latent_in(vae.encode(pixels[i:i + chunk])).float()
           for i in range(0, pixels.shape[0], chunk)]
    return torch.cat(out)
