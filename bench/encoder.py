"""Benchmark of the full-size FaceCLIP encoders with random weights; prints one JSON object.

    python bench/encoder.py [--variant sdxl|facet5] [--dtypes fp32,bf16] [--compute same|fp32] [--runs 3]
                            [--warmup 1] [--device cpu|cuda] [--batches 1,4] [--shared-vit] [--keep FILE] [--tiny]
                            [--no-baseline] [--comfyui DIR]

Writes a random full-size checkpoint in the released layout and dtype (bf16) to a temporary .safetensors, then
for each dtype starts a fresh worker process (clean peak-RSS numbers) that loads it (faceclip_core.load_encoder /
load_facet5_encoder) and times encode() for each batch size (median of --runs after --warmup encodes).
``--compute same`` computes in the weights' dtype with torch.nn layers; ``--compute fp32`` is the nodes' setting:
weights stored in the dtype, computed in float32 through ComfyUI's own comfy.ops.manual_cast (from --comfyui).

- ``--variant sdxl`` (default): FaceCLIP-SDXL, 3.15 GB. Official numbers for the same machine class come from
  tests/fixtures/faceclip_parity/README.md.
- ``--variant facet5``: FaceT5-FLUX, 12.5 GB (fp32 weights take 23.7 GB of memory), and in the same run the SDXL
  encoder as the baseline (``facet5_vs_sdxl``: ratios per dtype), unless ``--no-baseline``. The T5 tokenizer is
  ComfyUI's (``--comfyui``, default $COMFYUI_PATH or the test environment's). On a CPU without bf16 matrix
  instructions, bf16 compute is several times slower than fp32, hence --compute fp32.
- ``--tiny``: the tests' tiny encoders instead of full-size ones (seconds on a CPU): what CI runs so that this
  script cannot rot (tests/core/test_bench_encoder.py).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from bench.comfy_path import default_comfyui  # noqa: E402

OFFICIAL = {
    "source": "tests/fixtures/faceclip_parity/README.md (torch 2.4.0, CPU, 2 threads, median of 3)",
    "encode_b1_fp32_s": 2.31,
    "encode_b4_fp32_s": 8.58,
    "encode_b1_bf16_autocast_s": [1.23, 1.64],
    "encode_b4_bf16_autocast_s": 31.0,
    "load_s": 9.5,
    "load_peak_rss_gib": 9.41,
}
DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}
VARIANTS = ("sdxl", "facet5")
GIB = 2 ** 30
PROMPTS = {  # the official demo prompts (the SDXL script appends ". ", the FLUX one passes the text unchanged)
    "sdxl": "A woman wearing a blue denim shirt and khaki pants, on a rocky desert plateau. ",
    "facet5": "A woman wearing a blue denim shirt and khaki pants, on a rocky desert plateau",
}


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GIB  # ru_maxrss is KiB on Linux


def current_rss_gib() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / GIB




def _random_pool(n: int = 2 ** 24, seed: int = 0):
    """bf16 N(0, 0.02) values that full-size random weights are cut from: drawing 6 billion normal values costs
    minutes on a small CPU, and the values do not change the timing (they keep activations O(1) and finite)."""
    import torch

    return (torch.randn(n, generator=torch.Generator().manual_seed(seed)) * 0.02).to(torch.bfloat16)


def _from_pool(pool, shape: tuple[int, ...], offset: int):
    import torch

    n = torch.Size(shape).numel()
    reps = -(-(offset % pool.numel() + n) // pool.numel())
    flat = pool.repeat(reps) if reps > 1 else pool
    start = offset % pool.numel()
    return flat[start:start + n].reshape(shape).clone()


class _RandomWeights(Mapping):
    """name -> a random tensor of the given shape, made when asked for (cut from a shared pool), so that writing a
    12.5 GB checkpoint holds one tensor at a time."""

    def __init__(self, shapes: dict[str, tuple[int, ...]]) -> None:
        self.shapes = shapes
        self.offsets = {k: 7919 * i for i, k in enumerate(shapes)}  # a different cut for each tensor
        self.pool = _random_pool()

    def __getitem__(self, k: str):
        import torch

        shape = self.shapes[k]
        if k.endswith("num_batches_tracked"):
            return torch.zeros(shape, dtype=torch.int64)
        if len(shape) == 1 and (k.endswith(("running_var", "gamma_v", "gamma_l")) or
                                ("norm" in k and k.endswith("weight"))):
            return torch.ones(shape, dtype=torch.bfloat16)  # norm scales, BN variances, layer scales
        return _from_pool(self.pool, shape, self.offsets[k])

    def __iter__(self) -> Iterator[str]:
        return iter(self.shapes)

    def __len__(self) -> int:
        return len(self.shapes)


def make_facet5_checkpoint(path: Path, cfg=None) -> dict:
    """A random FaceT5-FLUX encoder state dict (the released names, shapes and dtype: bf16; default: full size),
    streamed to ``path``."""
    from faceclip_core import safetensors_io
    from faceclip_core.facet5 import default_config
    from faceclip_core.facet5.layout import FaceT5Layout
    from faceclip_core.facet5.loader import build_meta

    t0 = time.perf_counter()
    cfg = cfg or default_config()
    layout = FaceT5Layout(cfg).official_layout(build_meta(cfg).state_dict())
    size = safetensors_io.write(path, _RandomWeights(layout), None,
                                {"format": "pt", "note": "random FaceT5 encoder for benchmarking"})
    return {"file_gb": round(size / 1e9, 3), "generate_s": round(time.perf_counter() - t0, 1)}


def make_tiny_checkpoint(path: Path, variant: str) -> dict:
    """The tests' tiny encoder of ``variant`` (tests/harness), for --tiny."""
    t0 = time.perf_counter()
    if variant == "facet5":
        from tests.harness import tiny_facet5

        tiny_facet5.write(path)
    else:
        from tests.harness import tiny_faceclip

        tiny_faceclip.write(path)
    return {"file_gb": round(path.stat().st_size / 1e9, 4), "generate_s": round(time.perf_counter() - t0, 1),
            "tiny": True}


