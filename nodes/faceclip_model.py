"""The FaceCLIP encoder under ComfyUI's model management (the pattern of comfy/clip_vision.py).

Weights live on the offload device and are built with comfy.ops.manual_cast; every encode asks the model manager
to load them (evicting others as needed) and leaves them loaded for the manager to offload when the UNet needs
the memory. Nothing is moved to the GPU for good.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence

import comfy.model_management as mm
import comfy.model_patcher
import comfy.ops
import torch

from ..faceclip_core import load_encoder

log = logging.getLogger(__name__)

WEIGHT_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def pick_dtype(choice: str, load_device: torch.device) -> torch.dtype:
    if choice != "auto":
        return WEIGHT_DTYPES[choice]
    # FaceCLIP was run in bf16 by its authors; fp16 only where bf16 is not supported; CPU keeps fp32 exactness.
    if load_device.type == "cpu":
        return torch.float32
    if mm.should_use_bf16(load_device):
        return torch.bfloat16
    return torch.float16 if mm.should_use_fp16(load_device) else torch.float32


class FaceCLIPModel:
    def __init__(self, path: str, weight_dtype: str = "auto", device: str = "auto"):
        self.load_device = mm.text_encoder_device() if device == "auto" else torch.device("cpu")
        offload_device = mm.text_encoder_offload_device() if device == "auto" else torch.device("cpu")
        self.dtype = pick_dtype(weight_dtype, self.load_device)
        self.encoder = load_encoder(path, device=offload_device, dtype=self.dtype, operations=comfy.ops.manual_cast)
        self.patcher = comfy.model_patcher.ModelPatcher(self.encoder, load_device=self.load_device,
                                                        offload_device=offload_device)
        self.path = path

    def encode(self, faces: torch.Tensor, prompts: Sequence[str], face_mask: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """faces [B,3,H,W] in [0,1]; returns (embeddings [B,77,2048], pooled [B,1280]) on the intermediate device."""
        # Full load: the encoder's own LayerNorm/BatchNorm keep fp32 parameters that lowvram streaming would not move.
        mm.load_models_gpu([self.patcher], force_full_load=True)
        embeddings, pooled = self.encoder.encode(faces.to(self.load_device), list(prompts),
                                                 face_mask.to(self.load_device))
        out = mm.intermediate_device()
        return embeddings.to(out, torch.float32), pooled.to(out, torch.float32)

    def encode_text(self, prompts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """The face-free path (zero face, no identity prefix), as FaceCLIP encodes its negative prompt."""
        n = len(prompts)
        return self.encode(torch.zeros(n, 3, 112, 112), prompts, torch.zeros(n, dtype=torch.bool))
