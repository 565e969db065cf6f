"""Train / Load / Apply ID Embedding: per-identity SDXL embeddings (SeFi-IDE, ID-EA) over faceclip_core.identity.

The optimisation, the framing of the photos and the run's rules are the core's; ComfyUI's objects are adapted in
``sdxl_training`` (training) and ``id_conditioning`` (sampling).
"""
from __future__ import annotations

import logging

import comfy.model_management as mm
import folder_paths
import torch
from comfy_api.latest import io

from ..faceclip_core.dtypes import WEIGHT_DTYPES
from ..faceclip_core.errors import require_finite
from ..faceclip_core.identity import (
    CLASS_WORDS,
    FRAMINGS,
    METHODS,
    StepStats,
    TrainingProblem,
    encode_stages,
    load_embedding,
    load_state,
    save_embedding,
    save_state,
    tokenize_prompt,
    train_identity,
    training_images,
)
from ..faceclip_core.identity.config import method_config
from ..faceclip_core.identity.cost import GIB, fit_to_device
from ..faceclip_core.identity.node_inputs import DEFAULT_BATCH, DEFAULT_LR, METHOD_SETTINGS, method_settings
from ..faceclip_core.identity.recipes import DEFAULT_CHECKPOINTING, DEFAULT_RESOLUTION, DEFAULT_STEPS, RECIPES
from ..faceclip_core.identity.runs import check_photo_count, run_files
from .folders import embeddings_dir, identity_state_dir
from .id_conditioning import identity_conditioning, patch_model
from .progress import training_progress
from .sdxl_training import (
    TRAINING_DTYPES,
    check_sdxl,
    comfy_text_encoder,
    comfy_tokenizer,
    encode_latents,
    resolve_training_dtype,
    training_models,
)
from .types import Faces, IDEmbeddingType

logger = logging.getLogger(__name__)

APPLY_MAX_CHUNKS = 8  # Apply's prompt: up to 8 chunks of 75 words' tokens, as long as artists write them


def _paper_text() -> str:
    return ", ".join(f"{m} batch {RECIPES['paper'][m].batch_size} at {RECIPES['paper'][m].lr:g}" for m in METHODS)


def _method_option(method: str) -> io.DynamicCombo.Option:
    """The inputs the node shows for one method (defaults: faceclip_core.identity.node_inputs)."""
    d = METHOD_SETTINGS[method]
    tokens = io.Int.Input("num_tokens", default=d["num_tokens"], min=1, max=8,
                          tooltip=f"Tokens standing for the person ({method}'s default: {d['num_tokens']}).")
    if method == "ID-EA":
        return io.DynamicCombo.Option(method, [
            tokens,
            io.String.Input("anchor_names", default=d["anchor_names"],
                            tooltip="The textual anchor the tokens start from: 'celebrities' (the shipped list of "
                                    "well-known names) or your own comma-separated names."),
            io.Float.Input("reg_weight", default=d["reg_weight"], min=0.0, max=1.0, step=1e-5,
                           tooltip="Weight of the anchor regulariser (the method's code: 8e-4)."),
            io.Float.Input("adapter_scale", default=d["adapter_scale"], min=0.0, max=2.0, step=0.05,
                           tooltip="Beta of the training-only ID-Adapter (code: 0.4); its part fades to 0 over "
                                   "the last 20% of the steps."),
        ])
    return io.DynamicCombo.Option(method, [
        tokens,
        io.Int.Input("stages", default=d["stages"], min=1, max=20,
                     tooltip="Noise stages (equal timestep ranges), each with its own tokens."),
        io.Boolean.Input("kv_split", default=d["kv_split"],
                         tooltip="Separate key-side and value-side tokens. With stages 1 and kv_split off the "
                                 "result is a plain embedding for embedding:<name>."),
        io.Float.Input("attention_weight", default=d["attention_weight"], min=0.0, max=10.0, step=1e-4,
                       tooltip="Lambda of the attention loss on the attention logits (paper: 0.003; 0 turns it "
                               "off)."),
        io.Combo.Input("attention_tokens", options=["all", "identity"], default=d["attention_tokens"],
                       tooltip="Which tokens' attention is aligned with the reference prompt's: all (the "
                               "identity and every token after it) or identity (its own only)."),
        io.String.Input("attention_layers", default=d["attention_layers"],
                        tooltip="Cross-attention blocks of the attention loss, 'input:7, middle:0, output:1'."),
    ])