def make_checkpoint(path: Path, shared_vit: bool) -> dict:
    """A random full-size FaceCLIP-SDXL encoder state dict in bf16, streamed to ``path``."""
    import torch

    from faceclip_core import safetensors_io
    from faceclip_core.sdxl.checkpoint_layout import official_layout
    from faceclip_core.sdxl.encoder import default_config
    from faceclip_core.sdxl.loader import build_meta

    t0 = time.perf_counter()
    layout = official_layout(build_meta(default_config()).state_dict())  # the released names and shapes
    g = torch.Generator().manual_seed(0)
    sd = {}
    for k, shape in layout.items():
        if shared_vit and k.startswith("face_clip_g.face_encoder."):
            sd[k] = sd["face_clip_l" + k[len("face_clip_g"):]]
            continue
        if k.endswith("num_batches_tracked"):
            sd[k] = torch.zeros(shape, dtype=torch.int64)
        elif k.endswith(("running_var", "gamma_v", "gamma_l")):
            sd[k] = torch.ones(shape, dtype=torch.bfloat16)
        elif len(shape) == 1 and (".norm" in k or "ln_" in k or "layer_norm" in k or k.endswith("norm.weight")) \
                and k.endswith("weight"):
            sd[k] = torch.ones(shape, dtype=torch.bfloat16)
        else:
            # Small weights keep activations O(1) through 32 layers; values do not change the timing.
            sd[k] = (torch.randn(shape, generator=g) * 0.02).to(torch.bfloat16)
    size = safetensors_io.write(path, sd, None, {"format": "pt", "note": "random FaceCLIP encoder for benchmarking"})
    return {"file_gb": round(size / 1e9, 3), "generate_s": round(time.perf_counter() - t0, 1)}


