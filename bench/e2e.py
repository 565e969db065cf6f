"""End-to-end benchmark in one real ComfyUI server: the basic FaceCLIP graph against the same graph with the
FaceCLIP encode replaced by a precomputed (random, SDXL-shaped) conditioning. Prints JSON.

FaceCLIP conditions SDXL through CONDITIONING only and leaves the UNet unpatched, so sampling must cost the same
with either conditioning: `sampling_ratio` (FaceCLIP / baseline KSampler time) should be about 1.0.

    python bench/e2e.py [--size 256] [--height H] [--steps 8] [--runs 3]

Runs on the test environment (`bash tests/run.sh` provisions it) with tiny random models: the times measure the
pipeline, not a full-size SDXL. On a GPU machine, peak VRAM is reported by the server's torch.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from bench.comfy_path import default_comfyui  # noqa: E402
from faceclip_headless.client import ComfyClient  # noqa: E402
from faceclip_headless.server import ComfyServer  # noqa: E402
from faceclip_headless.shipped_workflows import BY_KEY  # noqa: E402
from faceclip_headless.workflow import find_nodes, to_api  # noqa: E402
from tests.harness.fake_insightface import MarkerFace, scene  # noqa: E402
from tests.harness.server_env import prepare_base, server_config  # noqa: E402


def peak_rss_bytes(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def upload_photo(client: ComfyClient, path: Path) -> str:
    """A synthetic photo with one face the stand-in detector finds, uploaded to the server's input folder."""
    from PIL import Image

    Image.fromarray(scene(512, 512, [MarkerFace((150, 120, 360, 380), 0.9)])).save(path)
    return client.upload_image(path)


def graphs(info: dict, photo: str, size: int, steps: int, seed: int, height: int | None = None
           ) -> tuple[dict, dict]:
    faceclip = to_api(json.loads(BY_KEY["basic"].path.read_text()), info)
    (load,) = find_nodes(faceclip, "LoadImage")
    (sampler,) = find_nodes(faceclip, "KSampler")
    (latent,) = find_nodes(faceclip, "EmptyLatentImage")
    (decode,) = find_nodes(faceclip, "VAEDecode")
    faceclip[load]["inputs"]["image"] = photo
    faceclip[sampler]["inputs"].update(seed=seed, steps=steps)
    faceclip[latent]["inputs"].update(width=size, height=height or size)
    faceclip["memory"] = {"class_type": "FaceCLIPTest_DeviceMemory", "inputs": {"after": [decode, 0]}}
    baseline = {k: v for k, v in json.loads(json.dumps(faceclip)).items()
                if not v["class_type"].startswith("FaceCLIP") and v["class_type"] != "LoadImage"}
    baseline["random_pos"] = {"class_type": "FaceCLIPTest_RandomConditioning", "inputs": {"seed": 1, "batch": 1}}
    baseline["random_neg"] = {"class_type": "FaceCLIPTest_RandomConditioning", "inputs": {"seed": 2, "batch": 1}}
    baseline[sampler]["inputs"].update(positive=["random_pos", 0], negative=["random_neg", 0])
    baseline["memory"] = faceclip["memory"]
    return faceclip, baseline


def measure(client: ComfyClient, photo: str, size: int, steps: int, runs: int, height: int | None = None,
            extend: Callable[[dict, str], None] | None = None) -> dict:
    """Both graphs ``runs`` + 1 times on a running server (run 0 loads the models and is reported apart).
    ``extend(graph, name)`` may add nodes to each graph (name: faceclip or baseline); the ui outputs of the nodes
    it adds are returned per graph and run under "extra_outputs"."""
    info = client.object_info()
    samples: dict[str, list[float]] = {"faceclip_sample": [], "baseline_sample": [], "encode_first": [],
                                       "prepare_first": []}
    first_nodes: dict[str, float] = {}
    extra: dict[str, list[dict]] = {"faceclip": [], "baseline": []}
    memory = None
    for run in range(runs + 1):  # run 0 loads the models: reported separately, not in the medians
        seed = 1000 + run
        faceclip, baseline = graphs(info, photo, size, steps, seed, height)
        if run == 0:
            faceclip[find_nodes(faceclip, "FaceCLIPEncode")[0]]["inputs"]["prompt"] += " (warm-up)"
        for name, graph in (("faceclip", faceclip), ("baseline", baseline)):
            before = set(graph)
            if extend is not None:
                extend(graph, name)
            result = client.run(graph)
            if not result.ok:
                raise SystemExit(f"{name} graph failed: {result.describe_error()}")
            times = result.node_seconds()
            (sampler,) = find_nodes(graph, "KSampler")
            if run == 0 and name == "faceclip":
                first_nodes = {graph[k]["class_type"]: v for k, v in times.items()}
                samples["encode_first"].append(times[find_nodes(graph, "FaceCLIPEncode")[0]])
                samples["prepare_first"].append(times[find_nodes(graph, "FaceCLIPPrepareFaces")[0]])
            elif run > 0:
                samples[f"{name}_sample"].append(times[sampler])
            memory = result.outputs.get("memory", {}).get("memory", [memory])[0]
            extra[name].append({k: result.outputs.get(k) for k in sorted(set(graph) - before)})
    med = {k: statistics.median(v) for k, v in samples.items() if v}
    report = {
        "device": memory and memory.get("device"),
        "size": size, "steps": steps, "runs": runs,
        "first_run_node_seconds": first_nodes,
        "faceclip_encode_seconds_first": med["encode_first"],
        "prepare_faces_seconds_first": med["prepare_first"],
        "ksampler_seconds_median": {"faceclip": med["faceclip_sample"], "baseline": med["baseline_sample"]},
        "sampling_ratio": round(med["faceclip_sample"] / med["baseline_sample"], 3),
        "peak_vram_gib": (round(memory["peak_allocated_bytes"] / 2**30, 3)
                          if memory and memory.get("peak_allocated_bytes") else None),
    }
    if height is not None:
        report["height"] = height
    if extend is not None:
        report["extra_outputs"] = extra
    return report


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--height", type=int, default=None, help="latent height (default: --size, a square)")
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--comfyui", type=Path, default=default_comfyui())
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="faceclip_bench_") as tmp:
        base = prepare_base(Path(tmp) / "base", a.comfyui)
        with ComfyServer(server_config(base, a.comfyui, Path(tmp) / "mount")) as server:
            client = ComfyClient(server.url, timeout=3600)
            photo = upload_photo(client, Path(tmp) / "bench_face.png")
            measured = measure(client, photo, a.size, a.steps, a.runs, a.height)
            peak_vram = measured.pop("peak_vram_gib")
            report = {
                **measured,
                "server_peak_rss_gib": round((peak_rss_bytes(server.process.pid) or 0) / 2**30, 3),
                "peak_vram_gib": peak_vram,
                "note": "tiny random models; KSampler times are medians over re-runs with new seeds (encode and "
                        "faces cached), the first run's node times include model loading",
            }
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
