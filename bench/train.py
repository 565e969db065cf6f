"""ID-embedding training benchmark (SeFi-IDE, ID-EA): time per step, time per identity and peak memory, or the
training dynamics (loss terms, token gradients per dtype). Prints JSON.

    python bench/train.py [--backend tiny|cuda] [--tiny] [--steps 3] [--warmup 1] [--batch 0] [--models DIR]
    python bench/train.py --report dynamics [--backend cuda [--tiny]]

Backends (each method runs in its own subprocess, so peak memory is its own):
- ``tiny``: faceclip_core.identity's loop on the pure-PyTorch stand-ins of the core tests: the loop's overhead.
- ``cuda``: the real regime, through in-process ComfyUI (COMFYUI_PATH, or the test environment's after
  ``bash tests/run.sh``) and the Train node's own adapters: a random-weight full-size SDXL UNet (2.6 B
  parameters) and both full-size text encoders at 1024 px on the GPU, training dtype auto (bf16 where supported,
  else fp16 with loss scaling), each method without and with gradient checkpointing, at the node's default
  recipe (quick: batch 1, 320 steps; ``--batch 8`` is ID-EA's paper recipe). Prints seconds per step, steps,
  time per identity and peak VRAM (bench/regime.py estimates the same on a CPU). ``--tiny`` runs the same code
  with the tests' tiny UNet at 64 px on whatever device there is (CI runs it on the CPU so it cannot rot). On a
  GPU machine with torch and no network: ``COMFYUI_PATH=/path/to/ComfyUI python bench/train.py --backend cuda``
  (a few minutes on one H100/H200).

``--report dynamics``: with the tiny stand-ins, both methods' loss terms at steps 0, 50 and 100 and the tokens'
gradient norm, direction (cosine to fp32) and zero fraction per training dtype, with and without fp16 loss
scaling, at 128x128 latents; with ``--backend cuda`` the same gradient comparison through ComfyUI's SDXL UNet
(full size at 1024 px on a GPU; ``--tiny``: the tiny UNet at 256 px on the CPU).
"""
from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from bench.comfy_path import default_comfyui  # noqa: E402

METHODS = ("SeFi-IDE", "ID-EA")
GIB = 2 ** 30
RECIPE_STEPS = 320  # the Train node's default steps (both methods)

# The full-size SDXL UNet (ComfyUI detects SDXL from these shapes).
FULL_UNET = dict(
    image_size=32, in_channels=4, out_channels=4, model_channels=320, num_res_blocks=[2, 2, 2],
    channel_mult=[1, 2, 4], transformer_depth=[0, 0, 2, 2, 10, 10], transformer_depth_middle=10,
    transformer_depth_output=[0, 0, 0, 2, 2, 2, 10, 10, 10], use_linear_in_transformer=True, context_dim=2048,
    adm_in_channels=2816, num_classes="sequential", use_spatial_transformer=True, legacy=False,
    num_head_channels=64, num_heads=-1, use_temporal_attention=False, use_temporal_resblock=False,
)


def _config(method: str, steps: int, batch: int = 0, precision: str = "fp32", **sefi):
    """The Train node's default recipe for ``method`` (``batch`` 0: the recipe's)."""
    from faceclip_core.identity import IDEAConfig, MethodConfig, SeFiConfig, TrainConfig
    from faceclip_core.identity.recipes import DEFAULT_RECIPE, recipe

    chosen = recipe(DEFAULT_RECIPE, method)
    return MethodConfig(method, train=TrainConfig(steps=steps, lr=chosen.lr, seed=0,
                                                  batch_size=batch or chosen.batch_size, precision=precision),
                        sefi=SeFiConfig(**sefi), idea=IDEAConfig(anchor_names="celebrities"))


