"""What one ID-embedding training step costs an artist's GPU, measured on a CPU: peak memory by kind and FLOPs of the
Train node's step, at full size, without the memory or the compute. Prints one JSON object.

    COMFYUI_PATH=/path/to/ComfyUI python bench/regime.py --defaults   # the node's defaults, both methods
    COMFYUI_PATH=/path/to/ComfyUI python bench/regime.py              # every setting below
    python bench/regime.py --tiny                                     # the same code at test size (CI)

How: ComfyUI's own SDXL model (UNet, CLIP-L, CLIP-G; fp16 weights, as SDXL checkpoints store them) is built under
PyTorch's FakeTensorMode, which keeps shapes, dtypes and devices but no data. The Train node's adapters then make
their training copies (``nodes.sdxl_training.training_models``: weights cast once to the training dtype, gradient
checkpointing per residual and transformer block, SeFi-IDE's attention hooks) and the core's loop runs one step's
first pass exactly as in training (``faceclip_core.identity.loop.forward_loss`` and ``backward_pass``: the text
encoders with the tokens spliced in, the UNet, the losses, the two-part backward), counting live tensor bytes by
kind at the peak and FLOPs (``bench/live_memory.py``; torch's MemTracker refuses modules that run twice, as
checkpointed blocks do). The optimizer's state (AdamW: two fp32 moments per trainable value) is counted from its
size; a step of several passes repeats the first pass's FLOPs.

What CUDA keeps that this does not count, and the reverse:
- the CUDA context and cuBLAS/cuDNN workspaces (about 0.3-0.6 GiB, outside torch's allocator), and the caching
  allocator's slack (fragmentation; typically 5-15 % above the tensors' peak): ``device_gib`` adds 0.5 GiB and
  10 % to ``peak_gib`` for what an artist's card must have;
- attention: training computes through PyTorch's SDPA (the node forces it), which on CUDA runs the flash or
  memory-efficient kernels that keep O(N) per head (the log-sum-exp), never the N x N maps; the CPU's fake SDPA
  also takes its fused kernel here (``largest_at_peak`` lists the largest live tensors: none is as large as a map);
- what the CPU keeps and CUDA would not: nothing found (the CPU's default sub-quadratic attention, which keeps
  its chunks' maps, is bypassed as on CUDA).

Time: FLOPs per step x steps / (the card's dense fp16/bf16 tensor peak with fp32 accumulation x ``UTILISATION``;
both from ``faceclip_core.identity.cost``, which the Train node uses for its own estimate),
an estimate of eager PyTorch at batch 1 (kernel launches, normalisations and element-wise work keep a real run
below the tensor cores' peak); ``bench/train.py --backend cuda`` measures the real time on a GPU.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from faceclip_core.identity.cost import (  # noqa: E402  (the repository's root joins the path first)
    ALLOCATOR_SLACK,
    CARDS,
    CUDA_OVERHEAD_GIB,
    UTILISATION,
    device_gib,
    minutes_by_card,
)

GIB = 2 ** 30
METHODS = ("SeFi-IDE", "ID-EA")
DTYPES = ("bf16", "fp16")

NOTES = ("peak_gib: live tensors at the step's peak (fake tensors, full size); device_gib adds the CUDA context and "
         "workspaces (0.5 GiB) and 10 % allocator slack. Attention is SDPA's fused kernel here as on CUDA (O(N) kept "
         "per head). minutes: FLOPs at the stated share of each card's dense fp16/bf16 peak; bench/train.py "
         "--backend cuda measures the real time on a GPU.")


@dataclasses.dataclass(frozen=True)
class Setting:
    method: str
    checkpointing: bool
    resolution: int
    dtype: str
    micro_batch: int  # samples per pass; 0 = the recipe's batch in one pass
    batch_size: int  # 0 = the recipe's


def boot_comfy():
    """ComfyUI imported in this process on the CPU, with the pack's training adapters."""
    from bench.train import _boot_comfy

    training, _ = _boot_comfy(cpu=True)
    return training


