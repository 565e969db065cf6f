"""The pack's GPU check in one command; prints one JSON object (and writes $OUT/gpu_check.json when OUT is set).

On a CUDA machine that has torch but no network and no ComfyUI:

    bash bench/gpu_bundle.sh     # here, with network: .gpu_bundle/ = ComfyUI 0.30.0 source + the wheels it lacks
    bash bench/gpu_check.sh      # there: installs the bundle under /tmp, then runs this script (under 9 minutes)

At test size on the CPU (tests/e2e/test_gpu_check.py runs this, so the GPU command cannot rot), with the test
environment's ComfyUI (`bash tests/run.sh` provisions it) or $COMFYUI_PATH:

    .testenv/venv/bin/python bench/gpu_check.py --tiny --device cpu

Sections (each a key of the JSON; one that fails records {"error": ...} and the others still run; each runs in a
child process with what is left of --budget-s, so a crash or a hang costs only its own section):

- ``models``: random weights written once into the models folder: the full-size FaceCLIP-SDXL encoder (bf16, as
  released; bench/encoder.py's generator), a full-size SDXL UNet (fp16, 2.6 B parameters; bench/train.py's
  generator, drawn on the GPU) and a full-size SDXL VAE. ``--tiny``: the tests' tiny encoder, UNet and VAE.
- ``encoder``: faceclip_core.load_encoder on the device with weight dtype fp32, bf16 and fp16 (bench/encoder.py's
  worker): load time, median encode time for B=1 and B=4 (CUDA-synchronised, after a warm-up), peak VRAM, and the
  parity of each dtype's outputs against fp32's for the same inputs (max abs, max abs relative to the fp32 output's
  largest value, relative L2). The fp32 row compares fp32's warm-up encode with its last timed one: a repeat, so 0.
- ``graph``: the one-photo workflow at 864x1152 (50 steps, CFG 5) in a real ComfyUI server on the device, once per
  memory mode, through bench/e2e.py: KSampler time with FaceCLIP's conditioning against a precomputed random one
  (their ratio should be about 1) and, from a probe node wired between KSampler and VAEDecode
  (FaceCLIPTest_LoadedModels), what the model manager holds once the UNet has loaded and sampled: the encoder's
  and the UNet's size and loaded bytes (``encoder_after_unet`` summarises: whether the encoder's VRAM was
  released, and whether anything needed it). Modes: ``default`` (ComfyUI's default, which is dynamic VRAM on
  NVIDIA GPUs) and ``lowvram`` (``--lowvram --disable-dynamic-vram``: ComfyUI ignores --lowvram under dynamic
  VRAM; in that mode ComfyUI also runs text encoders, and so FaceCLIP, on the CPU) and, on CUDA, ``tight``
  (dynamic VRAM with all but TIGHT_USABLE_GIB of the GPU reserved by --reserve-vram: on a large GPU nothing would
  otherwise need the encoder's memory, so this is the mode where it must be released). On the CPU ComfyUI refuses
  --lowvram beside --cpu, so there the second mode only exercises the path (a second server, same settings).
- ``facet5``: FaceT5-FLUX's encoder, the same report as ``encoder`` (one timed run per dtype) on a random file in
  the released layout (12.5 GB bf16, written once into the models folder; fp32 needs 23.7 GB on the device).
- ``train``: bench/train.py's cuda backend (the ID-embedding training bench, full-size SDXL at 1024 px), a few
  steps with gradient checkpointing, reusing the models folder; skipped when less than --train-min-s is left.
  ``--tiny``: its tiny backend (the cuda backend at test size is tests/e2e/test_bench_train.py's).

Top level: device, torch and CUDA versions, the options, and the wall time (``setup_s``: the shell wrapper's).
The bundle (47 MiB; see bench/gpu_bundle.sh for what is in it and why) lacks ComfyUI's frontend, workflow-template
and docs packages (a headless server needs none of them: the server gets --front-end-root at an empty folder when
the frontend package is missing), and its comfy-kitchen is the real 0.2.26 package without its compiled CUDA/HIP
kernels (ComfyUI imports it unconditionally but uses it only for fp8/fp4 and fused-op models; none runs here).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from bench.comfy_path import default_comfyui  # noqa: E402

logger = logging.getLogger(__name__)
GIB = 2 ** 30
SECTIONS = ("encoder", "graph", "facet5", "train")
MODES = {"default": [], "lowvram": ["--lowvram", "--disable-dynamic-vram"], "tight": ["--reserve-vram"]}
# "tight" (CUDA only): dynamic VRAM with all but this much of the GPU reserved, so the UNet (5.1 GB in fp16) and
# the encoder (3.2 GB) cannot both stay loaded with the sampler's working memory: the encoder must give way.
TIGHT_USABLE_GIB = 10
ENCODER_FILE = "faceclip_encoder_random.safetensors"
FACET5_FILE = "facet5_encoder_random.safetensors"  # written by the facet5 section when it runs
VAE_FILE = "sdxl_vae_random.safetensors"


@dataclasses.dataclass(frozen=True)
class Sizes:
    """What --tiny changes."""

    width: int
    height: int
    steps: int
    runs: int
    encoder_runs: int
    batches: tuple[int, ...]  # encode batch sizes timed
    train_args: tuple[str, ...]  # bench/train.py's


FULL = Sizes(width=864, height=1152, steps=50, runs=2, encoder_runs=3, batches=(1, 4),
             train_args=("--backend", "cuda", "--steps", "2", "--warmup", "1", "--methods", "SeFi-IDE,ID-EA",
                         "--checkpointing", "on"))
# bench/train.py's cuda backend at test size needs the full-size SDXL CLIP (over a minute per step on 2 CPU cores);
# tests/e2e/test_bench_train.py keeps that path from rotting, so --tiny runs the tiny backend: same script and JSON.
TINY = Sizes(width=48, height=64, steps=1, runs=1, encoder_runs=1, batches=(1, 2),
             train_args=("--backend", "tiny", "--steps", "1", "--warmup", "0", "--methods", "SeFi-IDE"))


def comfyui_dir(arg: str | None) -> Path:
    return (Path(arg) if arg else default_comfyui()).resolve()


def boot_comfy(comfy_dir: Path, cpu: bool) -> None:
    """Import ComfyUI's modules in this process (model shapes only; no server)."""
    import tests.harness.tiny_models  # noqa: F401  (before ComfyUI's own tests/ folder joins sys.path)

    sys.path.insert(0, str(comfy_dir))
    import comfy.cli_args

    comfy.cli_args.args.cpu = cpu  # before comfy.model_management is imported