def library_load(path: str, device: str, dtype):
    """The baseline the pack's reading is measured against: every tensor through the safetensors library (a view
    of the memory-mapped file), converted to the layer's dtype, then the same model build."""
    import torch
    from safetensors import safe_open

    from faceclip_core.sdxl.checkpoint_layout import module_name
    from faceclip_core.sdxl.loader import check_state_dict, encoder_from_state_dict

    with safe_open(path, framework="pt", device="cpu") as f:
        meta = {k: torch.empty(f.get_slice(k).get_shape(), device="meta") for k in f.keys()}
        _, expected = check_state_dict(meta, dtype)
        sd = {}
        for k in f.keys():
            target = expected.get(module_name(k))
            value = f.get_tensor(k)
            sd[k] = value.to(target.dtype) if target is not None and value.is_floating_point() else value
    return encoder_from_state_dict(sd, device=device, dtype=dtype)


def manual_cast_ops(comfyui: Path, device: str):
    """ComfyUI's comfy.ops.manual_cast (what the nodes build the encoders with), imported from ``comfyui``."""
    sys.path.insert(0, str(comfyui))
    import comfy.cli_args

    comfy.cli_args.args.cpu = device == "cpu"  # before comfy.model_management is imported: no accelerator probing
    import comfy.ops

    return comfy.ops.manual_cast


def worker(path: str, dtype_name: str, device: str, runs: int, batches: list[int], reader: str = "pack",
           outputs: dict | None = None, variant: str = "sdxl", t5_tokenizer: str | None = None,
           compute: str = "same", comfyui: Path | None = None, warmup: int = 1) -> dict:
    """Load and time one dtype. ``outputs``, when given, receives per batch size the first and the last encode's
    (embeddings, pooled) as float32 CPU tensors (for parity checks across dtypes). ``variant`` facet5 loads a
    FaceT5-FLUX encoder (``t5_tokenizer``: ComfyUI's T5 tokenizer.json) with the pack's reader. ``compute`` fp32:
    float32 activations through ComfyUI's manual_cast layers (from ``comfyui``), as the nodes run."""
    import torch

    import faceclip_core

    dtype = getattr(torch, DTYPES[dtype_name])
    options = {}
    if compute == "fp32":
        options = {"operations": manual_cast_ops(comfyui or default_comfyui(), device),
                   "compute_dtype": torch.float32}
    rss_before = current_rss_gib()
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    if variant == "facet5":
        enc = faceclip_core.load_facet5_encoder(path, device=device, dtype=dtype, t5_tokenizer=t5_tokenizer,
                                                **options)
    elif reader == "pack":
        enc = faceclip_core.load_encoder(path, device=device, dtype=dtype, **options)
    else:
        enc = library_load(path, device, dtype)
    if device == "cuda":
        torch.cuda.synchronize()
    load_s = time.perf_counter() - t0
    out = {
        "variant": variant,
        "dtype": dtype_name,
        "compute": dtype_name if compute == "same" else compute,
        "reader": reader,
        "device": device,
        "threads": torch.get_num_threads(),
        "face_vit_shared": getattr(enc, "face_encoder_shared", None),
        "load_s": round(load_s, 2),
        "rss_before_load_gib": round(rss_before, 2),
        "rss_after_load_gib": round(current_rss_gib(), 2),
        "peak_rss_after_load_gib": round(peak_rss_gib(), 2),
        # Shared face-ViT tensors counted once (state_dict lists them under both branches).
        "weights_gib": round(sum(t.numel() * t.element_size() for t in
                                 {t.data_ptr(): t for t in enc.state_dict().values()}.values()) / GIB, 2),
    }
    prompt = PROMPTS[variant]
    for b in batches:
        faces = torch.rand(b, 3, 448, 448, generator=torch.Generator().manual_seed(b))
        mask = torch.ones(b, dtype=torch.bool)
        args = (faces, [prompt] * b) if variant == "facet5" else (faces, [prompt] * b, mask)
        times, warmup_s, first = [], [], None

        def timed(args: tuple = args) -> tuple:
            if device == "cuda":
                torch.cuda.synchronize()
            t = time.perf_counter()
            result = enc.encode(*args)
            if device == "cuda":
                torch.cuda.synchronize()
            return result, time.perf_counter() - t

        for _ in range(warmup):
            (emb, pooled), seconds = timed()
            first = first or (emb, pooled)
            warmup_s.append(round(seconds, 3))
        for _ in range(max(runs, 1)):
            (emb, pooled), seconds = timed()
            first = first or (emb, pooled)
            times.append(seconds)
        if outputs is not None:
            outputs[b] = {"warmup": tuple(t.detach().float().cpu() for t in first),
                          "last": (emb.detach().float().cpu(), pooled.detach().float().cpu())}
        assert torch.isfinite(emb).all()
        out[f"encode_b{b}_median_s"] = round(statistics.median(times), 3)
        out[f"encode_b{b}_all_s"] = [round(x, 3) for x in times]
        out[f"encode_b{b}_warmup_s"] = warmup_s
    out["peak_rss_gib"] = round(peak_rss_gib(), 2)
    if device == "cuda":
        out["peak_vram_gib"] = round(torch.cuda.max_memory_allocated() / GIB, 2)
    return out