class FaceCLIPTrainIDEmbedding(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="FaceCLIPTrainIDEmbedding",
            display_name="Train ID Embedding",
            category="FaceCLIP/identity",
            search_aliases=["identity", "likeness", "textual inversion", "ID embedding", "SeFi-IDE", "ID-EA"],
            description="Learns a person's identity as SDXL text tokens from 1-5 photos (SeFi-IDE or ID-EA) and "
                        "saves it to models/embeddings/<name>.safetensors. Use it with embedding:<name> in any "
                        "prompt, or with Apply ID Embedding (SeFi-IDE's per-stage key/value form).",
            inputs=[
                io.Model.Input("model", tooltip="An SDXL model (eps or v prediction)."),
                io.Clip.Input("clip", tooltip="The SDXL CLIP of the same checkpoint."),
                io.Vae.Input("vae", tooltip="The SDXL VAE, to encode the photos."),
                Faces.Input("faces", tooltip="1-5 photos of the person, from Prepare Faces."),
                # The node shows the picked method's settings only; API graphs name them method.<setting>.
                io.DynamicCombo.Input("method", options=[_method_option(m) for m in ("ID-EA", "SeFi-IDE")],
                                      tooltip="ID-EA: 2 tokens, a plain embedding. SeFi-IDE: per-noise-stage "
                                              "key/value tokens (use Apply ID Embedding), or a plain embedding "
                                              "with stages 1 and kv_split off."),
                io.String.Input("name", default="my_identity",
                                tooltip="File name; the prompt word becomes embedding:<name>."),
                io.Int.Input("steps", default=DEFAULT_STEPS, min=1, max=100000,
                             tooltip="Optimisation steps in total."),
                io.Float.Input("learning_rate", default=DEFAULT_LR, min=1e-5, max=1.0, step=1e-4,
                               tooltip=f"AdamW learning rate ({DEFAULT_LR:g} for one sample per step; the "
                                       f"methods' papers: {_paper_text()})."),
                io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=True,
                             tooltip="Seeds every random draw of the run (same seed, same embedding)."),
                io.Int.Input("resolution", default=DEFAULT_RESOLUTION, min=64, max=2048, step=64,
                             tooltip="Training resolution of the framed photos (SDXL: 1024; 768 is faster)."),
                io.Int.Input("batch_size", default=DEFAULT_BATCH, min=1, max=64,
                             tooltip="Samples per step, each with its own photo, prompt and noise. 1: about 2 "
                                     "minutes per identity on a 4090-class GPU at 1024 px, under 12 GB; ID-EA's "
                                     "paper trains 8 at learning rate 0.012 (about 8x the time). See micro_batch "
                                     "for memory."),
                io.Boolean.Input("resume", default=False,
                                 tooltip="Continue the saved run of this name (after an interrupt, or to train "
                                         "more steps) instead of starting over."),
                io.Boolean.Input("overwrite", default=False,
                                 tooltip="Replace an existing embedding of this name when starting over."),
                io.Boolean.Input("gradient_checkpointing", default=DEFAULT_CHECKPOINTING,
                                 tooltip="Recompute each UNet and text-encoder block's activations in the "
                                         "backward pass: a 1024 px step fits 12 GB with it (about 9 GB), not "
                                         "without (about 14 GB); about 40% more compute; the learned tokens are "
                                         "the same."),
                io.Combo.Input("training_dtype", optional=True, options=list(TRAINING_DTYPES), default="auto",
                               tooltip="The UNet's compute dtype while training. auto: bf16 where the GPU has "
                                       "it, else fp16 with loss scaling, fp32 on CPU. Tokens stay fp32."),
                io.Combo.Input("framing", optional=True, options=list(FRAMINGS), default="head_and_shoulders",
                               tooltip="How much of each photo around the face is trained on. face: the tight "
                                       "aligned crop; head: with hair; head_and_shoulders: a portrait."),
                io.Combo.Input("class_word", optional=True, options=list(CLASS_WORDS), default="person",
                               tooltip="What the person is: ID-EA writes '<id> <class_word>' in its prompts; "
                                       "SeFi-IDE aligns the identity's attention with this word's."),
                io.Boolean.Input("flip", optional=True, default=True,
                                 tooltip="Also train on the mirror image of every photo."),
                io.Int.Input("micro_batch", optional=True, default=0, min=0, max=64,
                             tooltip="Samples per forward/backward pass; 0 = auto: as many as fit the GPU's "
                                     "memory. Smaller saves memory, the result is the same."),
            ],
            outputs=[IDEmbeddingType.Output(display_name="id_embedding"),
                     io.String.Output(display_name="prompt_word", tooltip="embedding:<name>, for prompts.")],
            hidden=[io.Hidden.unique_id],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, model, clip, vae, faces, method: dict, name: str, steps: int, learning_rate: float,
                seed: int, resolution: int, batch_size: int, resume: bool, overwrite: bool,
                gradient_checkpointing: bool, training_dtype: str = "auto", framing: str = "head_and_shoulders",
                class_word: str = "person", flip: bool = True, micro_batch: int = 0) -> io.NodeOutput:
        chosen = method_settings(method["method"], method)
        require_finite(learning_rate=learning_rate, attention_weight=chosen["attention_weight"],
                       reg_weight=chosen["reg_weight"], adapter_scale=chosen["adapter_scale"])
        files = run_files(name, embeddings_dir(), identity_state_dir(), resume, overwrite)
        check_photo_count(len(faces))
        check_sdxl(model)
        device = model.load_device
        precision = resolve_training_dtype(training_dtype, device)
        config = method_config(method["method"], steps=steps, lr=learning_rate, seed=seed, batch_size=batch_size,
                               micro_batch=micro_batch, precision=precision, class_word=class_word, **chosen)
        gpu_gib = None if mm.is_device_cpu(device) else mm.get_total_memory(device) / GIB
        config, estimate = fit_to_device(config, resolution, gradient_checkpointing, gpu_gib,
                                         torch.finfo(WEIGHT_DTYPES[precision]).bits // 8)
        images = training_images(faces, framing, resolution, flip)
        progress = training_progress(steps, cls.hidden.unique_id)
        progress.announce(f"{config.method}, {config.train.steps} steps x batch {config.train.batch_size} "
                          f"({config.train.pass_size} per pass) at {resolution} px, {precision}: {estimate.text()}")

        with torch.inference_mode(False), torch.enable_grad():
            # read here: tensors made in inference mode could not be updated by the optimizer
            state = load_state(files.state) if resume else None
            with torch.no_grad():  # the VAE is frozen; latents must be ordinary (non-inference) tensors
                latents = encode_latents(vae, model, torch.from_numpy(images.pixels))
            models = training_models(model, clip, config, resolution, gradient_checkpointing)
            try:
                models.load(estimate.reserve_bytes)
                problem = TrainingProblem(
                    latents=latents.to(models.device), text=models.text, denoiser=models.denoiser,
                    tokenize=comfy_tokenizer(clip), attention=models.attention, face=faces.identity(),
                    device=models.device, original_sizes=torch.from_numpy(images.original_sizes))

                def keep(result) -> None:
                    save_embedding(files.embedding, result.embedding, overwrite=True)
                    save_state(files.state, result.state, overwrite=True)
                    logger.info("ID embedding %s saved at step %d of %d", files.name, result.state.step, steps)

                def stopped(result) -> None:  # interrupted or failed: say on the node what is kept
                    keep(result)
                    progress.stopped(result.state.step)

                result = train_identity(problem, config, resume=state, on_stop=stopped, progress=progress)
            finally:
                models.release()
        keep(result)
        t = config.train
        lines = [f"{files.name}: {config.method}, {result.state.step} steps, lr {t.lr:g}, batch {t.batch_size}, "
                 f"{precision}, {framing}, {len(images.original_sizes)} training images, "
                 f"{progress.elapsed_text()}"]
        lines.append(estimate.text())
        if result.history:
            lines.append(StepStats(**result.history[-1]).text())
        lines.extend(images.notes)
        return io.NodeOutput(result.embedding, f"embedding:{files.name}", ui={"text": ["\n".join(lines)]})


class FaceCLIPLoadIDEmbedding(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="FaceCLIPLoadIDEmbedding",
            display_name="Load ID Embedding",
            category="FaceCLIP/identity",
            search_aliases=["identity", "ID embedding", "likeness"],
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
            search_aliases=["identity", "ID embedding", "likeness", "portrait"],
            description="SeFi-IDE's full form: the prompt is encoded once per noise stage with the key-side and "
                        "value-side tokens, and the model's cross-attention uses the stage matching the current "
                        "noise level, on this prompt's rows only. Connect both outputs to KSampler.",
            inputs=[
                io.Model.Input("model", tooltip="The SDXL model the embedding was trained on."),
                io.Clip.Input("clip", tooltip="Its SDXL CLIP."),
                IDEmbeddingType.Input("id_embedding", tooltip="From Train or Load ID Embedding."),
                io.String.Input("prompt", multiline=True, default="a photo of {id} wearing sunglasses",
                                tooltip="The positive prompt; {id} marks where the person goes (once), in place "
                                        "of a word like 'person'. Long prompts are fine."),
            ],
            outputs=[io.Model.Output(tooltip="The model, able to route this prompt's stages: connect it to "
                                             "KSampler."),
                     io.Conditioning.Output(display_name="positive")],
        )

    @classmethod
    def execute(cls, model, clip, id_embedding, prompt: str) -> io.NodeOutput:
        check_sdxl(model)
        tokens = tokenize_prompt(comfy_tokenizer(clip, APPLY_MAX_CHUNKS), prompt, id_embedding.num_tokens,
                                 max_chunks=APPLY_MAX_CHUNKS)
        context, pooled, stages = encode_stages(comfy_text_encoder(clip), tokens, id_embedding,
                                                mm.intermediate_device())
        return io.NodeOutput(patch_model(model), identity_conditioning(stages, context, pooled))

