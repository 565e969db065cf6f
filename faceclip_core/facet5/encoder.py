"""FaceT5-FLUX encoder: a face and a prompt -> FLUX's two text conditionings.

``encode`` returns (prompt_embeds [B, 512, 4096], pooled [B, 768]): the fused T5 stream for FLUX's T5 slot and
CLIP-L's pooled vector for its pooled slot. No attention mask exists anywhere (all 512 positions are used). The
module tree is ``FaceT5FluxWrapper``'s: ``encoder_1`` (CLIP-L) and ``encoder_2`` (face ViT, T5, fuser).

Each row is encoded as the official script encodes a conditioning: alone (B=1). A batch therefore equals its rows
encoded one by one, unlike the official code called with B>1, whose fuser mixes rows (see ``facet5.fuser``).
"""
from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import FaceCLIPInputError
from ..layers import ops_or_default, positions
from ..sdxl.encoder import check_faces
from ..sdxl.face_vit import FaceViT
from ..sdxl.tokenizer import check_prompts
from .clip_text import CLIPTextModel
from .config import FaceT5Config
from .fuser import FaceT5Fuser
from .t5 import T5Encoder
from .tokenizer import tokenize_clip, tokenize_t5

logger = logging.getLogger(__name__)


class FaceT5Core(nn.Module):
    """``encoder_2`` (the official ``FaceT5Encoder``): face patches and T5 states, fused into the T5 stream."""

    def __init__(self, cfg: FaceT5Config, device: Any = None, dtype: torch.dtype | None = None,
                 operations: Any = None) -> None:
        super().__init__()
        ops = ops_or_default(operations)
        d = cfg.t5.d_model
        self.t5_encoder = T5Encoder(cfg.t5, device, dtype, ops)
        self.face_encoder = FaceViT(cfg.face, device, dtype, ops)
        self.face_patch_proj = ops.Linear(cfg.face.dim, d, bias=True, device=device, dtype=dtype)
        # The checkpoint's [1, 512, d] sinusoid buffer (bf16-rounded in the release: loaded, never recomputed), as
        # a table of rows. The fuser adds it to the text stream's queries and keys, unprojected.
        self.positional_embedding = ops.Embedding(cfg.text_positions, d, device=device, dtype=dtype)
        self.fuser = FaceT5Fuser(cfg.fuser, device, dtype, ops)

    def forward(self, faces: torch.Tensor, t5_ids: torch.Tensor, dtype: torch.dtype,
                streams: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        patches = self.face_encoder.patch_tokens(faces)
        face = self.face_patch_proj(patches)
        t5 = self.t5_encoder(t5_ids, dtype)
        text = t5.to(dtype)
        fused = self.fuser(face, text, positions(self.positional_embedding, text), streams)
        return {"face_patches": patches, "face_stream_in": face, "t5_hidden": t5, "prompt_embeds": fused}


class FaceT5Encoder(nn.Module):
    """The ``FaceT5FluxWrapper`` equivalent. Build with :func:`faceclip_core.load_facet5_encoder`."""

    def __init__(self, cfg: FaceT5Config, device: Any = None, dtype: torch.dtype | None = None,
                 operations: Any = None, compute_dtype: torch.dtype | None = None) -> None:
        super().__init__()
        ops = ops_or_default(operations)
        self.cfg = cfg
        # The dtype activations run in. With torch.nn layers it must equal the weights' dtype; with
        # comfy.ops.manual_cast it may differ (weights are cast per layer). T5's residual stream is float32 always.
        self.compute_dtype = compute_dtype or dtype or torch.float32
        # The T5 tokenizer.json used by encode() when it is not given one (None: looked up next to ComfyUI).
        self.t5_tokenizer: str | os.PathLike | None = None
        self.encoder_1 = CLIPTextModel(cfg.clip, device, dtype, ops)
        self.encoder_2 = FaceT5Core(cfg, device, dtype, ops)

    # ---- input handling -------------------------------------------------------------------------------------
    def prepare_faces(self, images: Any) -> torch.Tensor:
        """Checked [B,3,H,W] RGB in [0,1] -> [B,3,112,112] in the compute dtype, on the images' device: bilinear,
        align_corners=False, no antialias, no mean/std (as the official encoder resizes every face)."""
        f32 = check_faces(images)
        size = self.cfg.face.img_size
        if f32.shape[-2:] != (size, size):
            f32 = F.interpolate(f32, size=(size, size), mode="bilinear", align_corners=False)
        return f32.to(self.compute_dtype)

    def check_ids(self, ids: Any, name: str, length: int, vocab: int, batch: int) -> torch.Tensor:
        """``ids`` as int64 [batch, length] with every id below ``vocab``, or a FaceCLIPInputError."""
        if not isinstance(ids, torch.Tensor):
            raise FaceCLIPInputError(f"{name} must be a torch.Tensor [B,{length}] of token ids, got "
                                     f"{type(ids).__name__}")
        if ids.dtype == torch.bool or ids.is_floating_point() or ids.is_complex():
            raise FaceCLIPInputError(f"{name} must hold integer token ids, got dtype {ids.dtype}")
        if tuple(ids.shape) != (batch, length):
            raise FaceCLIPInputError(f"{name} must have shape [{batch}, {length}] (one row per face, {length} "
                                     f"tokens as the official tokenizer pads them), got {tuple(ids.shape)}")
        lo, hi = int(ids.min()), int(ids.max())
        if lo < 0 or hi >= vocab:
            raise FaceCLIPInputError(f"{name} holds ids in [{lo}, {hi}], outside the model's vocabulary "
                                     f"[0, {vocab - 1}]")
        return ids.long()

    def prepare(self, images: Any, t5_ids: Any, clip_ids: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        faces = self.prepare_faces(images)
        b = faces.shape[0]
        t5 = self.check_ids(t5_ids, "t5_ids", self.cfg.text_positions, self.cfg.t5.vocab_size, b)
        clip = self.check_ids(clip_ids, "clip_ids", self.cfg.clip.context_length, self.cfg.clip.vocab_size, b)
        return faces, t5, clip

    # ---- forward --------------------------------------------------------------------------------------------
    def run(self, faces: torch.Tensor, t5_ids: torch.Tensor, clip_ids: torch.Tensor,
            streams: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        """Prepared inputs (see :meth:`prepare`) on one device -> every output and intermediate: face_patches,
        face_stream_in, t5_hidden, clip_last_hidden, prompt_embeds, pooled."""
        dtype = self.compute_dtype
        out = self.encoder_2(faces, t5_ids, dtype, streams)
        hidden, pooled = self.encoder_1(clip_ids, dtype)
        out.update(clip_last_hidden=hidden, pooled=pooled)
        return out

    @torch.no_grad()
    def forward_all(self, images: torch.Tensor, t5_ids: torch.Tensor, clip_ids: torch.Tensor,
                    streams: bool = False) -> dict[str, torch.Tensor]:
        """Every intermediate of one call (for tests and debugging); with ``streams`` also the fuser's streams
        after each sub-layer as ``fuser.<i>.biattn_face|biattn_text|text|face``."""
        recorded: dict[str, torch.Tensor] | None = {} if streams else None
        out = self.run(*self.prepare(images, t5_ids, clip_ids), streams=recorded)
        out.update({f"fuser.{k}": v for k, v in (recorded or {}).items()})
        return out

    @torch.no_grad()  # not inference_mode: callers may reuse the outputs in autograd code
    def encode_tokens(self, images: torch.Tensor, t5_ids: torch.Tensor, clip_ids: torch.Tensor, *,
                      device: torch.device | str | None = None, output_device: torch.device | str | None = None,
                      chunk_size: int | None = None, between: Callable[[int, int], None] | None = None
                      ) -> tuple[torch.Tensor, torch.Tensor]:
        """images float [B,3,H,W] RGB in [0,1] (any size; a zero image for the official negative), t5_ids int64
        [B,512], clip_ids int64 [B,77] -> (prompt_embeds [B,512,d_t5] float32, pooled [B,clip_width] float32).

        The inputs are checked once where they are, then each chunk of ``chunk_size`` rows (all at once by
        default) moves to ``device`` (default: the images' device) and its outputs to ``output_device`` (default:
        ``device``). ``between(done, total)`` runs after each chunk (progress, and an interrupt check that raises to
        stop). Chunking never changes the result: rows are independent.
        """
        faces, t5, clip = self.prepare(images, t5_ids, clip_ids)
        device = torch.device(device) if device is not None else faces.device
        output_device = torch.device(output_device) if output_device is not None else device
        total = faces.shape[0]
        step = chunk_size or total
        embeds, pooled = [], []
        for start in range(0, total, step):
            stop = min(total, start + step)
            out = self.run(*(t[start:stop].to(device, non_blocking=True) for t in (faces, t5, clip)))
            embeds.append(out["prompt_embeds"].to(output_device, torch.float32))
            pooled.append(out["pooled"].to(output_device, torch.float32))
            if between is not None:
                between(stop, total)
        return torch.cat(embeds), torch.cat(pooled)

    def encode(self, images: torch.Tensor, prompts: Sequence[str], *,
               t5_tokenizer: str | os.PathLike | None = None, device: torch.device | str | None = None,
               output_device: torch.device | str | None = None, chunk_size: int | None = None,
               between: Callable[[int, int], None] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """images float [B,3,H,W] RGB in [0,1]; prompts: B strings, passed unchanged to both tokenizers as the
        official FLUX script does (no prefix, no suffix). ``t5_tokenizer``: the T5 tokenizer.json (default: this
        encoder's ``t5_tokenizer``, else ComfyUI's). Returns what :meth:`encode_tokens` returns."""
        prompts = check_prompts(prompts)
        if isinstance(images, torch.Tensor) and images.ndim == 4 and len(prompts) != images.shape[0]:
            raise FaceCLIPInputError(f"got {images.shape[0]} face(s) but {len(prompts)} prompt(s); give one prompt "
                                     "per face")
        t5_ids = tokenize_t5(prompts, t5_tokenizer if t5_tokenizer is not None else self.t5_tokenizer)
        clip_ids = tokenize_clip(prompts)
        return self.encode_tokens(images, t5_ids, clip_ids, device=device, output_device=output_device,
                                  chunk_size=chunk_size, between=between)