# ---------------------------------------------------------------- child sections (each its own process)


def device_info(device: str) -> dict:
    import torch

    info = {"torch": torch.__version__, "cuda": torch.version.cuda, "device": device,
            "python": platform.python_version(), "cpu_count": os.cpu_count()}
    if device == "cuda":
        props = torch.cuda.get_device_properties(0)
        info.update(device_name=props.name, device_memory_gib=round(props.total_memory / GIB, 1),
                    cudnn=torch.backends.cudnn.version())
    else:
        info["device_name"] = platform.processor() or platform.machine()
    return info


def write_full_vae(path: Path) -> None:
    """A random full-size SDXL VAE (the tests' tiny one narrows the decoder; this keeps its width, 128)."""
    import torch
    from comfy.ldm.modules.diffusionmodules.model import Decoder, Encoder
    from safetensors.torch import save_file

    from tests.harness.tiny_models import VAE_CONFIG, _random_like

    with torch.device("meta"):
        shapes = {f"encoder.{k}": tuple(v.shape) for k, v in Encoder(**VAE_CONFIG).state_dict().items()}
        shapes.update({f"decoder.{k}": tuple(v.shape) for k, v in Decoder(**VAE_CONFIG).state_dict().items()})
    shapes.update({"quant_conv.weight": (8, 8, 1, 1), "quant_conv.bias": (8,),
                   "post_quant_conv.weight": (4, 4, 1, 1), "post_quant_conv.bias": (4,)})
    save_file(_random_like(shapes, 0), str(path), metadata={"note": "random SDXL VAE for benchmarking"})


