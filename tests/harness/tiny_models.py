"""Write tiny random-weight models that ComfyUI's own loaders accept, for the end-to-end tests.

- an SDXL-layout diffusion model for `UNETLoader`. ComfyUI detects SDXL from model_channels 320,
  transformer depths [0,0,2,2,10,10] in the input blocks, context 2048 and adm 2816; channel_mult and the middle
  and output depths are read from the weights, so those are shrunk.
- a VAE for `VAELoader`: the standard encoder (its config is fixed in ComfyUI) and a narrow decoder (ComfyUI
  reads the decoder width from decoder.conv_in).

ComfyUI's own modules, built on the meta device, supply the exact key names and shapes.
usage: python tiny_models.py COMFYUI_DIR MODELS_DIR   (writes diffusion_models/ and vae/ under MODELS_DIR)
"""
from __future__ import annotations

import math
import os
import sys

UNET_NAME = "tiny_sdxl_unet.safetensors"
VAE_NAME = "tiny_sdxl_vae.safetensors"

UNET_CONFIG = dict(
    image_size=32, in_channels=4, out_channels=4, model_channels=320, num_res_blocks=[2, 2, 2],
    channel_mult=[1, 1, 1], transformer_depth=[0, 0, 2, 2, 10, 10], transformer_depth_middle=1,
    transformer_depth_output=[0, 0, 0, 1, 1, 1, 1, 1, 1], use_linear_in_transformer=True, context_dim=2048,
    adm_in_channels=2816, num_classes="sequential", use_spatial_transformer=True, legacy=False,
    num_head_channels=64, num_heads=-1, use_temporal_attention=False, use_temporal_resblock=False,
)
VAE_CONFIG = {"double_z": True, "z_channels": 4, "resolution": 256, "in_channels": 3, "out_ch": 3, "ch": 128,
              "ch_mult": [1, 2, 4, 4], "num_res_blocks": 2, "attn_resolutions": [], "dropout": 0.0}
VAE_DECODER_CH = 32


def _random_like(shapes: dict, seed: int):
    import torch

    g = torch.Generator().manual_seed(seed)
    out = {}
    for key in sorted(shapes):
        shape = shapes[key]
        if len(shape) <= 1:
            # biases start at zero, norm scales at one: the usual init, and it keeps activations finite
            t = torch.zeros(shape) if key.endswith("bias") else torch.ones(shape)
        else:
            t = torch.randn(shape, generator=g) / math.sqrt(math.prod(shape[1:]))
        out[key] = t.to(torch.float16).contiguous()
    return out


def write(comfy_dir: str, models_dir: str, seed: int = 0) -> dict[str, str]:
    sys.path.insert(0, os.path.abspath(comfy_dir))  # the test venv's CPU shims are installed at start-up
    import comfy.cli_args

    comfy.cli_args.args.cpu = True  # before comfy.model_management is imported: no accelerator probing
    import comfy.ops
    import torch
    from comfy.ldm.modules.diffusionmodules.model import Decoder, Encoder
    from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel
    from safetensors.torch import save_file

    meta = torch.device("meta")
    unet = UNetModel(**UNET_CONFIG, device=meta, operations=comfy.ops.disable_weight_init)
    unet_shapes = {k: tuple(v.shape) for k, v in unet.state_dict().items()}
    with meta:
        vae_shapes = {f"encoder.{k}": tuple(v.shape) for k, v in Encoder(**VAE_CONFIG).state_dict().items()}
        decoder = Decoder(**{**VAE_CONFIG, "ch": VAE_DECODER_CH})
        vae_shapes.update({f"decoder.{k}": tuple(v.shape) for k, v in decoder.state_dict().items()})
    vae_shapes.update({"quant_conv.weight": (8, 8, 1, 1), "quant_conv.bias": (8,),
                       "post_quant_conv.weight": (4, 4, 1, 1), "post_quant_conv.bias": (4,)})

    paths = {"unet": os.path.join(models_dir, "diffusion_models", UNET_NAME),
             "vae": os.path.join(models_dir, "vae", VAE_NAME)}
    for kind, shapes in (("unet", unet_shapes), ("vae", vae_shapes)):
        os.makedirs(os.path.dirname(paths[kind]), exist_ok=True)
        save_file(_random_like(shapes, seed), paths[kind], metadata={"note": "random weights for tests"})
    return paths


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    for kind, path in write(sys.argv[1], sys.argv[2]).items():
        print(kind, path, f"{os.path.getsize(path) / 2**20:.1f} MiB")