def _timed(problem, config, warmup: int) -> dict:
    import torch

    from faceclip_core.identity import train_identity

    times: list[float] = []
    last = [time.perf_counter()]

    def progress(done: int, total: int, stats) -> None:
        now = time.perf_counter()
        times.append(now - last[0])
        last[0] = now

    cuda = torch.cuda.is_available() and str(problem.device).startswith("cuda")
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    last[0] = t0
    result = train_identity(problem, config, progress=progress)
    measured = times[warmup:] or times
    per_step = sum(measured) / len(measured)
    out = {"method": config.method, "precision": config.train.precision, "batch_size": config.train.batch_size,
           "steps_timed": len(measured), "seconds_per_step": round(per_step, 4),
           "first_step_seconds": round(times[0], 4), "final": result.history[-1],
           "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GIB, 3)}
    if cuda:
        out["peak_vram_gib"] = round(torch.cuda.max_memory_allocated() / GIB, 3)
    return out


def run_tiny(method: str, steps: int, warmup: int, batch: int) -> dict:
    import torch

    from tests.harness.identity_tiny import problem

    torch.set_num_threads(2)
    config = _config(method, steps + warmup, batch, attention_blocks=(("middle", 0),))
    return {"backend": "tiny", "device": "cpu", **_timed(problem(method), config, warmup)}


@functools.lru_cache(maxsize=1)
def _boot_comfy(cpu: bool):
    """Import ComfyUI in this process (the test environment's, or COMFYUI_PATH); returns this pack's training
    adapters module and ComfyUI's folder."""
    import importlib

    import tests.harness.sdxl_clip  # noqa: F401  (before ComfyUI's own tests/ folder joins sys.path)
    import tests.harness.tiny_models  # noqa: F401

    sys.path.insert(0, str(REPO / "tests" / "harness"))
    import cpu_shims

    if "faceclip_cpu_shims" not in sys.modules:  # the test venv installs the same shims at start-up (a .pth)
        cpu_shims.install()  # only acts where the torchvision/torchaudio wheels cannot load (CPU torch)
    comfy_dir = default_comfyui()
    if not (comfy_dir / "comfy").is_dir():
        sys.exit(f"no ComfyUI at {comfy_dir}: run `bash tests/run.sh` once or set COMFYUI_PATH")
    sys.path.insert(0, str(comfy_dir))
    import comfy.cli_args

    if cpu:
        comfy.cli_args.args.cpu = True
        comfy.cli_args.args.fp32_text_enc = True  # see tests/harness/server_env.py: the same numbers, faster
    sys.path.insert(0, str(REPO.parent))
    return importlib.import_module(f"{REPO.name}.nodes.sdxl_training"), comfy_dir


def _random_unet(models: Path, full: bool) -> Path:
    """A random-weight SDXL UNet file (fp16), written once per folder: full size (2.6 B parameters, 5.1 GB) or
    the tests' tiny one; the same code for both, so CI keeps the GPU path from rotting."""
    import math

    import comfy.ops
    import torch
    from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel
    from safetensors.torch import save_file

    from tests.harness import tiny_models

    path = models / ("sdxl_unet_random.safetensors" if full else "sdxl_unet_random_tiny.safetensors")
    if path.is_file():
        return path
    config = FULL_UNET if full else tiny_models.UNET_CONFIG
    meta = UNetModel(**config, device=torch.device("meta"), operations=comfy.ops.disable_weight_init)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    g = torch.Generator(device).manual_seed(0)
    sd = {}
    for key, param in meta.state_dict().items():
        shape = tuple(param.shape)
        if len(shape) <= 1:  # biases at zero, norm scales at one: finite activations
            t = torch.zeros(shape) if key.endswith("bias") else torch.ones(shape)
        else:
            t = torch.randn(shape, generator=g, device=device) / math.sqrt(math.prod(shape[1:]))
        sd[key] = t.to(torch.float16).cpu().contiguous()
    models.mkdir(parents=True, exist_ok=True)
    save_file(sd, str(path))
    return path


def comfy_problem(training, clip, unet, method: str, resolution: int, precision: str, checkpointing: bool,
                  config):
    """The Train node's adapters over in-process ComfyUI objects: fresh training copies, loaded as the node loads
    them (one managed call with the step's memory reserved)."""
    import torch

    from faceclip_core.identity import TrainingProblem
    from faceclip_core.identity.cost import estimate_run

    with torch.inference_mode(False):
        models = training.training_models(unet, clip, config, resolution, checkpointing)
        estimate = estimate_run(config, resolution, checkpointing)
        models.load(estimate.reserve_bytes)
        g = torch.Generator().manual_seed(0)
        latents = torch.randn(2, 4, resolution // 8, resolution // 8, generator=g)
        face = torch.nn.functional.normalize(torch.randn(512, generator=g), dim=0)
        return TrainingProblem(latents=latents.to(models.device), text=models.text, denoiser=models.denoiser,
                               tokenize=training.comfy_tokenizer(clip), attention=models.attention, face=face,
                               device=models.device, original_sizes=torch.full((2,), resolution))


def run_comfy(method: str, steps: int, warmup: int, batch: int, full: bool, models_dir: str | None = None,
              precision: str = "auto", checkpointing: tuple[bool, ...] = (False, True)) -> list[dict]:
    """One method, without and/or with gradient checkpointing, in this process (CLIP and UNet loaded once;
    peak VRAM is measured per setting, peak RSS is the process's)."""
    import gc

    import torch

    cpu = not torch.cuda.is_available()
    if cpu:
        torch.set_num_threads(os.cpu_count() or 2)
    resolution = 1024 if full else 64
    results = []
    with tempfile.TemporaryDirectory(prefix="bench_train_models_") as folder:
        models = Path(models_dir or folder)  # random weights are written once per folder and reused
        training, _ = _boot_comfy(cpu)
        import comfy.model_management as mm
        import comfy.sd

        from tests.harness import sdxl_clip

        precision = training.resolve_training_dtype(precision, mm.get_torch_device())
        config = _config(method, steps + warmup, batch, precision)
        unet_path = _random_unet(models, full)
        with torch.inference_mode():
            clip = comfy.sd.load_clip(ckpt_paths=[str(p) for p in sdxl_clip.write(models / "text_encoders")],
                                      clip_type=comfy.sd.CLIPType.STABLE_DIFFUSION)
            unet = comfy.sd.load_diffusion_model(str(unet_path))
        for ckpt in checkpointing:
            problem = comfy_problem(training, clip, unet, method, resolution, precision, ckpt, config)
            with torch.inference_mode(False), torch.enable_grad():
                timed = _timed(problem, config, warmup)
            del problem
            gc.collect()
            mm.soft_empty_cache()
            timed["steps_per_identity"] = RECIPE_STEPS
            timed["minutes_per_identity"] = round(timed["seconds_per_step"] * timed["steps_per_identity"] / 60, 2)
            results.append({"backend": "cuda_full_sdxl" if full else "tiny_unet_full_sdxl_clip",
                            "device": "cpu" if cpu else torch.cuda.get_device_name(), "resolution": resolution,
                            "gradient_checkpointing": ckpt, **timed})
    return results


_DTYPE_RUNS = (("fp32", "fp32", 2.0 ** 16), ("bf16", "bf16", 2.0 ** 16), ("fp16_loss_scaling", "fp16", 2.0 ** 16),
               ("fp16_no_scaling", "fp16", 1.0))


def _compare_gradients(runs: dict) -> dict:
    """Per dtype: the tokens' gradient norm, its cosine to the fp32 gradient and its fraction of exact zeros."""
    import torch.nn.functional as F

    base = runs["fp32"][1]
    return {name: {"norm": stats.grad_norm, "cosine_to_fp32": round(float(F.cosine_similarity(flat, base, dim=0)), 6),
                   "zero_fraction": float((flat == 0).float().mean()), "skipped": stats.skipped}
            for name, (stats, flat) in runs.items()}


def _token_grads(grads: dict):
    """The learned tokens' gradients (not ID-EA's training-only adapter's) as one vector."""
    import torch

    return torch.cat([g.reshape(-1) for name, g in sorted(grads.items())
                      if name.startswith(("tokens_", "base.", "delta."))])


def dynamics() -> dict:
    """Loss terms over 100 steps and the tokens' gradients per training dtype on the tiny stand-ins (CPU)."""
    import torch

    from faceclip_core.identity import token_gradients, train_identity
    from tests.harness.identity_tiny import problem

    torch.set_num_threads(2)
    dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
    out: dict = {"loss_terms": {}, "token_gradients": {}}
    for method in METHODS:
        config = _config(method, 101, attention_blocks=(("middle", 0),))
        history = train_identity(problem(method), config).history
        out["loss_terms"][method] = {f"step_{s}": {k: history[s][k] for k in ("loss", "denoising", "attention",
                                                                            "regulariser")} for s in (0, 50, 100)}
        runs = {}
        for name, precision, scale in _DTYPE_RUNS:
            cfg = _config(method, 1, precision=precision, attention_blocks=(("middle", 0),))
            cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, loss_scale=scale))
            stats, grads = token_gradients(problem(method, latent=128, dtype=dtypes[precision]), cfg)
            runs[name] = (stats, _token_grads(grads))
        out["token_gradients"][method] = _compare_gradients(runs)
    return {"benchmark": "id_embedding_dynamics", "model": "tiny stand-ins",
            "latent_for_gradients": "128x128 (SDXL at 1024 px)", **out}


