"""Random full-size SDXL text encoders (CLIP-L + CLIP-G) for the tests that need ComfyUI's real SDXL CLIP.

ComfyUI builds both encoders from fixed configs (missing layers give NaN), so they cannot be shrunk; the weights
are random but every tensor is present. Two files in the HF transformers layout, loaded by core DualCLIPLoader
with type "sdxl". Filling ~820 M values with fresh random numbers is slow on 2 cores, so every matrix is cut from
one shared random pool at a random offset: random enough for distinct tokens and finite activations.

usage: python sdxl_clip.py FOLDER   (writes FOLDER/test_sdxl_clip_l.safetensors and FOLDER/test_sdxl_clip_g.safetensors)
"""
from __future__ import annotations

import math
import sys
from pathlib import Path

CLIP_L_NAME = "test_sdxl_clip_l.safetensors"
CLIP_G_NAME = "test_sdxl_clip_g.safetensors"

_POOL = 1 << 22  # 4 Mi random values; larger tensors repeat it


def _shapes(width: int, layers: int, ff: int, projection: bool) -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {
        "text_model.embeddings.token_embedding.weight": (49408, width),
        "text_model.embeddings.position_embedding.weight": (77, width),
        "text_model.final_layer_norm.weight": (width,),
        "text_model.final_layer_norm.bias": (width,),
    }
    for i in range(layers):
        p = f"text_model.encoder.layers.{i}."
        for name in ("q_proj", "k_proj", "v_proj", "out_proj"):
            shapes[p + f"self_attn.{name}.weight"] = (width, width)
            shapes[p + f"self_attn.{name}.bias"] = (width,)
        for name in ("layer_norm1", "layer_norm2"):
            shapes[p + f"{name}.weight"] = (width,)
            shapes[p + f"{name}.bias"] = (width,)
        shapes[p + "mlp.fc1.weight"] = (ff, width)
        shapes[p + "mlp.fc1.bias"] = (ff,)
        shapes[p + "mlp.fc2.weight"] = (width, ff)
        shapes[p + "mlp.fc2.bias"] = (width,)
    if projection:
        shapes["text_projection.weight"] = (width, width)
    return shapes


def _fill(shapes: dict[str, tuple[int, ...]], seed: int):
    import torch

    g = torch.Generator().manual_seed(seed)
    pool = torch.randn(_POOL, generator=g)
    out = {}
    for key in sorted(shapes):
        shape = shapes[key]
        if len(shape) == 1:
            t = torch.zeros(shape) if key.endswith("bias") else torch.ones(shape)
        else:
            n = math.prod(shape)
            std = 0.02 if "embedding" in key else 1.0 / math.sqrt(shape[1])
            offset = int(torch.randint(0, _POOL, (1,), generator=g))
            flat = torch.roll(pool, -offset)
            flat = flat.repeat(n // _POOL + 1)[:n] if n > _POOL else flat[:n]
            t = flat.reshape(shape) * std
        out[key] = t.to(torch.float16).contiguous()
    return out


def write(folder: Path, seed: int = 0) -> tuple[Path, Path]:
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    paths = (folder / CLIP_L_NAME, folder / CLIP_G_NAME)
    for path, shapes, s in ((paths[0], _shapes(768, 12, 3072, True), seed),
                            (paths[1], _shapes(1280, 32, 5120, True), seed + 1)):
        if not path.exists():
            tmp = path.with_suffix(".tmp")
            save_file(_fill(shapes, s), str(tmp), metadata={"note": "random weights for tests"})
            tmp.replace(path)
    return paths


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    for p in write(Path(sys.argv[1])):
        print(p)
