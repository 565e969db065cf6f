"""ComfyUI objects -> the callables faceclip_core.identity trains through: CLIP -> a tokenizer and a differentiable
SDXL text encoder over its CLIP modules, MODEL -> a Denoiser (noise schedule, size conditioning and noise
prediction through the training copy of the model, in the training dtype), VAE -> latents."""
from __future__ import annotations

import copy
import logging

import comfy.ldm.modules.attention
import comfy.model_base
import comfy.model_management as mm
import torch
import torch.utils.checkpoint

from ..faceclip_core.dtypes import WEIGHT_DTYPES
from ..faceclip_core.identity import CLIPStack, IdentityError, SDXLTextEncoder

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


def comfy_text_encoder(clip, gradient_checkpointing: bool = False) -> SDXLTextEncoder:
    model = clip.cond_stage_model
    if not (hasattr(model, "clip_l") and hasattr(model, "clip_g")):
        raise IdentityError("ID embeddings need an SDXL CLIP (CLIP-L + CLIP-G). Load an SDXL checkpoint, or "
                            "DualCLIPLoader with type sdxl.")
    mm.load_models_gpu([clip.patcher])
    device = clip.patcher.load_device
    stacks = []
    for module in (model.clip_l.transformer, model.clip_g.transformer):
        if torch.is_grad_enabled() and any(p.is_inference() for p in module.parameters()):
            # weights loaded in inference mode cannot be saved for backward: use an ordinary copy; on the CPU a
            # float32 one, since ComfyUI's layers would otherwise cast every weight at every call (most of a step)
            module = _training_copy(module, torch.float32 if mm.is_device_cpu(device) else None)
        stacks.append(CLIPStack(module, gradient_checkpointing=gradient_checkpointing))
    return SDXLTextEncoder(*stacks, device=device)


def _training_copy(module: torch.nn.Module, dtype: torch.dtype | None) -> torch.nn.Module:
    """A copy of ``module`` whose parameters are ordinary frozen tensors (in ``dtype`` if given), each made in one
    pass from the original (no intermediate clone)."""
    memo = {id(p): torch.nn.Parameter(p.detach().to(dtype=dtype or p.dtype, copy=True), requires_grad=False)
            for p in module.parameters()}
    return copy.deepcopy(module, memo)


def check_sdxl(model) -> None:
    base = model.model
    if not isinstance(base, comfy.model_base.SDXL):
        raise IdentityError(f"ID embeddings are for SDXL models; this MODEL is {type(base).__name__}.")
    if base.model_type not in (comfy.model_base.ModelType.EPS, comfy.model_base.ModelType.V_PREDICTION):
        raise IdentityError(f"unsupported model type {base.model_type.name}: only eps- and v-prediction SDXL")


class ComfyDenoiser:
    """MODEL (the training copy, patched by the caller) -> the core's Denoiser. The UNet computes in
    ``precision``; noise prediction comes from ComfyUI's x0 prediction: eps = (x_t - x0) / sigma, exact for
    SDXL's eps- and v-prediction schedules. SDXL's size conditioning says each photo's crop was
    ``original_size`` pixels, shown at the training resolution."""

    def __init__(self, patcher, resolution: int, precision: str = "fp32", gradient_checkpointing: bool = False
                 ) -> None:
        check_sdxl(patcher)
        # what ComfyUI's own trainer does: the model's layers cast their weights to this dtype as they run
        patcher.set_model_compute_dtype(WEIGHT_DTYPES[precision])
        mm.load_models_gpu([patcher])
        # ComfyUI's chunked attention kernels size their chunks by the free memory at the time, so the same step
        # could compute differently from run to run (and a checkpointed block differently in its recomputation);
        # training uses one unchunked kernel, so a seed gives one result.
        patcher.model_options.setdefault("transformer_options", {})["optimized_attention_override"] = \
            _unchunked_attention
        base = patcher.model
        if gradient_checkpointing:
            checkpoint_unet_blocks(base.diffusion_model)
        self.patcher, self.base = patcher, base
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


def checkpoint_unet_blocks(unet: torch.nn.Module) -> None:
    """Recompute each UNet block's activations in the backward pass instead of keeping them: the memory of a
    1024 px SDXL step drops to about one block's activations, for about one more forward pass of compute. Only
    ever applied to the training copy of the model."""
    # ComfyUI's UNet runs the layers of each block one by one (forward_timestep_embed), not the block's own
    # forward, so the layers are what gets wrapped.
    for block in [*unet.input_blocks, unet.middle_block, *unet.output_blocks]:
        for layer in block:
            forward = layer.forward

            def checkpointed(*args, _forward=forward, **kwargs):
                # The UNet updates one transformer_options dict in place as it walks its blocks ("block",
                # "block_index"); the recomputation must see the values of this call, so it gets a snapshot.
                args = tuple(dict(a) if isinstance(a, dict) else a for a in args)
                kwargs = {k: dict(v) if isinstance(v, dict) else v for k, v in kwargs.items()}
                return torch.utils.checkpoint.checkpoint(_forward, *args, use_reentrant=False, **kwargs)

            layer.forward = checkpointed


def encode_latents(vae, model, pixels: torch.Tensor, chunk: int = 4) -> torch.Tensor:
    """[M, S, S, 3] IMAGE -> the model's latent space, a few images at a time (a 1024 px encode is heavy)."""
    out = [model.model.process_latent_in(vae.encode(pixels[i:i + chunk])).float()
           for i in range(0, pixels.shape[0], chunk)]
    return torch.cat(out)
