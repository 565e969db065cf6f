"""Train / Load / Apply ID Embedding: per-identity SDXL embeddings (SeFi-IDE, ID-EA) over faceclip_core.identity.

The nodes only adapt ComfyUI's objects: CLIP -> a tokenizer and a differentiable text encoder over its CLIP
modules, MODEL -> a Denoiser (noise schedule + noise prediction through a cloned, patched model), VAE -> latents.
The optimisation itself is the core's.
"""
from __future__ import annotations

import copy
import logging
import re
from pathlib import Path

import comfy.ldm.modules.attention
import comfy.model_base
import comfy.model_management as mm
import folder_paths
import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from comfy_api.latest import io

from ..faceclip_core.identity import (METHODS, CLIPStack, IDEAConfig, IdentityError, IdentityFileError,
                                      MethodConfig, SDXLTextEncoder, SeFiConfig, StageRouter, TrainConfig,
                                      TrainingAttention, TrainingProblem, load_embedding, load_state, mean_face,
                                      save_embedding, save_state, tokenize_prompt, train_identity)
from ..faceclip_core.identity.config import SEFI_ATTENTION_BLOCKS
from .folders import IDENTITY_STATE
from .progress import progress_callback
from .types import Faces, IDEmbeddingType

logger = logging.getLogger(__name__)

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")


# ---------------------------------------------------------------- adapters: ComfyUI objects -> core callables

def comfy_tokenizer(clip):
    """CLIP -> ``text -> {"clip_l": ids, "clip_g": ids}`` (one 77-token chunk)."""
    def tokenize(text: str) -> dict[str, list[int]]:
        tokens = clip.tokenize(text)
        if set(tokens) != {"l", "g"}:
            raise IdentityError("ID embeddings need an SDXL CLIP (CLIP-L + CLIP-G); this CLIP has "
                                f"{sorted(tokens)} encoders. Load an SDXL checkpoint or DualCLIPLoader type sdxl.")
        if len(tokens["l"]) != 1 or len(tokens["g"]) != 1:
            raise IdentityError(f"the prompt {text!r} is longer than 77 tokens; shorten it")
        return {"clip_l": [int(t) for t, *_ in tokens["l"][0]], "clip_g": [int(t) for t, *_ in tokens["g"][0]]}
    return tokenize


def comfy_text_encoder(clip, gradient_checkpointing: bool = False) -> SDXLTextEncoder:
    model = clip.cond_stage_model
    if not (hasattr(model, "clip_l") and hasattr(model, "clip_g")):
        raise IdentityError("ID embeddings need an SDXL CLIP (CLIP-L + CLIP-G). Load an SDXL checkpoint, or "
                            "DualCLIPLoader with type sdxl.")
    mm.load_models_gpu([clip.patcher])
    stacks = []
    for module in (model.clip_l.transformer, model.clip_g.transformer):
        if torch.is_grad_enabled() and any(p.is_inference() for p in module.parameters()):
            # weights loaded in inference mode cannot be saved for backward: use an ordinary copy
            module = copy.deepcopy(module)
        stacks.append(CLIPStack(module, gradient_checkpointing=gradient_checkpointing))
    return SDXLTextEncoder(*stacks, device=clip.patcher.load_device)


class ComfyDenoiser:
    """MODEL (cloned and patched by the caller) -> the core's Denoiser. Noise prediction comes from ComfyUI's
    x0 prediction: eps = (x_t - x0) / sigma, exact for SDXL's eps- and v-prediction schedules."""

    def __init__(self, patcher, width: int, height: int, gradient_checkpointing: bool = False) -> None:
        base = patcher.model
        if not isinstance(base, comfy.model_base.SDXL):
            raise IdentityError(f"ID embeddings are for SDXL models; this MODEL is {type(base).__name__}.")
        if base.model_type not in (comfy.model_base.ModelType.EPS, comfy.model_base.ModelType.V_PREDICTION):
            raise IdentityError(f"unsupported model type {base.model_type.name}: only eps- and v-prediction SDXL")
        mm.load_models_gpu([patcher])
        # ComfyUI's chunked attention kernels size their chunks by the free memory at the time, so the same step
        # could compute differently from run to run (and a checkpointed block differently in its recomputation);
        # training uses one unchunked kernel, so a seed gives one result.
        patcher.model_options.setdefault("transformer_options", {})["optimized_attention_override"] = \
            _unchunked_attention
        if gradient_checkpointing:
            checkpoint_unet_blocks(base.diffusion_model)
        self.patcher, self.base = patcher, base
        self.size = (width, height)
        self.device = patcher.load_device

    def sigma_of(self, timesteps: torch.Tensor) -> torch.Tensor:
        return self.base.model_sampling.sigma(timesteps.float()).to(self.device)

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        return self.base.model_sampling.noise_scaling(sigma.view(-1, 1, 1, 1), noise, x0)

    def predict_noise(self, x_t, sigma, context, pooled):
        w, h = self.size
        y = self.base.encode_adm(pooled_output=pooled, width=w, height=h, target_width=w, target_height=h,
                                 crop_w=0, crop_h=0).to(self.device)
        options = dict(self.patcher.model_options.get("transformer_options", {}))
        options.update({"cond_or_uncond": [0], "sigmas": sigma})
        x0 = self.base.apply_model(x_t, sigma, c_crossattn=context, y=y, transformer_options=options)
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