def section_models(a: argparse.Namespace) -> dict:
    """Random model files, written once per models folder."""
    from bench import encoder as encoder_bench
    from bench import train as train_bench

    models = Path(a.models)
    models.mkdir(parents=True, exist_ok=True)
    out = device_info(a.device)
    encoder_path = models / ENCODER_FILE
    t0 = time.perf_counter()
    if not encoder_path.is_file():
        tmp = encoder_path.with_suffix(".tmp")
        if a.tiny:
            from tests.harness import tiny_faceclip

            tiny_faceclip.write(tmp)
        else:
            encoder_bench.make_checkpoint(tmp, shared_vit=False)
        tmp.replace(encoder_path)
    out["encoder_file_gb"] = round(encoder_path.stat().st_size / 1e9, 3)
    out["encoder_write_s"] = round(time.perf_counter() - t0, 1)
    if a.tiny:
        return out  # the graph uses the tests' tiny UNet and VAE; bench/train.py writes its own tiny UNet
    boot_comfy(comfyui_dir(a.comfyui), a.device == "cpu")
    t0 = time.perf_counter()
    unet = train_bench._random_unet(models, full=True)  # drawn on the GPU; bench/train.py --models reuses it
    out["unet_file_gb"] = round(unet.stat().st_size / 1e9, 3)
    out["unet_write_s"] = round(time.perf_counter() - t0, 1)
    vae = models / VAE_FILE
    if not vae.is_file():
        write_full_vae(vae)
    out["vae_file_gb"] = round(vae.stat().st_size / 1e9, 3)
    return out


def diff_stats(out, ref) -> dict:
    """max |out - ref|, that relative to max |ref|, and ||out - ref|| / ||ref|| (all floats; nan if non-finite)."""
    d = (out - ref).abs()
    scale = float(ref.abs().max()) or 1.0
    return {"max_abs": float(d.max()), "max_rel": float(d.max()) / scale,
            "rel_l2": float((out - ref).norm() / (ref.norm() or 1.0))}


def encoder_report(a: argparse.Namespace, path: Path, variant: str = "sdxl", t5_tokenizer: str | None = None,
                   runs_per_dtype: int | None = None) -> dict:
    """Each weight dtype in turn in this process (one CUDA context; peak VRAM reset per dtype): load time, encode
    latency per batch size and peak memory (bench/encoder.py's worker), and each dtype's outputs against fp32's."""
    import gc

    import torch

    from bench import encoder as encoder_bench

    sizes = TINY if a.tiny else FULL
    batches = list(sizes.batches)
    timed = runs_per_dtype or sizes.encoder_runs
    runs: dict[str, dict] = {}
    outputs: dict[str, dict] = {}
    for dtype in ("fp32", "bf16", "fp16"):
        store: dict = {}
        try:
            runs[dtype] = encoder_bench.worker(str(path), dtype, a.device, timed, batches, outputs=store,
                                               variant=variant, t5_tokenizer=t5_tokenizer)
        except Exception as exc:  # one dtype failing (say, fp16 overflowing) must not hide the others
            logger.exception("encoder %s failed", dtype)
            runs[dtype] = {"error": f"{type(exc).__name__}: {exc}"}
        outputs[dtype] = store
        gc.collect()
        if a.device == "cuda":
            torch.cuda.empty_cache()
    parity: dict[str, dict] = {}
    reference = outputs.get("fp32", {})
    for dtype, store in outputs.items():
        if not store or not reference:
            continue
        parity[dtype] = {}
        for b in batches:
            ref_emb, ref_pooled = reference[b]["last"]
            emb, pooled = store[b]["warmup" if dtype == "fp32" else "last"]
            parity[dtype][f"b{b}"] = {"embeddings": diff_stats(emb, ref_emb), "pooled": diff_stats(pooled, ref_pooled)}
    return {"runs": runs, "parity_vs_fp32": parity, "batches": batches, "timed_runs": timed}