def _fake_models(training, tiny: bool):
    """A fake SDXL MODEL patcher (fp16 weights) and a fake SDXL CLIP, as ComfyUI's loaders would make them."""
    import comfy.model_base
    import comfy.model_patcher
    import comfy.sd
    import comfy.supported_models
    import torch

    from bench.train import FULL_UNET
    from tests.harness import tiny_models

    unet_config = dict(tiny_models.UNET_CONFIG if tiny else FULL_UNET, dtype=torch.float16)
    model_config = comfy.supported_models.SDXL(unet_config)
    model_config.set_inference_dtype(torch.float16, None)
    base = comfy.model_base.SDXL(model_config, device=torch.device("cpu"))
    cpu = torch.device("cpu")
    unet = comfy.model_patcher.ModelPatcher(base, load_device=cpu, offload_device=cpu)
    # what comfy.sd.CLIP builds, without its loading step (fake weights cannot be moved)
    target = model_config.clip_target()
    clip = comfy.sd.CLIP(no_init=True)
    clip.cond_stage_model = target.clip(**target.params, dtype=torch.float16, device=cpu)
    clip.tokenizer = target.tokenizer(embedding_directory=None, tokenizer_data={})
    clip.patcher = comfy.model_patcher.ModelPatcher(clip.cond_stage_model, load_device=cpu, offload_device=cpu)
    clip.tokenizer_options, clip.layer_idx, clip.use_clip_schedule = {}, None, False
    return unet, clip


def _config(setting: Setting, steps: int):
    from faceclip_core.identity.config import SEFI_ATTENTION_BLOCKS, blocks_text, method_config
    from faceclip_core.identity.recipes import DEFAULT_RECIPE

    return method_config(setting.method, recipe=DEFAULT_RECIPE, steps=steps, lr=0.0, seed=0,
                         batch_size=setting.batch_size, micro_batch=setting.micro_batch, precision=setting.dtype,
                         num_tokens=0, class_word="person", stages=5, kv_split=True, attention_weight=0.003,
                         attention_tokens="all", attention_layers=blocks_text(SEFI_ATTENTION_BLOCKS),
                         anchor_names="celebrities", reg_weight=8e-4, adapter_scale=0.4)