def face_latents(vae, model, faces, resolution: int) -> torch.Tensor:
    """Aligned face crops with a face -> the model's latent space, at ``resolution`` pixels."""
    keep = torch.from_numpy(faces.has_face.astype(bool))
    if not bool(keep.any()):
        raise IdentityError("none of the photos has a usable face; Prepare Faces found none")
    pixels = torch.from_numpy(faces.crops_float()[keep.numpy()])  # [N,S,S,3]
    pixels = F.interpolate(pixels.movedim(-1, 1), size=(resolution, resolution), mode="bilinear",
                           antialias=True, align_corners=False).movedim(1, -1).clamp(0, 1)
    return model.model.process_latent_in(vae.encode(pixels)).float()


def embeddings_dir() -> Path:
    return Path(folder_paths.get_folder_paths("embeddings")[0])


def state_dir() -> Path:
    return Path(folder_paths.get_folder_paths(IDENTITY_STATE)[0])


def check_name(name: str) -> str:
    name = name.strip()
    if name.endswith(".safetensors"):
        name = name[: -len(".safetensors")]
    if not _NAME.match(name):
        raise IdentityError(f"name {name!r} can't be used: use letters, digits, '_', '-' or '.', no spaces or "
                            "slashes (it becomes embedding:<name> in prompts)")
    return name


# ---------------------------------------------------------------- nodes