def section_encoder(a: argparse.Namespace) -> dict:
    """FaceCLIP-SDXL's encoder (the file section_models wrote)."""
    out = encoder_report(a, Path(a.models) / ENCODER_FILE)
    out["file"] = "tiny random encoder" if a.tiny else "full-size random encoder (bf16 file)"
    return out


def section_facet5(a: argparse.Namespace) -> dict:
    """FaceT5-FLUX's encoder: a random file in the released layout (12.5 GB bf16 at full size), written once into
    the models folder, then the same report as the SDXL encoder's (fp32 needs 23.7 GB of device memory)."""
    from bench import encoder as encoder_bench

    path = Path(a.models) / FACET5_FILE
    out: dict = {}
    if not path.is_file():
        tmp = path.with_suffix(".tmp")
        out["checkpoint"] = (encoder_bench.make_tiny_checkpoint(tmp, "facet5") if a.tiny
                             else encoder_bench.make_facet5_checkpoint(tmp))
        tmp.replace(path)
    out["file_gb"] = round(path.stat().st_size / 1e9, 3)
    tokenizer = comfyui_dir(a.comfyui) / "comfy" / "text_encoders" / "t5_tokenizer" / "tokenizer.json"
    out.update(encoder_report(a, path, "facet5", str(tokenizer), runs_per_dtype=1 if not a.tiny else None))
    out["file"] = "tiny random FaceT5 encoder" if a.tiny else "full-size random FaceT5 encoder (bf16 file)"
    return out


def add_probe(graph: dict, name: str) -> None:
    """FaceCLIPTest_LoadedModels between KSampler and VAEDecode (given the FACECLIP where the graph has one)."""
    from faceclip_headless.workflow import find_nodes

    (sampler,) = find_nodes(graph, "KSampler")
    (decode,) = find_nodes(graph, "VAEDecode")
    inputs: dict = {"latent": [sampler, 0]}
    loaders = find_nodes(graph, "FaceCLIPLoader")
    if loaders:
        inputs["faceclip"] = [loaders[0], 0]
    graph["probe"] = {"class_type": "FaceCLIPTest_LoadedModels", "inputs": inputs}
    graph[decode]["inputs"]["samples"] = ["probe", 0]


def encoder_after_unet(state: dict) -> dict:
    """Once the UNet has loaded and sampled: the encoder's and the UNet's loaded bytes and a verdict."""
    fc = state.get("faceclip") or {}
    unets = [m for m in state["models"] if m["diffusion"]]
    unet = unets[0] if unets else {}
    out = {"encoder_size": fc.get("size"), "encoder_loaded": fc.get("loaded"), "encoder_held": fc.get("held"),
           "encoder_patcher": fc.get("patcher"), "encoder_load_device": fc.get("load_device"),
           "unet_model": unet.get("model"), "unet_patcher": unet.get("patcher"), "unet_size": unet.get("size"),
           "unet_loaded": unet.get("loaded"), "device_free": state.get("free_bytes"),
           "device_total": state.get("total_bytes"), "device_allocated": state.get("allocated_bytes")}
    loaded, unet_full = fc.get("loaded") or 0, unet.get("loaded") == unet.get("size")
    out["encoder_released"] = loaded == 0
    if not fc:
        out["verdict"] = "no encoder in this graph"
    elif fc.get("load_device") == "cpu" or state.get("device") == "cpu":
        out["verdict"] = "encoder on the CPU: nothing to release"
    elif loaded == 0:
        out["verdict"] = "released"
    elif unet_full:
        out["verdict"] = "kept: the encoder and the whole UNet fit on the device"
    else:
        out["verdict"] = "KEPT WHILE THE UNET IS ONLY PARTLY LOADED"
    return out


