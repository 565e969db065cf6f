"""ID-embedding training benchmark: time per optimisation step and peak memory, per method. Prints JSON.

    python bench/train.py [--backend tiny|comfy|all] [--steps 4] [--warmup 1]

Backends (each method runs in its own subprocess, so peak memory is its own):
- ``tiny``: faceclip_core.identity's loop on the pure-PyTorch stand-ins of the core tests (tiny text stacks and
  denoiser): the loop's own overhead.
- ``comfy``: in-process ComfyUI (the test environment's, ``bash tests/run.sh``): the tiny SDXL-layout UNet with
  a random *full-size* SDXL CLIP-L + CLIP-G, driven through the same adapters the Train node uses, at 64 px.
  Every step runs the text encoders forward and backward (twice for SeFi-IDE's key/value split), which
  dominates on CPU.
- ``cuda`` (full-size random-weight SDXL UNet at 1024 px, bf16, gradient checkpointing): NOT written yet; it
  only prints a JSON line saying so. No GPU was lent to this task, so nothing was measured on one. The Train
  node itself runs on CUDA through ComfyUI's device handling and offers gradient checkpointing for the text
  encoders (not for the UNet).
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
METHODS = ("SeFi-IDE", "ID-EA")


def _config(method: str, steps: int, stages: int = 5):
    from faceclip_core.identity import IDEAConfig, MethodConfig, SeFiConfig, TrainConfig

    return MethodConfig(method, train=TrainConfig(steps=steps, lr=5e-3, seed=0, batch_size=1),
                        sefi=SeFiConfig(stages=stages), idea=IDEAConfig())


def _timed(problem, method: str, steps: int, warmup: int) -> dict:
    import torch

    from faceclip_core.identity import train_identity

    times: list[float] = []
    last = [time.perf_counter()]

    def progress(done: int, total: int, loss: float) -> None:
        now = time.perf_counter()
        times.append(now - last[0])
        last[0] = now

    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    last[0] = t0
    result = train_identity(problem, _config(method, steps + warmup), progress=progress)
    measured = times[warmup:]
    out = {"method": method, "steps_timed": len(measured),
           "seconds_per_step": round(sum(measured) / len(measured), 4),
           "first_step_seconds": round(times[0], 4), "total_seconds": round(time.perf_counter() - t0, 3),
           "final_loss": round(result.losses[-1], 5),
           "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}
    if torch.cuda.is_available():
        out["peak_cuda_allocated_bytes"] = torch.cuda.max_memory_allocated()
    return out


def run_tiny(method: str, steps: int, warmup: int) -> dict:
    import torch

    from tests.harness.identity_tiny import problem

    torch.set_num_threads(2)
    return {"backend": "tiny", "device": "cpu", **_timed(problem(method), method, steps, warmup)}


def _comfy_problem(method: str, models: Path, size: int, device_note: str):
    """The Train node's adapters over in-process ComfyUI objects (imports ComfyUI from the test environment)."""
    import importlib

    import torch

    sys.path.insert(0, str(REPO / "tests" / "harness"))
    import cpu_shims

    cpu_shims.install()
    comfy_dir = REPO / ".testenv" / "ComfyUI"
    sys.path.insert(0, str(comfy_dir))
    import comfy.cli_args

    if device_note == "cpu":
        comfy.cli_args.args.cpu = True
    import comfy.sd
    import comfy.model_management as mm

    sys.path.insert(0, str(REPO.parent))
    nodes_identity = importlib.import_module(f"{REPO.name}.nodes.identity")
    from faceclip_core.identity import TrainingAttention, TrainingProblem

    from tests.harness import sdxl_clip

    with torch.inference_mode():
        clip = comfy.sd.load_clip(ckpt_paths=[str(p) for p in sdxl_clip.write(models / "text_encoders")],
                                  clip_type=comfy.sd.CLIPType.STABLE_DIFFUSION)
        unet = comfy.sd.load_diffusion_model(str(models / "diffusion_models" / "tiny_sdxl_unet.safetensors"))
    with torch.inference_mode(False):
        patched = unet.clone(force_deepcopy=True)
        attention = None
        if method == "SeFi-IDE":
            attention = TrainingAttention(blocks=frozenset(_config(method, 1).sefi.attention_blocks))
            patched.set_model_attn2_patch(attention.attn2_patch)
            for block, number in _config(method, 1).sefi.attention_blocks:
                patched.set_model_attn2_replace(attention.attn2_replace, block, number)
        denoiser = nodes_identity.ComfyDenoiser(patched, size, size)
        g = torch.Generator().manual_seed(0)
        latents = torch.randn(2, 4, size // 8, size // 8, generator=g)
        face = torch.nn.functional.normalize(torch.randn(512, generator=g), dim=0)
        problem = TrainingProblem(latents=latents.to(denoiser.device), text=nodes_identity.comfy_text_encoder(clip),
                                  denoiser=denoiser, tokenize=nodes_identity.comfy_tokenizer(clip),
                                  attention=attention, face=face, device=denoiser.device)
    del mm
    return problem


def run_comfy(method: str, steps: int, warmup: int, size: int = 64) -> dict:
    import torch

    from tests.harness import tiny_models

    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory(prefix="bench_train_models_") as folder:  # ~2 GB of random weights
        models = Path(folder)
        tiny_models.write(str(REPO / ".testenv" / "ComfyUI"), str(models))
        problem = _comfy_problem(method, models, size, "cpu")
        with torch.inference_mode(False), torch.enable_grad():
            timed = _timed(problem, method, steps, warmup)
    return {"backend": "comfy_tiny_unet_full_sdxl_clip", "device": "cpu", "resolution": size, **timed}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backend", choices=("tiny", "comfy", "all", "cuda"), default="all")
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--one", choices=METHODS, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.one:  # child process: one backend, one method
        run = {"tiny": run_tiny, "comfy": run_comfy}[a.backend]
        print(json.dumps(run(a.one, a.steps, a.warmup)))
        return
    if a.backend == "cuda":
        print(json.dumps({"backend": "cuda", "measured": False,
                          "note": "full-size SDXL UNet at 1024 px in bf16 with gradient checkpointing: not "
                                  "implemented as a benchmark run yet and never measured (no GPU was lent)"}))
        return
    backends = ("tiny", "comfy") if a.backend == "all" else (a.backend,)
    results = []
    for backend in backends:
        for method in METHODS:
            cmd = [sys.executable, __file__, "--backend", backend, "--one", method, "--steps", str(a.steps),
                   "--warmup", str(a.warmup)]
            done = subprocess.run(cmd, capture_output=True, text=True, check=False)
            lines = [ln for ln in done.stdout.splitlines() if ln.startswith("{")]
            results.append(json.loads(lines[-1]) if done.returncode == 0 and lines else
                           {"backend": backend, "method": method, "error": done.stderr[-2000:]})
    print(json.dumps({"benchmark": "id_embedding_training", "steps": a.steps, "warmup": a.warmup,
                      "gpu": "not measured: no GPU was lent to this task", "results": results}, indent=1))


if __name__ == "__main__":
    main()