def run_variant(variant: str, args: argparse.Namespace, device: str, batches: list[int], keep: str | None,
                t5_tokenizer: str | None) -> dict:
    """Checkpoint (made or reused) and one worker process per dtype for one encoder variant."""
    result: dict = {"runs": {}}
    tmpdir = None
    if keep and Path(keep).is_file():
        path = Path(keep)
        result["checkpoint"] = {"file_gb": round(path.stat().st_size / 1e9, 3), "reused": str(path)}
    else:
        tmpdir = tempfile.TemporaryDirectory(prefix="faceclip-bench-")
        path = Path(keep) if keep else Path(tmpdir.name) / f"{variant}_encoder_random.safetensors"
        if args.tiny:
            result["checkpoint"] = make_tiny_checkpoint(path, variant)
        elif variant == "facet5":
            result["checkpoint"] = make_facet5_checkpoint(path)
        else:
            result["checkpoint"] = make_checkpoint(path, args.shared_vit)
    try:
        for name in [d.strip() for d in args.dtypes.split(",") if d.strip()]:
            if name not in DTYPES:
                raise SystemExit(f"unknown dtype {name!r}; use {', '.join(DTYPES)}")
            cmd = [sys.executable, __file__, "--worker", str(path), name, "--runs", str(args.runs),
                   "--device", device, "--batches", args.batches, "--reader", args.reader, "--variant", variant,
                   "--compute", args.compute, "--warmup", str(args.warmup)]
            if args.comfyui:
                cmd += ["--comfyui", str(args.comfyui)]
            if t5_tokenizer:
                cmd += ["--t5-tokenizer", t5_tokenizer]
            proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if proc.returncode != 0:
                result["runs"][name] = {"error": proc.stderr.strip().splitlines()[-5:]}
                continue
            run = json.loads(proc.stdout.strip().splitlines()[-1])
            if variant == "sdxl" and not args.tiny:
                run["vs_official"] = {"load_speedup": round(OFFICIAL["load_s"] / run["load_s"], 2)}
                for b in batches:
                    if f"encode_b{b}_fp32_s" in OFFICIAL:
                        run["vs_official"][f"encode_b{b}_speedup_vs_fp32"] = round(
                            OFFICIAL[f"encode_b{b}_fp32_s"] / run[f"encode_b{b}_median_s"], 2)
            result["runs"][name] = run
        r = result["runs"]
        if "fp32" in r and "bf16" in r and "error" not in r["fp32"] and "error" not in r["bf16"] and batches:
            result["bf16_speedup_over_fp32"] = {
                f"b{b}": round(r["fp32"][f"encode_b{b}_median_s"] / r["bf16"][f"encode_b{b}_median_s"], 2)
                for b in batches}
    finally:
        if tmpdir is not None:
            tmpdir.cleanup()
    return result