def link(target: Path, name: Path) -> None:
    name.unlink(missing_ok=True)
    name.symlink_to(target)


def frontend_args(work: Path) -> list[str]:
    import importlib.util

    if importlib.util.find_spec("comfyui_frontend_package") is not None:
        return []
    root = work / "frontend"
    root.mkdir(parents=True, exist_ok=True)
    (root / "index.html").write_text("<!doctype html><title>headless ComfyUI (gpu_check)</title>\n")
    return ["--front-end-root", str(root)]


def tight_reserve_gib() -> int:
    import torch

    return max(0, int(torch.cuda.get_device_properties(0).total_memory / GIB) - TIGHT_USABLE_GIB)


def section_graph(a: argparse.Namespace) -> dict:
    """One server per memory mode over one base folder (tiny models from the harness, full-size ones linked)."""
    from bench import e2e
    from faceclip_headless.client import ComfyClient
    from faceclip_headless.server import ComfyServer
    from tests.harness.server_env import prepare_base, server_config

    sizes = TINY if a.tiny else FULL
    work, models, comfy = Path(a.work) / "graph", Path(a.models), comfyui_dir(a.comfyui)
    shutil.rmtree(work, ignore_errors=True)  # a fresh base and mounts on every run
    logs = Path(a.work) / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    base = prepare_base(work / "base", comfy)
    link(models / ENCODER_FILE, base / "models" / "faceclip" / "faceclip_sdxl_encoder.safetensors")
    if not a.tiny:
        link(models / "sdxl_unet_random.safetensors", base / "models" / "diffusion_models" /
             "faceclip_sdxl_unet.safetensors")
        link(models / VAE_FILE, base / "models" / "vae" / "sdxl_vae.safetensors")
    out: dict = {"width": sizes.width, "height": sizes.height, "steps": sizes.steps, "runs": sizes.runs,
                 "workflow": "workflows/1 - Portrait from one photo.json", "modes": {}}
    for mode in a.modes.split(","):
        config = server_config(base, comfy, work / f"mount_{mode}")
        extra = list(config.extra_args) if a.device == "cpu" else []  # on a GPU: ComfyUI's own dtype policy
        memory = [arg for arg in MODES[mode] if a.device != "cpu" or arg != "--lowvram"]  # exclusive with --cpu
        if mode == "tight":
            memory.append(str(tight_reserve_gib()))
        config = dataclasses.replace(config, cpu=a.device == "cpu", log_path=logs / f"comfyui_{mode}.log",
                                     extra_args=extra + memory + frontend_args(work) + ["--disable-api-nodes"])
        t0 = time.perf_counter()
        try:
            with ComfyServer(config) as server:
                started = time.perf_counter() - t0
                client = ComfyClient(server.url, timeout=3600)
                photo = e2e.upload_photo(client, work / "gpu_check_face.png")
                report = e2e.measure(client, photo, sizes.width, sizes.steps, sizes.runs, sizes.height,
                                     extend=add_probe)
                report["server_peak_rss_gib"] = round((e2e.peak_rss_bytes(server.process.pid) or 0) / GIB, 3)
        except BaseException as exc:
            logger.exception("graph mode %s failed", mode)
            out["modes"][mode] = {"error": f"{type(exc).__name__}: {exc}"[-3000:], "server_args": config.extra_args}
            if not isinstance(exc, Exception):
                raise
            continue
        extra_outputs = report.pop("extra_outputs")
        states = [outputs["probe"]["loaded_models"][0] for outputs in extra_outputs["faceclip"]]
        baseline = [outputs["probe"]["loaded_models"][0] for outputs in extra_outputs["baseline"]]
        report.update(server_args=config.extra_args, server_start_s=round(started, 1),
                      wall_s=round(time.perf_counter() - t0, 1),
                      encoder_after_unet=encoder_after_unet(states[0]),  # run 0: the encoder had just encoded
                      loaded_models_first_run=states[0], loaded_models_last_run=states[-1],
                      baseline_loaded_models_last_run=baseline[-1])
        out["modes"][mode] = report
    return out


