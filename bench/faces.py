"""Benchmark of the face pipeline's own overhead (CPU); prints one JSON object.

    python bench/faces.py [--sizes 512,1024,4096] [--runs 5] [--provider CPU]

Writes stand-in insightface models (tests/harness/fake_insightface.py: real ONNX files with
SCRFD / ArcFace signatures, run by real onnxruntime through insightface's SCRFD class) to a
temporary folder, then times per square image size (median of --runs after one warm-up):

* detect_s: detection (conversion, area downscale, SCRFD pre/post-processing, NMS,
  mapping back) including the stand-in model's inference;
* standin_inference_s: the stand-in model's own session.run at 640, so
  detect_s - standin_inference_s is the pipeline's overhead;
* align_s: one 448 alignment from the full-resolution image (norm_crop equivalent) and
  align_antialias_s (the prepare_faces default, area pre-shrink for big faces);
* prepare_s / prepare_float_tensor_s: prepare_faces end to end (detect + select + align +
  annotated preview) from a uint8 array and from a ComfyUI-style float tensor.
Real SCRFD-10G adds its own inference time (not measurable offline: no weights here).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def timed(fn, runs: int) -> float:
    fn()  # warm-up: session shape caches, first allocations
    out = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return round(statistics.median(out), 5)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="512,1024,4096")
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--provider", default="CPU")
    args = ap.parse_args()

    import numpy as np
    import onnxruntime as ort

    from faceclip_core.faces import PrepareConfig, align_face, detect_faces, load_face_detector, prepare_faces
    from tests.harness.fake_insightface import MarkerFace, make_pack, scene

    with tempfile.TemporaryDirectory() as tmp:
        make_pack(Path(tmp) / "antelopev2", recognizer=False)
        det = load_face_detector([tmp], "antelopev2", provider=args.provider)
        blob = np.zeros((1, 3, 640, 640), np.float32)
        session = det._scrfd.session
        names = [o.name for o in session.get_outputs()]
        inference = timed(lambda: session.run(names, {session.get_inputs()[0].name: blob}),
                          args.runs)
        results = {}
        for size in (int(s) for s in args.sizes.split(",")):
            face = MarkerFace((size // 3, size // 4, size // 3 + size // 3,
                               size // 4 + size * 2 // 5), 0.9)
            img = scene(size, size, [face])
            found = detect_faces(img, det)
            assert len(found) == 1, f"stand-in face not found at {size}"
            kps = found[0].landmarks
            row = {
                "detect_s": timed(partial(detect_faces, img, det), args.runs),
                "align_s": timed(partial(align_face, img, kps, 448), args.runs * 4),
                "align_antialias_s": timed(partial(align_face, img, kps, 448, antialias=True),
                                           args.runs * 4),
                "prepare_s": timed(partial(prepare_faces, img, det), args.runs),
                "prepare_no_preview_s": timed(
                    partial(prepare_faces, img, det, config=PrepareConfig(annotate=False)),
                    args.runs),
                "face_px": int(found[0].width),
            }
            try:
                import torch

                t = torch.from_numpy(img).float().div_(255)[None]
                row["prepare_float_tensor_s"] = timed(partial(prepare_faces, t, det), args.runs)
            except ImportError:
                row["prepare_float_tensor_s"] = None
            row["overhead_s"] = round(row["detect_s"] - inference, 5)
            results[f"{size}x{size}"] = row

    print(json.dumps({
        "machine": {"cpu_count": os.cpu_count(), "python": platform.python_version(),
                    "onnxruntime": ort.__version__, "providers": list(det.providers)},
        "runs": args.runs,
        "standin_inference_640_s": inference,
        "per_image": results,
        "note": ("Stand-in ONNX models: times are the pipeline's own overhead (conversion, "
                 "area downscale to the 640 detector frame, SCRFD decoding and NMS in "
                 "insightface, mapping back, 448 warp, preview). Real SCRFD-10G adds its own "
                 "inference time on top, once per detector size tried (SCRFD-10G is about "
                 "10 GFLOPs per 640 pass; its time was not measured: no weights offline)."),
    }, indent=2))


if __name__ == "__main__":
    main()