def measure(setting: Setting, tiny: bool = False) -> dict:
    """One training pass (forward + backward) of ``setting`` on fake tensors: peak memory by kind and FLOPs."""
    import torch
    from torch._subclasses.fake_tensor import FakeTensorMode

    from bench.live_memory import LiveMemory
    from faceclip_core.dtypes import WEIGHT_DTYPES
    from faceclip_core.identity import TrainingProblem
    from faceclip_core.identity.cost import estimate_run
    from faceclip_core.identity.loop import backward_pass, draw_step, forward_loss, prepare

    training = boot_comfy()
    steps = 320
    config = _config(setting, steps)
    resolution = 64 if tiny else setting.resolution
    started = time.perf_counter()
    with torch.inference_mode(False), torch.enable_grad():
        with FakeTensorMode(allow_non_fake_inputs=True):
            unet, clip = _fake_models(training, tiny)
            models = training.training_models(unet, clip, config, resolution, setting.checkpointing,
                                              unet_copy=unet, text_dtype=WEIGHT_DTYPES[setting.dtype])
            # what loading does besides moving weights (fake ones cannot move): the compute-dtype object patch
            models.unet.patch_model(load_weights=False)
            tokenize = training.comfy_tokenizer(clip)
            face = torch.nn.functional.normalize(torch.randn(512), dim=0)
            latents = torch.zeros(2, 4, resolution // 8, resolution // 8)
            problem = TrainingProblem(latents=latents, text=models.text, denoiser=models.denoiser,
                                      tokenize=tokenize, attention=models.attention, face=face, device="cpu")
            prep = prepare(problem, config, 0)
        draws = draw_step(torch.Generator().manual_seed(0), config, prep, latents)  # real draws, as the loop's
        rows = slice(0, config.train.pass_size)
        trainable = sum(p.numel() for p in prep.params.trainable())
        modules = [models.unet.model, models.text_patcher.model]
        weights = [t for m in modules for t in (*m.parameters(), *m.buffers())]
        with FakeTensorMode(allow_non_fake_inputs=True):
            with LiveMemory([*weights, *prep.params.trainable()]) as memory, \
                    torch.autograd.graph.saved_tensors_hooks(*memory.saved_hooks()):
                fwd, loss, reg = forward_loss(problem, config, prep, latents, draws, rows, 0)
                backward_pass(problem, fwd, loss, reg, prep.params, torch.amp.GradScaler("cpu", enabled=False), {})
    optimizer_bytes = trainable * 4 * 2  # AdamW's two fp32 moments
    passes = -(-config.train.batch_size // config.train.pass_size)
    by_kind = {k: round(v / GIB, 3) for k, v in memory.peak_by_kind.items()}
    total = memory.peak_bytes + optimizer_bytes
    tflop_pass = memory.flops / 1e12
    model = estimate_run(config, resolution, setting.checkpointing) if not tiny else None
    return {
        "method": setting.method, "checkpointing": setting.checkpointing, "resolution": resolution,
        "dtype": setting.dtype, "micro_batch": config.train.pass_size, "batch_size": config.train.batch_size,
        "steps": steps, "peak_gib": round(total / GIB, 3), "device_gib": round(device_gib(total / GIB), 3),
        "peak_by_kind_gib": {**by_kind, "optimizer_state": round(optimizer_bytes / GIB, 4)},
        "largest_at_peak": memory.largest_at_peak(),
        "tflop_per_step": round(tflop_pass * passes, 3), "tflop_per_identity": round(tflop_pass * passes * steps, 1),
        "minutes": minutes_by_card(tflop_pass * passes, steps),
        "seconds_to_measure": round(time.perf_counter() - started),
        # the Train node's cost model (faceclip_core.identity.cost) for the same setting, to keep it honest
        "cost_model": None if model is None else {
            "peak_gib": round(model.peak_gib, 3), "tflop_per_step": round(model.tflop_per_step, 3),
            "peak_error": round(model.peak_gib / (total / GIB) - 1, 4),
            "tflop_error": round(model.tflop_per_step / (tflop_pass * passes) - 1, 4)},
    }


def node_defaults() -> list[Setting]:
    """The Train node's defaults (its recipe, checkpointing and micro-batch), per method and half dtype."""
    from faceclip_core.identity.recipes import DEFAULT_CHECKPOINTING, DEFAULT_RESOLUTION

    return [Setting(m, DEFAULT_CHECKPOINTING, DEFAULT_RESOLUTION, d, 0, 0) for m in METHODS for d in DTYPES]


def every_setting() -> list[Setting]:
    out = node_defaults()
    for method in METHODS:
        out.append(Setting(method, False, 1024, "bf16", 0, 0))
        out.append(Setting(method, True, 768, "bf16", 0, 0))
    out.append(Setting("ID-EA", True, 1024, "bf16", 1, 8))  # the paper's batch, one sample per pass
    out.append(Setting("ID-EA", True, 1024, "bf16", 8, 8))  # the paper's batch in one pass
    return out


def report(results: list[dict]) -> dict:
    defaults: dict[str, dict] = {}
    for r in results:
        if r.get("default"):
            d = defaults.setdefault(r["method"], {"peak_gib": {}, "device_gib": {}})
            d["peak_gib"][r["dtype"]] = r["peak_gib"]
            d["device_gib"][r["dtype"]] = r["device_gib"]
            d["tflop_per_step"] = r["tflop_per_step"]
            d["samples"] = r["steps"] * r["batch_size"]
            d["minutes"] = minutes_by_card(r["tflop_per_step"], r["steps"])
    return {"benchmark": "id_embedding_regime", "utilisation": UTILISATION, "cards": CARDS, "notes": NOTES,
            "cuda_overhead_gib": CUDA_OVERHEAD_GIB, "allocator_slack": ALLOCATOR_SLACK,
            "defaults": defaults, "settings": results}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--defaults", action="store_true", help="only the node's defaults (both methods, bf16, fp16)")
    ap.add_argument("--tiny", action="store_true", help="the tests' tiny UNet at 64 px (CI)")
    ap.add_argument("--compare", action="store_true",
                    help="the node's defaults in bf16 only, each against the node's cost model (CI)")
    a = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    defaults = node_defaults()
    settings = defaults if a.defaults or a.tiny or a.compare else every_setting()
    if a.tiny or a.compare:  # one dtype per method: SeFi-IDE in bf16, ID-EA in fp16 (tiny) or bf16 (compare)
        settings = [s for s in settings if (s.method, s.dtype) in
                    (("SeFi-IDE", "bf16"), ("ID-EA", "fp16" if a.tiny else "bf16"))]
    results = []
    for s in settings:
        r = measure(s, tiny=a.tiny)
        r["default"] = s in defaults
        print(json.dumps(r), file=sys.stderr, flush=True)
        results.append(r)
    print(json.dumps(report(results), indent=1))


if __name__ == "__main__":
    main()