CHILDREN = {"models": section_models, "encoder": section_encoder, "graph": section_graph,
            "facet5": section_facet5}


# ---------------------------------------------------------------- parent: runs the sections in turn


class Deadline:
    def __init__(self, budget_s: float):
        self.start = time.monotonic()
        self.end = self.start + budget_s

    def left(self) -> float:
        return self.end - time.monotonic()

    def elapsed(self) -> float:
        return time.monotonic() - self.start


def run_child(cmd: list[str], timeout: float, log_path: Path, env: dict | None = None) -> tuple[dict | None, str]:
    """Run a child process; its last stdout line is its JSON. On timeout: SIGTERM (the child stops its server),
    then SIGKILL. Returns (parsed JSON or None, an error message or "")."""
    with open(log_path, "ab") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, stdin=subprocess.DEVNULL,  # noqa: S603
                                env={**os.environ, **(env or {})}, cwd=str(REPO))
        try:
            stdout, _ = proc.communicate(timeout=max(timeout, 1.0))
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGTERM)
            try:
                stdout, _ = proc.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                stdout, _ = proc.communicate()
            return None, f"timed out after {timeout:.0f}s (budget); log tail:\n{tail(log_path)}"
    parsed = parse_json(stdout.decode(errors="replace"))
    if proc.returncode != 0 or parsed is None:
        return parsed, f"exit code {proc.returncode}; log tail:\n{tail(log_path)}"
    return parsed, ""


def parse_json(stdout: str) -> dict | None:
    """The whole stdout as JSON (bench/train.py indents it), else its last line (the sections print one line)."""
    lines = [ln for ln in stdout.splitlines() if ln.strip()]
    for text in (stdout, lines[-1] if lines else ""):
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            continue
        return value if isinstance(value, dict) else None
    return None


def tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def run_section(name: str, a: argparse.Namespace, deadline: Deadline, logs: Path) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--section", name, *child_args(a)]
    t0 = time.perf_counter()
    logger.info("section %s (%.0fs left)", name, deadline.left())
    result, error = run_child(cmd, deadline.left(), logs / f"{name}.log")
    out = result if isinstance(result, dict) else {}
    if error:
        out["error"] = error
    out["section_s"] = round(time.perf_counter() - t0, 1)
    logger.info("section %s done in %.1fs%s", name, out["section_s"], " (error)" if error else "")
    return out


def run_train(a: argparse.Namespace, deadline: Deadline, logs: Path) -> dict:
    sizes = TINY if a.tiny else FULL
    if deadline.left() < a.train_min_s:
        return {"skipped": f"only {deadline.left():.0f}s of the budget left (--train-min-s {a.train_min_s})"}
    cmd = [sys.executable, str(REPO / "bench" / "train.py"), *sizes.train_args, "--models", a.models]
    t0 = time.perf_counter()
    logger.info("section train (%.0fs left)", deadline.left())
    result, error = run_child(cmd, deadline.left(), logs / "train.log",
                              env={"COMFYUI_PATH": str(comfyui_dir(a.comfyui))})
    out: dict = {"args": list(sizes.train_args)}
    out.update(result or {})
    if error:
        out["error"] = error
    out["section_s"] = round(time.perf_counter() - t0, 1)
    return out