class FaceCLIPTrainIDEmbedding(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="FaceCLIPTrainIDEmbedding",
            display_name="Train ID Embedding",
            category="FaceCLIP/identity",
            description="Learns a person's identity as SDXL text tokens from 1-5 photos (SeFi-IDE or ID-EA) and "
                        "saves it to models/embeddings/<name>.safetensors. Use it with embedding:<name> in any "
                        "prompt, or with Apply ID Embedding (SeFi-IDE's per-stage key/value form).",
            inputs=[
                io.Model.Input("model", tooltip="An SDXL model (eps or v prediction)."),
                io.Clip.Input("clip", tooltip="The SDXL CLIP of the same checkpoint."),
                io.Vae.Input("vae", tooltip="The SDXL VAE, to encode the photos."),
                Faces.Input("faces", tooltip="1-5 photos of the person, from Prepare Faces."),
                io.Combo.Input("method", options=list(METHODS), default="ID-EA",
                               tooltip="ID-EA: 2 tokens, a plain embedding. SeFi-IDE: per-noise-stage key/value "
                                       "tokens (use Apply ID Embedding), or a plain embedding with stages 1 and "
                                       "kv_split off."),
                io.String.Input("name", default="my_identity",
                                tooltip="File name; the prompt word becomes embedding:<name>."),
                io.Int.Input("steps", default=320, min=1, max=100000, tooltip="Optimisation steps in total."),
                io.Float.Input("learning_rate", default=0.005, min=1e-6, max=1.0, step=1e-4,
                               tooltip="AdamW learning rate (ID-EA code: 0.012 at batch 8; choice: 0.005)."),
                io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=True,
                             tooltip="Seeds every random draw of the run (same seed, same embedding)."),
                io.Int.Input("resolution", default=1024, min=64, max=2048, step=64,
                             tooltip="Training resolution of the face crops (SDXL: 1024; 768 is faster)."),
                io.Int.Input("batch_size", default=1, min=1, max=64,
                             tooltip="Samples per step (photos and their mirror images)."),
                io.Boolean.Input("resume", default=False,
                                 tooltip="Continue the saved run of this name (after an interrupt, or to train "
                                         "more steps) instead of starting over."),
                io.Boolean.Input("overwrite", default=False,
                                 tooltip="Replace an existing embedding of this name when starting over."),
                io.Int.Input("stages", default=5, min=1, max=20, advanced=True,
                             tooltip="SeFi-IDE: noise stages (equal timestep ranges)."),
                io.Boolean.Input("kv_split", default=True, advanced=True,
                                 tooltip="SeFi-IDE: separate key-side and value-side tokens."),
                io.Float.Input("attention_weight", default=0.003, min=0.0, max=10.0, step=1e-4, advanced=True,
                               tooltip="SeFi-IDE: weight of the attention loss (paper: 0.003)."),
                io.String.Input("attention_layers", default=_blocks_text(SEFI_ATTENTION_BLOCKS), advanced=True,
                                tooltip="SeFi-IDE: cross-attention blocks of the attention loss, "
                                        "'input:7, middle:0, output:1'."),
                io.String.Input("anchor_names", default="person", advanced=True,
                                tooltip="ID-EA: comma-separated words or names whose mean is the textual anchor."),
                io.Float.Input("reg_weight", default=8e-4, min=0.0, max=1.0, step=1e-5, advanced=True,
                               tooltip="ID-EA: weight of the anchor regulariser (code: 8e-4)."),
                io.Boolean.Input("gradient_checkpointing", default=False, advanced=True,
                                 tooltip="Recompute the UNet's and the text encoders' activations in the "
                                         "backward pass: much less memory, slower (each block runs twice); the "
                                         "learned tokens are the same."),
            ],
            outputs=[IDEmbeddingType.Output(display_name="id_embedding"),
                     io.String.Output(display_name="prompt_word", tooltip="embedding:<name>, for prompts.")],
            hidden=[io.Hidden.unique_id],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, model, clip, vae, faces, method: str, name: str, steps: int, learning_rate: float, seed: int,
                resolution: int, batch_size: int, resume: bool, overwrite: bool, stages: int, kv_split: bool,
                attention_weight: float, attention_layers: str, anchor_names: str, reg_weight: float,
                gradient_checkpointing: bool) -> io.NodeOutput:
        name = check_name(name)
        emb_path = embeddings_dir() / f"{name}.safetensors"
        state_path = state_dir() / f"{name}.safetensors"
        if not 1 <= len(faces) <= 5:
            raise IdentityError(f"give 1 to 5 photos of the person, got {len(faces)}")
        config = MethodConfig(
            method, train=TrainConfig(steps=steps, lr=learning_rate, seed=seed, batch_size=batch_size),
            sefi=SeFiConfig(stages=stages, kv_split=kv_split, attention_weight=attention_weight,
                            attention_blocks=_parse_blocks(attention_layers)),
            idea=IDEAConfig(anchor_names=anchor_names, reg_weight=reg_weight))
        if resume:
            if not state_path.is_file():
                raise IdentityFileError(f"there is no saved run named {name!r} to resume (looked for {state_path}). "
                                        "Turn resume off to start a new run.")
        elif emb_path.exists() and not overwrite:
            raise IdentityFileError(f"an embedding named {name!r} exists already ({emb_path}). Turn on overwrite "
                                    "to replace it, resume to continue its run, or choose another name.")

        with torch.inference_mode(False), torch.enable_grad():
            # read here: tensors made in inference mode could not be updated by the optimizer
            state = load_state(state_path) if resume else None
            with torch.no_grad():  # the VAE is frozen; latents must be ordinary (non-inference) tensors
                latents = face_latents(vae, model, faces, resolution)
            # ComfyUI loads weights in inference mode; autograd cannot save those for backward, so train on a
            # deep copy made outside it (as ComfyUI's own TrainLoraNode does)
            patched = model.clone(force_deepcopy=True)
            attention = None
            if method == "SeFi-IDE":
                attention = TrainingAttention(blocks=frozenset(config.sefi.attention_blocks),
                                              align_prefix=config.sefi.attention_tokens == "all")
                patched.set_model_attn2_patch(attention.attn2_patch)
                for block, number in config.sefi.attention_blocks:
                    patched.set_model_attn2_replace(attention.attn2_replace, block, number)
            denoiser = ComfyDenoiser(patched, resolution, resolution, gradient_checkpointing)
            face = mean_face(faces.embeddings, faces.has_face)
            problem = TrainingProblem(latents=latents.to(denoiser.device), text=comfy_text_encoder(clip,
                                      gradient_checkpointing), denoiser=denoiser, tokenize=comfy_tokenizer(clip),
                                      attention=attention, face=face, device=denoiser.device)

            def keep(result) -> None:
                save_embedding(emb_path, result.embedding, overwrite=True)
                save_state(state_path, result.state, overwrite=True)
                logger.info("ID embedding %s saved at step %d of %d", name, result.state.step, steps)

            result = train_identity(problem, config, resume=state, progress=_progress(steps, cls.hidden.unique_id),
                                    on_stop=keep)
        keep(result)
        return io.NodeOutput(result.embedding, f"embedding:{name}",
                             ui={"text": [f"{name}: {result.state.step} steps, last loss "
                                          f"{result.losses[-1]:.4f}" if result.losses else name]})