def compare(runs: dict, baseline: dict, batches: list[int]) -> dict:
    """Per dtype, FaceT5's numbers over the SDXL encoder's (ratios > 1: FaceT5 costs more)."""
    out = {}
    for dtype, run in runs.items():
        base = baseline.get(dtype)
        if not base or "error" in run or "error" in base:
            continue
        ratios = {"load": run["load_s"] / base["load_s"] if base["load_s"] else None,
                  "weights": run["weights_gib"] / base["weights_gib"],
                  "peak_rss": run["peak_rss_gib"] / base["peak_rss_gib"]}
        ratios.update({f"encode_b{b}": run[f"encode_b{b}_median_s"] / base[f"encode_b{b}_median_s"]
                       for b in batches})
        out[dtype] = {k: None if v is None else round(v, 2) for k, v in ratios.items()}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variant", choices=VARIANTS, default="sdxl",
                    help="sdxl: FaceCLIP-SDXL; facet5: FaceT5-FLUX, with the SDXL encoder as baseline")
    ap.add_argument("--dtypes", default="fp32,bf16", help="comma list of fp32, bf16, fp16")
    ap.add_argument("--compute", choices=("same", "fp32"), default="same",
                    help="same: compute in the weights' dtype; fp32: the nodes' setting (ComfyUI's manual_cast)")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1, help="untimed encodes before the timed ones")
    ap.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available, else cpu)")
    ap.add_argument("--shared-vit", action="store_true", help="give both branches the same face ViT weights")
    ap.add_argument("--keep", default=None, help="checkpoint path to reuse/keep instead of a temporary file")
    ap.add_argument("--batches", default="1,4", help="encode batch sizes to time (empty: load only)")
    ap.add_argument("--reader", choices=("pack", "library"), default="pack",
                    help="pack: load_encoder (zero-copy library views, streamed conversions); library: a baseline "
                         "that reads every tensor through the safetensors library and converts it (to compare; "
                         "SDXL only)")
    ap.add_argument("--tiny", action="store_true", help="the tests' tiny encoders (for CI: seconds on a CPU)")
    ap.add_argument("--no-baseline", action="store_true", help="--variant facet5 without the SDXL encoder")
    ap.add_argument("--comfyui", type=Path, default=None,
                    help="ComfyUI folder whose T5 tokenizer FaceT5 uses (default: $COMFYUI_PATH, else the test "
                         "environment's)")
    ap.add_argument("--t5-tokenizer", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--worker", nargs=2, metavar=("PATH", "DTYPE"), help=argparse.SUPPRESS)
    args = ap.parse_args()

    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    batches = [int(b) for b in args.batches.split(",") if b.strip()]
    if args.worker:
        print(json.dumps(worker(args.worker[0], args.worker[1], device, args.runs, batches, args.reader,
                                variant=args.variant, t5_tokenizer=args.t5_tokenizer, compute=args.compute,
                                comfyui=args.comfyui, warmup=args.warmup)))
        return

    t5_tokenizer = None
    if args.variant == "facet5":
        from faceclip_core.facet5 import find_t5_tokenizer

        t5_tokenizer = str(find_t5_tokenizer(args.comfyui or default_comfyui()))
    result: dict = {"torch": torch.__version__, "cpu_count": os.cpu_count(), "device": device,
                    "variant": args.variant, "tiny": args.tiny}
    if args.variant == "sdxl" and not args.tiny:
        result["official"] = OFFICIAL
    result.update(run_variant(args.variant, args, device, batches, args.keep, t5_tokenizer))
    if args.variant == "facet5" and not args.no_baseline:
        result["baseline_sdxl"] = run_variant("sdxl", args, device, batches, None, None)
        result["facet5_vs_sdxl"] = compare(result["runs"], result["baseline_sdxl"]["runs"], batches)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