def child_args(a: argparse.Namespace) -> list[str]:
    args = ["--device", a.device, "--models", a.models, "--work", a.work, "--modes", a.modes]
    args += ["--tiny"] if a.tiny else []
    args += ["--comfyui", a.comfyui] if a.comfyui else []
    return args


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiny", action="store_true", help="tiny random models and sizes, few steps (CI, any device)")
    ap.add_argument("--device", choices=("cpu", "cuda"), default=None, help="default: cuda when available")
    ap.add_argument("--sections", default=",".join(SECTIONS), help="comma list of " + ", ".join(SECTIONS))
    ap.add_argument("--modes", default=None, help="graph memory modes: " + ", ".join(MODES) + " (default: all; "
                                                  "on the CPU: default, lowvram)")
    ap.add_argument("--comfyui", default=None, help="ComfyUI folder (default: $COMFYUI_PATH, else the test env's)")
    ap.add_argument("--models", default=None, help="folder for the random model files, kept and reused "
                                                   "(default: inside --work)")
    ap.add_argument("--work", default=None, help="working folder (default: a temporary one, removed at the end)")
    ap.add_argument("--budget-s", type=float, default=480.0, help="time for all sections; train is skipped or "
                                                                   "stopped when it runs out (default 480)")
    ap.add_argument("--train-min-s", type=float, default=None, help="start train only with this much budget left "
                                                                     "(default 150; 0 with --tiny)")
    ap.add_argument("--setup-s", type=float, default=None, help="seconds the shell wrapper spent installing")
    ap.add_argument("--section", choices=tuple(CHILDREN), help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.device is None:
        import torch

        a.device = "cuda" if torch.cuda.is_available() else "cpu"
    if a.modes is None:
        a.modes = ",".join(m for m in MODES if a.device == "cuda" or m != "tight")
    if "tight" in a.modes.split(",") and a.device != "cuda":
        ap.error("the tight memory mode needs a CUDA device")
    if a.train_min_s is None:
        a.train_min_s = 0.0 if a.tiny else 150.0
    unknown = {m for m in a.modes.split(",") if m not in MODES} | \
        {s for s in a.sections.split(",") if s not in SECTIONS}
    if unknown:
        ap.error(f"unknown mode/section: {', '.join(sorted(unknown))}")
    return a


def child_main(a: argparse.Namespace) -> None:
    def stop(signum, frame):  # the parent's timeout: unwind, so a running ComfyUI server is stopped
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, stop)
    print(json.dumps(CHILDREN[a.section](a)))


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(message)s")
    a = parse_args(argv)
    if a.section:
        child_main(a)
        return
    deadline = Deadline(a.budget_s)
    temp = None
    if a.work is None:
        temp = tempfile.mkdtemp(prefix="faceclip_gpu_check_")
        a.work = temp
    a.models = a.models or str(Path(a.work) / "models")
    logs = Path(a.work) / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    sections = a.sections.split(",")
    report: dict = {"check": "faceclip_gpu_check", "tiny": a.tiny,
                    "options": {"device": a.device, "sections": sections, "modes": a.modes.split(","),
                                "budget_s": a.budget_s, "comfyui": str(comfyui_dir(a.comfyui)),
                                "sizes": dataclasses.asdict(TINY if a.tiny else FULL)}}
    try:
        report["models"] = run_section("models", a, deadline, logs)
        for key in ("torch", "cuda", "device_name", "device_memory_gib", "python"):
            report[key] = report["models"].get(key)
        for name in sections:
            if "error" in report["models"]:
                report[name] = {"error": "no model files (see models)"}
            elif name == "train":
                report[name] = run_train(a, deadline, logs)
            else:
                report[name] = run_section(name, a, deadline, logs)
        report["wall_s"] = round(deadline.elapsed(), 1)
        if a.setup_s is not None:
            report["setup_s"] = a.setup_s
            report["total_s"] = round(a.setup_s + deadline.elapsed(), 1)
        report["ok"] = all("error" not in report[s] for s in ("models", *sections)) and not any(
            "error" in m for m in report.get("graph", {}).get("modes", {}).values())
        text = json.dumps(report, indent=1)
        if os.environ.get("OUT"):
            out = Path(os.environ["OUT"])
            out.mkdir(parents=True, exist_ok=True)
            (out / "gpu_check.json").write_text(text + "\n")
            # one archive: only a few files come back from the device machine's $OUT
            shutil.make_archive(str(out / "gpu_check_logs"), "gztar", root_dir=logs)
        print(text)
    finally:
        if temp is not None:
            shutil.rmtree(temp, ignore_errors=True)


if __name__ == "__main__":
    main()
