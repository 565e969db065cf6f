"""Write tiny random-weight models that ComfyUI's own loaders accept, for the end-to-end tests.

- an SDXL-layout diffusion model for `UNETLoader`. ComfyUI detects SDXL from model_channels 320,
  transformer depths [0,0,2,2,10,10] in the input blocks, context 2048 and adm 2816; channel_mult and the middle
  and output depths are read from the weights, so those are shrunk.
- a VAE for `VAELoader`: the standard encoder (its config is fixed in ComfyUI) and a narrow decoder (ComfyUI
  reads the decoder width from decoder.conv_in).
- a FLUX-dev DiT in diffusers key names (FaceT5's dit.pt layout) for `UNETLoader`, which converts those names and
  detects FLUX with guidance_embed. Its text width and pooled width are the tiny FaceT5 encoder's (T5 64, CLIP-L
  128; 4096 and 768 at full size); hidden 128 = one head of FLUX's fixed rope axes (16, 56, 56); one double and
  one single block.
- a 16-channel FLUX VAE in the ae.safetensors layout (no quant convs), full encoder and narrow decoder as above.

ComfyUI's own modules, built on the meta device, supply the exact key names and shapes; the DiT's diffusers names
come from ComfyUI's own diffusers->FLUX key map, inverted.
usage: python tiny_models.py COMFYUI_DIR MODELS_DIR   (writes diffusion_models/ and vae/ under MODELS_DIR)
"""
from __future__ import annotations

import math
import os
import sys

UNET_NAME = "tiny_sdxl_unet.safetensors"
VAE_NAME = "tiny_sdxl_vae.safetensors"
FLUX_DIT_NAME = "facet5_flux_dit.safetensors"  # the name the FaceT5 workflows use for FaceT5's converted dit.pt
FLUX_VAE_NAME = "ae.safetensors"  # FLUX.1-dev's VAE under its published name, as the FaceT5 workflows use it

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
FLUX_CONFIG = dict(
    image_model="flux", in_channels=16, out_channels=16, vec_in_dim=128, context_in_dim=64, hidden_size=128,
    mlp_ratio=4.0, num_heads=1, depth=1, depth_single_blocks=1, axes_dim=[16, 56, 56], theta=10000, patch_size=2,
    qkv_bias=True, guidance_embed=True, txt_ids_dims=[],
)
# Names in ComfyUI's diffusers->FLUX map that the diffusers FluxTransformer2DModel does not have (LyCORIS LoKr
# aliases, FLUX.2 and ControlNet keys).
_NOT_DIFFUSERS_FLUX = ("ff.linear_in.", "ff.linear_out.", "ff_context.linear_in.", "ff_context.linear_out.",
                       "attn.to_qkv_mlp_proj.", "attn.to_out.weight", "controlnet_x_embedder.")


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


def import_comfy(comfy_dir: str) -> None:
    """Make ComfyUI's modules importable, on the CPU."""
    sys.path.insert(0, os.path.abspath(comfy_dir))  # the test venv's CPU shims are installed at start-up
    import comfy.cli_args

    comfy.cli_args.args.cpu = True  # before comfy.model_management is imported: no accelerator probing


def flux_dit_shapes() -> dict:
    """The tiny DiT's diffusers FluxTransformer2DModel names and shapes (after import_comfy): ComfyUI's FLUX model
    built on the meta device, named through ComfyUI's own diffusers->ComfyUI key map (what UNETLoader converts
    with), inverted; its fused q/k/v(/mlp) rows are split."""
    import comfy.ops
    import comfy.utils
    import torch
    from comfy.ldm.flux.model import Flux

    flux = Flux(**FLUX_CONFIG, device=torch.device("meta"), operations=comfy.ops.disable_weight_init)
    comfy_shapes = {k: tuple(v.shape) for k, v in flux.state_dict().items()}
    cfg = FLUX_CONFIG
    key_map = comfy.utils.flux_to_diffusers({"depth": cfg["depth"], "depth_single_blocks": cfg["depth_single_blocks"],
                                             "hidden_size": cfg["hidden_size"]})
    # ComfyUI names FLUX's QK norms "...norm.{query,key}_norm.scale"; its loader renames them to ".weight"
    comfy_shapes = {k[:-len(".scale")] + ".weight" if k.endswith("_norm.scale") else k: v
                    for k, v in comfy_shapes.items()}
    shapes, covered = {}, set()
    for name, target in key_map.items():
        if any(part in name for part in _NOT_DIFFUSERS_FLUX):
            continue
        comfy_key, rows = (target, None) if isinstance(target, str) else (target[0], target[1])
        if comfy_key not in comfy_shapes:
            continue
        shape = list(comfy_shapes[comfy_key])
        if rows is not None:
            dim, _, size = rows
            shape[dim] = size
        shapes[name] = tuple(shape)
        covered.add(comfy_key)
    missing = sorted(set(comfy_shapes) - covered)
    if missing:
        raise RuntimeError(f"no diffusers name for ComfyUI FLUX keys {missing}")
    return shapes


def flux_dit_state_dict(seed: int = 0) -> dict:
    """Random fp16 weights for the tiny DiT in diffusers names, as FaceT5's dit.pt holds them (after
    import_comfy)."""
    return _random_like(flux_dit_shapes(), seed)


def write(comfy_dir: str, models_dir: str, seed: int = 0) -> dict[str, str]:
    import_comfy(comfy_dir)
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

    flux_shapes = flux_dit_shapes()
    flux_vae = {**VAE_CONFIG, "z_channels": 16}
    with meta:
        ae_shapes = {f"encoder.{k}": tuple(v.shape) for k, v in Encoder(**flux_vae).state_dict().items()}
        decoder = Decoder(**{**flux_vae, "ch": VAE_DECODER_CH})
        ae_shapes.update({f"decoder.{k}": tuple(v.shape) for k, v in decoder.state_dict().items()})

    paths = {"unet": os.path.join(models_dir, "diffusion_models", UNET_NAME),
             "vae": os.path.join(models_dir, "vae", VAE_NAME),
             "flux_dit": os.path.join(models_dir, "diffusion_models", FLUX_DIT_NAME),
             "flux_vae": os.path.join(models_dir, "vae", FLUX_VAE_NAME)}
    for kind, shapes in (("unet", unet_shapes), ("vae", vae_shapes), ("flux_dit", flux_shapes),
                         ("flux_vae", ae_shapes)):
        os.makedirs(os.path.dirname(paths[kind]), exist_ok=True)
        save_file(_random_like(shapes, seed), paths[kind], metadata={"note": "random weights for tests"})
    return paths


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    for kind, path in write(sys.argv[1], sys.argv[2]).items():
        print(kind, path, f"{os.path.getsize(path) / 2**20:.1f} MiB")