def comfy_dynamics(full: bool, models_dir: str | None, method: str = "ID-EA") -> dict:
    """The tokens' first-step gradient per training dtype through ComfyUI's SDXL UNet: full size at 1024 px on the
    GPU, or the tiny UNet at 256 px on the CPU (``--tiny``). One fixed batch, the same seed for every dtype."""
    import torch

    from faceclip_core.identity import token_gradients

    cpu = not torch.cuda.is_available()
    resolution = 1024 if full else 256
    runs = {}
    with tempfile.TemporaryDirectory(prefix="bench_train_models_") as folder:
        models = Path(models_dir or folder)
        training, _ = _boot_comfy(cpu)
        import comfy.sd

        from tests.harness import sdxl_clip

        unet_path = _random_unet(models, full)
        with torch.inference_mode():
            clip = comfy.sd.load_clip(ckpt_paths=[str(p) for p in sdxl_clip.write(models / "text_encoders")],
                                      clip_type=comfy.sd.CLIPType.STABLE_DIFFUSION)
            unet = comfy.sd.load_diffusion_model(str(unet_path))
        for name, precision, scale in _DTYPE_RUNS:
            cfg = _config(method, 1, 1, precision)
            cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, loss_scale=scale))
            problem = comfy_problem(training, clip, unet, method, resolution, precision, False, cfg)
            with torch.inference_mode(False), torch.enable_grad():
                stats, grads = token_gradients(problem, cfg)
            runs[name] = (stats, _token_grads(grads))
    return {"benchmark": "id_embedding_gradients_by_dtype", "method": method, "resolution": resolution,
            "model": "full-size random SDXL UNet" if full else "tiny SDXL-layout UNet",
            "device": "cpu" if cpu else torch.cuda.get_device_name(), "token_gradients": _compare_gradients(runs)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backend", choices=("tiny", "cuda"), default="tiny")
    ap.add_argument("--tiny", action="store_true", help="cuda backend at test size (tiny UNet, 64 px, any device)")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--batch", type=int, default=0, help="samples per step; 0 = each method's default")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--report", choices=("speed", "dynamics"), default="speed")
    ap.add_argument("--models", help="a folder for the random model files, kept and reused (default: temporary)")
    ap.add_argument("--checkpointing", choices=("both", "off", "on"), default="both",
                    help="cuda backend: gradient checkpointing settings to measure")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.report == "dynamics":
        report = dynamics() if a.backend == "tiny" else comfy_dynamics(not a.tiny, a.models)
        print(json.dumps(report, indent=1))
        return
    if a.one:  # child process: one backend, one method
        if a.backend == "tiny":
            results = [run_tiny(a.one, a.steps, a.warmup, a.batch)]
        else:
            settings = {"both": (False, True), "off": (False,), "on": (True,)}[a.checkpointing]
            results = run_comfy(a.one, a.steps, a.warmup, a.batch, full=a.backend == "cuda" and not a.tiny,
                                models_dir=a.models, checkpointing=settings)
        print(json.dumps(results))
        return
    results = []
    for method in a.methods.split(","):
        cmd = [sys.executable, __file__, "--backend", a.backend, "--one", method, "--steps", str(a.steps),
               "--warmup", str(a.warmup), "--batch", str(a.batch)]
        cmd += ["--tiny"] if a.tiny else []
        cmd += ["--models", a.models] if a.models else []
        cmd += ["--checkpointing", a.checkpointing]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        lines = [ln for ln in done.stdout.splitlines() if ln.startswith("[")]
        results += (json.loads(lines[-1]) if done.returncode == 0 and lines else
                    [{"backend": a.backend, "method": method, "error": done.stderr[-3000:]}])
    print(json.dumps({"benchmark": "id_embedding_training", "steps": a.steps, "warmup": a.warmup,
                      "results": results}, indent=1))
    if any("error" in r for r in results):
        sys.exit(1)


if __name__ == "__main__":
    main()
