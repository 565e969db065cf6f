"""The FaceCLIP encoders (SDXL and FaceT5-FLUX) under ComfyUI's model management, in the pattern of
comfy/clip_vision.py.

Weights are built with comfy.ops.manual_cast on the offload device and wrapped in ComfyUI's CoreModelPatcher
(the dynamic VRAM patcher where main.py enabled it, the classic one elsewhere). Every encode asks the model manager
to load them, fully or partially as memory allows, and leaves them for the manager to offload when the UNet needs
the memory; every weight sits in an operations layer, so partial loads, --lowvram and dynamic streaming work.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

import comfy.model_management as mm
import comfy.model_patcher
import comfy.ops
import torch

from ..faceclip_core import FP8_WEIGHT_DTYPES, WEIGHT_DTYPES, load_encoder, load_facet5_encoder
from ..faceclip_core.facet5 import find_t5_tokenizer
from ..faceclip_core.facet5.tokenizer import cut_notices as facet5_cut_notices
from ..faceclip_core.sdxl.encoder import cut_notices as sdxl_cut_notices

logger = logging.getLogger(__name__)

DEVICES = ("auto", "cpu")
CHUNK_SIZE = 4


def weight_dtypes(choice: str, load_device: torch.device) -> tuple[torch.dtype, torch.dtype | None]:
    """(the weights' dtype, the 8-bit dtype of the Linear weights or None). auto: ComfyUI's own text-encoder policy
    (fp16 by default; --fp32/--bf16/--fp16-text-enc change it). 8-bit weights only when picked by name: their cost
    in accuracy is too high to follow --fp8_e4m3fn-text-enc silently."""
    if choice == "auto":
        dtype = mm.text_encoder_dtype(load_device)
        return (dtype if dtype in WEIGHT_DTYPES.values() else torch.float16), None
    if choice in FP8_WEIGHT_DTYPES:
        return torch.bfloat16, FP8_WEIGHT_DTYPES[choice]
    return WEIGHT_DTYPES[choice], None


class ManagedEncoder:
    """An encoder built with comfy.ops.manual_cast layers on the offload device and wrapped in a CoreModelPatcher;
    it computes in float32 whatever the weights' storage dtype, as ComfyUI computes its own text encoders."""

    def __init__(self, load: Callable[..., torch.nn.Module], path: str, weight_dtype_choice: str = "auto",
                 device: str = "auto", **load_options: Any):
        self.load_device = mm.text_encoder_device() if device == "auto" else torch.device("cpu")
        offload_device = mm.text_encoder_offload_device() if device == "auto" else torch.device("cpu")
        self.dtype, linear_dtype = weight_dtypes(weight_dtype_choice, self.load_device)
        if linear_dtype is not None:
            load_options["linear_dtype"] = linear_dtype
        self.encoder = load(path, device=offload_device, dtype=self.dtype, operations=comfy.ops.manual_cast,
                            compute_dtype=torch.float32, **load_options)
        self.patcher = comfy.model_patcher.CoreModelPatcher(self.encoder, load_device=self.load_device,
                                                            offload_device=offload_device)
        self.path = path


class FaceCLIPModel(ManagedEncoder):
    """The FACECLIP socket's value: the FaceCLIP-SDXL encoder, its patcher and the devices. fp32 compute keeps its
    outputs closest to the official ones (FaceCLIP is small next to the UNet; norms and the face ViT's BatchNorms
    are fp32 either way)."""

    def __init__(self, path: str, weight_dtype_choice: str = "auto", device: str = "auto"):
        super().__init__(load_encoder, path, weight_dtype_choice, device)

    def encode(self, faces: torch.Tensor, prompts: Sequence[str], face_mask: torch.Tensor,
               between: Callable[[int, int], None] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """faces [B,3,H,W] in [0,1] and face_mask [B] on the CPU; returns (embeddings [B,77,2048], pooled [B,1280])
        on the intermediate device. Chunks of CHUNK_SIZE faces bound the activations' memory."""
        mm.load_models_gpu([self.patcher])
        return self.encoder.encode(faces, prompts, face_mask, device=self.load_device,
                                   output_device=mm.intermediate_device(), chunk_size=CHUNK_SIZE, between=between)

    def cut_notices(self, texts: Mapping[str, str], with_face: Collection[str] = ()) -> list[str]:
        """What to tell the user about each named text FaceCLIP cuts (77 tokens, with the identity prefix for
        the texts named in ``with_face``)."""
        return sdxl_cut_notices(texts, with_face)

    def encode_text(self, prompts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """The face-free path (zero face, no identity prefix), as FaceCLIP encodes its negative prompt."""
        n = len(prompts)
        return self.encode(torch.zeros(n, 3, 112, 112), prompts, torch.zeros(n, dtype=torch.bool))


def comfy_t5_tokenizer() -> Path:
    """The T5 tokenizer.json the running ComfyUI ships (comfy/text_encoders/t5_tokenizer/), which FaceT5 uses as
    the official FLUX pipeline uses T5TokenizerFast."""
    # comfy is a namespace package (no __file__); model_management is a module of it
    return find_t5_tokenizer(Path(mm.__file__).resolve().parent)


class FaceT5Model(ManagedEncoder):
    """The FACECLIP_FACET5 socket's value: the FaceT5-FLUX encoder (CLIP-L, T5-XXL, face ViT, fuser), its patcher
    and the devices. fp32 compute matters more here than for FaceCLIP-SDXL: T5's activations overflow fp16."""

    def __init__(self, path: str, weight_dtype_choice: str = "auto", device: str = "auto"):
        super().__init__(load_facet5_encoder, path, weight_dtype_choice, device, t5_tokenizer=comfy_t5_tokenizer())

    def encode(self, faces: torch.Tensor, prompts: Sequence[str],
               between: Callable[[int, int], None] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """faces [B,3,H,W] in [0,1] on the CPU (zeros: the official face-free encoding), one prompt per face;
        returns (prompt_embeds [B,512,4096], pooled [B,768]) on the intermediate device, each row encoded alone."""
        mm.load_models_gpu([self.patcher])
        return self.encoder.encode(faces, prompts, device=self.load_device, output_device=mm.intermediate_device(),
                                   chunk_size=CHUNK_SIZE, between=between)

    def cut_notices(self, texts: Mapping[str, str]) -> list[str]:
        """What to tell the user about each named text FaceT5 cuts (512 T5 tokens)."""
        return facet5_cut_notices(texts, self.encoder.t5_tokenizer)

    def encode_text(self, prompts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """The face-free path (a zero face, as the official script encodes its negative): one row per prompt.
        112 px zeros are what a zero 448 crop becomes inside the face ViT, without the resize."""
        return self.encode(torch.zeros(len(prompts), 3, 112, 112), prompts)