class FaceCLIPLoadIDEmbedding(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="FaceCLIPLoadIDEmbedding",
            display_name="Load ID Embedding",
            category="FaceCLIP/identity",
            description="Loads an ID embedding (or any SDXL embedding) from models/embeddings for Apply ID "
                        "Embedding.",
            inputs=[io.Combo.Input("embedding_name", options=folder_paths.get_filename_list("embeddings"),
                                   tooltip="A file in models/embeddings.")],
            outputs=[IDEmbeddingType.Output(display_name="id_embedding")],
        )

    @classmethod
    def execute(cls, embedding_name: str) -> io.NodeOutput:
        return io.NodeOutput(load_embedding(folder_paths.get_full_path_or_raise("embeddings", embedding_name)))


class FaceCLIPApplyIDEmbedding(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="FaceCLIPApplyIDEmbedding",
            display_name="Apply ID Embedding",
            category="FaceCLIP/identity",
            description="SeFi-IDE's full form: the prompt is encoded once per noise stage with the key-side and "
                        "value-side tokens, and the model's cross-attention uses the stage matching the current "
                        "noise level, on the positive prompt only. Connect both outputs to KSampler.",
            inputs=[
                io.Model.Input("model", tooltip="The SDXL model the embedding was trained on."),
                io.Clip.Input("clip", tooltip="Its SDXL CLIP."),
                IDEmbeddingType.Input("id_embedding", tooltip="From Train or Load ID Embedding."),
                io.String.Input("prompt", multiline=True, default="a photo of {id} person wearing sunglasses",
                                tooltip="The positive prompt; {id} marks where the identity goes (once)."),
            ],
            outputs=[io.Model.Output(), io.Conditioning.Output(display_name="positive")],
        )

    @classmethod
    def execute(cls, model, clip, id_embedding, prompt: str) -> io.NodeOutput:
        text = comfy_text_encoder(clip)
        tokens = tokenize_prompt(comfy_tokenizer(clip), prompt, id_embedding.num_tokens)
        with torch.no_grad():
            marker, pooled = text.encode(tokens, id_embedding.collapsed())
            ks = [text.encode(tokens, id_embedding.rows(s, 0))[0] for s in range(id_embedding.stages)]
            vs = [text.encode(tokens, id_embedding.rows(s, 1))[0] for s in range(id_embedding.stages)]
        inter = mm.intermediate_device()
        router = StageRouter([k.to(inter) for k in ks], [v.to(inter) for v in vs], marker.to(inter),
                             timestep_of=model.model.model_sampling.timestep,
                             num_train_timesteps=id_embedding.num_train_timesteps)
        patched = model.clone()
        patched.set_model_attn2_patch(router.attn2_patch)
        return io.NodeOutput(patched, [[marker.to(inter), {"pooled_output": pooled.to(inter)}]])


def _blocks_text(blocks) -> str:
    return ", ".join(f"{b}:{i}" for b, i in blocks)


def _parse_blocks(text: str) -> tuple[tuple[str, int], ...]:
    blocks = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        block, _, number = part.partition(":")
        if block not in ("input", "middle", "output") or not number.strip().isdigit():
            raise IdentityError(f"attention_layers: {part!r} is not 'input:N', 'middle:N' or 'output:N'")
        blocks.append((block, int(number)))
    return tuple(blocks)


def _progress(total: int, node_id):
    """Progress bar + interrupt check, and the running loss in the node's text and the log."""
    step = progress_callback(total)
    try:
        from server import PromptServer
    except ImportError:  # pragma: no cover - always there inside ComfyUI
        PromptServer = None

    def update(done: int, of: int, loss: float) -> None:
        if PromptServer is not None and node_id is not None:
            PromptServer.instance.send_progress_text(f"step {done}/{of}  loss {loss:.4f}", node_id)
        if done == of or done % 10 == 0:
            logger.info("ID embedding step %d/%d loss %.4f", done, of, loss)
        step(done, of)

    return update
