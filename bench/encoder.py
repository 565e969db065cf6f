"""Benchmark of the full-size FaceCLIP-SDXL encoder with random weights; prints one JSON object.

    python bench/encoder.py [--dtypes fp32,bf16] [--runs 3] [--device cpu|cuda] [--shared-vit] [--keep FILE]

Writes a random full-size checkpoint (bf16, 3.15 GB, like the released one) to a temporary .safetensors, then for
each dtype starts a fresh worker process (clean peak-RSS numbers) that loads it with faceclip_core.load_encoder and
times encode() for B=1 and B=4 (median of --runs after one warm-up). Official numbers for the same machine class
come from tests/fixtures/faceclip_parity/README.md.
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
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

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
GIB = 2 ** 30


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GIB  # ru_maxrss is KiB on Linux


def current_rss_gib() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / GIB


def make_checkpoint(path: Path, shared_vit: bool) -> dict:
    """A random full-size encoder state dict in bf16, streamed to ``path``."""
    import torch

    from faceclip_core import safetensors_io
    from faceclip_core.checkpoint_layout import official_layout
    from faceclip_core.encoder import default_config
    from faceclip_core.loader import build_meta

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

    from faceclip_core.checkpoint_layout import module_name
    from faceclip_core.loader import check_state_dict, encoder_from_state_dict

    with safe_open(path, framework="pt", device="cpu") as f:
        meta = {k: torch.empty(f.get_slice(k).get_shape(), device="meta") for k in f.keys()}
        _, expected = check_state_dict(meta, dtype)
        sd = {}
        for k in f.keys():
            target = expected.get(module_name(k))
            value = f.get_tensor(k)
            sd[k] = value.to(target.dtype) if target is not None and value.is_floating_point() else value
    return encoder_from_state_dict(sd, device=device, dtype=dtype)


def worker(path: str, dtype_name: str, device: str, runs: int, batches: list[int], reader: str = "pack",
           outputs: dict | None = None) -> dict:
    """Load and time one dtype. ``outputs``, when given, receives per batch size the warm-up's and the last
    timed encode's (embeddings, pooled) as float32 CPU tensors (for parity checks across dtypes)."""
    import torch

    import faceclip_core

    dtype = getattr(torch, DTYPES[dtype_name])
    rss_before = current_rss_gib()
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    enc = (faceclip_core.load_encoder(path, device=device, dtype=dtype) if reader == "pack"
           else library_load(path, device, dtype))
    if device == "cuda":
        torch.cuda.synchronize()
    load_s = time.perf_counter() - t0
    out = {
        "dtype": dtype_name,
        "reader": reader,
        "device": device,
        "threads": torch.get_num_threads(),
        "face_vit_shared": enc.face_encoder_shared,
        "load_s": round(load_s, 2),
        "rss_before_load_gib": round(rss_before, 2),
        "rss_after_load_gib": round(current_rss_gib(), 2),
        "peak_rss_after_load_gib": round(peak_rss_gib(), 2),
        # Shared face-ViT tensors counted once (state_dict lists them under both branches).
        "weights_gib": round(sum(t.numel() * t.element_size() for t in
                                 {t.data_ptr(): t for t in enc.state_dict().values()}.values()) / GIB, 2),
    }
    prompt = "A woman wearing a blue denim shirt and khaki pants, on a rocky desert plateau. "
    for b in batches:
        faces = torch.rand(b, 3, 448, 448, generator=torch.Generator().manual_seed(b))
        mask = torch.ones(b, dtype=torch.bool)
        warm = enc.encode(faces, [prompt] * b, mask)  # warm-up
        times = []
        for _ in range(runs):
            if device == "cuda":
                torch.cuda.synchronize()
            t = time.perf_counter()
            emb, pooled = enc.encode(faces, [prompt] * b, mask)
            if device == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t)
        if outputs is not None:
            outputs[b] = {"warmup": tuple(t.detach().float().cpu() for t in warm),
                          "last": (emb.detach().float().cpu(), pooled.detach().float().cpu())}
        assert torch.isfinite(emb).all()
        out[f"encode_b{b}_median_s"] = round(statistics.median(times), 3)
        out[f"encode_b{b}_all_s"] = [round(x, 3) for x in times]
    out["peak_rss_gib"] = round(peak_rss_gib(), 2)
    if device == "cuda":
        out["peak_vram_gib"] = round(torch.cuda.max_memory_allocated() / GIB, 2)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dtypes", default="fp32,bf16", help="comma list of fp32, bf16, fp16")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available, else cpu)")
    ap.add_argument("--shared-vit", action="store_true", help="give both branches the same face ViT weights")
    ap.add_argument("--keep", default=None, help="checkpoint path to reuse/keep instead of a temporary file")
    ap.add_argument("--batches", default="1,4", help="encode batch sizes to time (empty: load only)")
    ap.add_argument("--reader", choices=("pack", "library"), default="pack",
                    help="pack: load_encoder (zero-copy library views, streamed conversions); library: a baseline "
                         "that reads every tensor through the safetensors library and converts it (to compare)")
    ap.add_argument("--worker", nargs=2, metavar=("PATH", "DTYPE"), help=argparse.SUPPRESS)
    args = ap.parse_args()

    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    batches = [int(b) for b in args.batches.split(",") if b.strip()]
    if args.worker:
        print(json.dumps(worker(args.worker[0], args.worker[1], device, args.runs, batches, args.reader)))
        return

    result: dict = {"torch": torch.__version__, "cpu_count": os.cpu_count(), "device": device,
                    "official": OFFICIAL, "runs": {}}
    tmpdir = None
    if args.keep and Path(args.keep).is_file():
        path = Path(args.keep)
        result["checkpoint"] = {"file_gb": round(path.stat().st_size / 1e9, 3), "reused": str(path)}
    else:
        tmpdir = tempfile.TemporaryDirectory(prefix="faceclip-bench-")
        path = Path(args.keep) if args.keep else Path(tmpdir.name) / "faceclip_encoder_random.safetensors"
        result["checkpoint"] = make_checkpoint(path, args.shared_vit)
    try:
        for name in [d.strip() for d in args.dtypes.split(",") if d.strip()]:
            if name not in DTYPES:
                raise SystemExit(f"unknown dtype {name!r}; use {', '.join(DTYPES)}")
            cmd = [sys.executable, __file__, "--worker", str(path), name, "--runs", str(args.runs),
                   "--device", device, "--batches", args.batches, "--reader", args.reader]
            proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if proc.returncode != 0:
                result["runs"][name] = {"error": proc.stderr.strip().splitlines()[-5:]}
                continue
            run = json.loads(proc.stdout.strip().splitlines()[-1])
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
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
