"""The FaceCLIP encoder under ComfyUI's model management, in the pattern of comfy/clip_vision.py.

Weights are built with comfy.ops.manual_cast on the offload device and wrapped in ComfyUI's CoreModelPatcher
(the dynamic VRAM patcher where main.py enabled it, the classic one elsewhere). Every encode asks the model manager
to load them, fully or partially as memory allows, and leaves them for the manager to offload when the UNet needs
the memory; every weight sits in an operations layer, so partial loads, --lowvram and dynamic streaming work.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import comfy.model_management as mm
import comfy.model_patcher
import comfy.ops
import torch

from ..faceclip_core import WEIGHT_DTYPES, load_encoder

logger = logging.getLogger(__name__)

DEVICES = ("auto", "cpu")
CHUNK_SIZE = 4


def weight_dtype(choice: str, load_device: torch.device) -> torch.dtype:
    """auto: ComfyUI's own text-encoder policy (fp16 by default; --fp32/--bf16/--fp16-text-enc change it)."""
    if choice == "auto":
        dtype = mm.text_encoder_dtype(load_device)
        return dtype if dtype in WEIGHT_DTYPES.values() else torch.float16  # fp8 text encoders: not for FaceCLIP
    return WEIGHT_DTYPES[choice]


class FaceCLIPModel:
    """The FACECLIP socket's value: the encoder, its patcher and the devices. It computes in float32 whatever the
    weights' storage dtype, as ComfyUI computes its own text encoders: FaceCLIP is small next to the UNet, and fp32
    keeps its outputs closest to the official ones (norms and the face ViT's BatchNorms are fp32 either way)."""

    def __init__(self, path: str, weight_dtype_choice: str = "auto", device: str = "auto"):
        self.load_device = mm.text_encoder_device() if device == "auto" else torch.device("cpu")
        offload_device = mm.text_encoder_offload_device() if device == "auto" else torch.device("cpu")
        self.dtype = weight_dtype(weight_dtype_choice, self.load_device)
        self.encoder = load_encoder(path, device=offload_device, dtype=self.dtype, operations=comfy.ops.manual_cast,
                                    compute_dtype=torch.float32)
        self.patcher = comfy.model_patcher.CoreModelPatcher(self.encoder, load_device=self.load_device,
                                                            offload_device=offload_device)
        self.path = path

    def encode(self, faces: torch.Tensor, prompts: Sequence[str], face_mask: torch.Tensor,
               between: Callable[[int, int], None] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """faces [B,3,H,W] in [0,1] and face_mask [B] on the CPU; returns (embeddings [B,77,2048], pooled [B,1280])
        on the intermediate device. Chunks of CHUNK_SIZE faces bound the activations' memory."""
        mm.load_models_gpu([self.patcher])
        return self.encoder.encode(faces, prompts, face_mask, device=self.load_device,
                                   output_device=mm.intermediate_device(), chunk_size=CHUNK_SIZE, between=between)

    def encode_text(self, prompts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """The face-free path (zero face, no identity prefix), as FaceCLIP encodes its negative prompt."""
        n = len(prompts)
        return self.encode(torch.zeros(n, 3, 112, 112), prompts, torch.zeros(n, dtype=torch.bool))
