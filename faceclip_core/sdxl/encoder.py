"""FaceCLIP-SDXL encoder: two branches (L and G) -> SDXL conditioning.

Each branch = face ViT + CLIP text tower + projections + fusion encoder. ``encode`` returns
embeddings [B, 77, 2048] (L fused 768 | G fused 1280) and pooled [B, 1280] (G ln_final at EOT).
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import FaceCLIPInputError
from ..layers import ops_or_default, positions
from .face_vit import FaceViT, FaceViTConfig
from .fuser import Fuser, FuserConfig
from .text_tower import TextTowerConfig, build_text_tower, run_text_tower
from .tokenizer import CONTEXT_LENGTH, check_prompts, cut_notice, get_tokenizer, tokenize_batch

logger = logging.getLogger(__name__)

ID_PREFIX = "Photo of a id person. "
ID_TOKEN = 1014  # BPE id of "id"
# Positions 0..6 cover SOT + the prefix minus its last token; only the prefix's "id" (position 4) lies inside.
ID_WINDOW = 7
BRANCHES = ("face_clip_l", "face_clip_g")
# The negative prompt of the official SDXL inference script, encoded with a zero face and no identity prefix.
OFFICIAL_NEGATIVE = (
    "nude, worst quality, low quality, normal quality, nsfw, abstract, glitch, deformed, mutated, ugly, "
    "disfigured, text, watermark, bad hands, error, jpeg artifacts, blurry, missing fingers, poorly drawn face, "
    "ugly eyes, imperfect eyes, deformed pupils, deformed iris, bad anatomy")


def cut_notices(texts: Mapping[str, str], with_face: Collection[str] = ()) -> list[str]:
    """One notice per named text longer than FaceCLIP's 77 tokens (start and end included); the texts named in
    ``with_face`` are counted with the identity prefix FaceCLIP puts before a prompt that has a face."""
    tokenizer = get_tokenizer()
    full = [ID_PREFIX + text if name in with_face else text for name, text in texts.items()]
    lengths = tokenizer(check_prompts(full)).lengths
    prefix = f" with FaceCLIP's identity prefix ({len(tokenizer.encode(ID_PREFIX))} tokens)"
    return [cut_notice(name, n, CONTEXT_LENGTH, "FaceCLIP", prefix if name in with_face else "")
            for name, n in zip(texts, lengths, strict=True) if n > CONTEXT_LENGTH]


@dataclass(frozen=True)
class BranchConfig:
    text: TextTowerConfig
    face: FaceViTConfig = field(default_factory=FaceViTConfig)
    fuser: FuserConfig | None = None

    @property
    def width(self) -> int:
        return self.text.width


@dataclass(frozen=True)
class EncoderConfig:
    l: BranchConfig
    g: BranchConfig
    # When the two branches' face ViTs hold bit-identical weights, build one and run it once.
    share_face_encoder: bool = False

    def branch(self, name: str) -> BranchConfig:
        return self.l if name == "face_clip_l" else self.g


def default_config(share_face_encoder: bool = False) -> EncoderConfig:
    """The released FaceCLIP-SDXL architecture (MetaCLIP ViT-L-14-quickgelu + ViT-bigG-14 text towers)."""
    def branch(width: int, layers: int, activation: str) -> BranchConfig:
        return BranchConfig(
            text=TextTowerConfig(width=width, layers=layers, heads=width // 64, mlp_width=4 * width,
                                 activation=activation),
            face=FaceViTConfig(),
            fuser=FuserConfig(d_model=width),
        )
    return EncoderConfig(l=branch(768, 12, "quick_gelu"), g=branch(1280, 32, "gelu"),
                         share_face_encoder=share_face_encoder)


class FaceCLIPBranch(nn.Module):
    """One ``TextImageBranch``: its parameters keep the official names under ``face_clip_l.`` / ``face_clip_g.``."""

    def __init__(self, cfg: BranchConfig, device: Any = None, dtype: torch.dtype | None = None,
                 operations: Any = None, face_encoder: FaceViT | None = None) -> None:
        super().__init__()
        ops = ops_or_default(operations)
        d, vd = cfg.width, cfg.face.dim
        fuser_cfg = cfg.fuser or FuserConfig(d_model=d)
        self.cfg = cfg
        build_text_tower(self, cfg.text, device=device, dtype=dtype, operations=ops)
        self.face_encoder = face_encoder if face_encoder is not None else FaceViT(cfg.face, device, dtype, ops)
        self.proj1 = ops.Linear(cfg.face.embed_size, d, bias=True, device=device, dtype=dtype)
        self.face_patch_proj = ops.Linear(vd, d, bias=True, device=device, dtype=dtype)
        self.face_pos_proj = ops.Linear(vd, d, bias=True, device=device, dtype=dtype)
        self.text_embed_proj = ops.Linear(d, d, bias=True, device=device, dtype=dtype)
        self.text_pos_proj = ops.Linear(d, d, bias=True, device=device, dtype=dtype)
        self.fuser = Fuser(fuser_cfg, device=device, dtype=dtype, operations=ops)

    def id_token(self, face_embed: torch.Tensor) -> torch.Tensor:
        # Plain division, no eps, as the official code (a zero face still has a non-zero embedding: BN shifts).
        f = face_embed.float()
        return self.proj1((f / f.norm(dim=-1, keepdim=True)).to(face_embed.dtype))

    def forward(self, face_embed: torch.Tensor, face_patches: torch.Tensor, token_ids: torch.Tensor,
                id_mask: torch.Tensor) -> dict[str, torch.Tensor]:
        dtype = face_patches.dtype
        id_tok = self.id_token(face_embed)
        hidden, pooled = run_text_tower(self, token_ids, id_mask, id_tok, dtype)
        text = self.text_embed_proj(hidden)
        text_pos = self.text_pos_proj(positions(self.positional_embedding, text))
        face = self.face_patch_proj(face_patches)
        face_pos = self.face_pos_proj(positions(self.face_encoder.pos_embed, face))
        fused = self.fuser(face, face_pos, text, text_pos[None].expand_as(text))
        return {"id_token": id_tok, "text_hidden": hidden, "pooled": pooled, "fused": fused}


def check_faces(faces: Any) -> torch.Tensor:
    """Refuse, saying what to do, anything but a non-empty float RGB batch [B,3,H,W] in [0,1]; return it detached in
    float32 on its device."""
    if not isinstance(faces, torch.Tensor):
        raise FaceCLIPInputError(f"faces must be a torch.Tensor [B,3,H,W], got {type(faces).__name__}")
    if faces.ndim == 3 and faces.shape[0] == 3:
        raise FaceCLIPInputError(f"faces must be batched [B,3,H,W], got {tuple(faces.shape)}; "
                                 "add a batch dimension with faces[None]")
    if faces.ndim != 4 or faces.shape[1] != 3:
        hint = ""
        if faces.ndim == 4 and faces.shape[-1] in (3, 4):
            hint = " (this looks channels-last like a ComfyUI IMAGE [B,H,W,C]: use image[..., :3].permute(0,3,1,2))"
        raise FaceCLIPInputError(f"faces must be RGB [B,3,H,W], got shape {tuple(faces.shape)}{hint}")
    if faces.shape[0] == 0 or faces.shape[2] == 0 or faces.shape[3] == 0:
        raise FaceCLIPInputError(f"faces is empty: shape {tuple(faces.shape)}")
    if not faces.is_floating_point():
        raise FaceCLIPInputError(f"faces must be float in [0,1], got dtype {faces.dtype}"
                                 + ("; divide uint8 images by 255" if faces.dtype == torch.uint8 else ""))
    f32 = faces.detach().float()
    if not torch.isfinite(f32).all():
        raise FaceCLIPInputError("faces contains NaN or infinite values")
    lo, hi = f32.min().item(), f32.max().item()
    # A little slack for resampling overshoot upstream; anything further off is a wrong convention.
    if lo < -1e-3 or hi > 1 + 1e-3:
        hint = " (0..255 pixels? divide by 255)" if hi > 1.5 else " ([-1,1] normalised? use (x+1)/2)" \
            if lo < -0.5 else ""
        raise FaceCLIPInputError(f"faces must be RGB in [0,1], got values in [{lo:.4g}, {hi:.4g}]{hint}")
    return f32


@dataclass(frozen=True)
class EncodeInputs:
    faces: torch.Tensor  # [B, 3, 112, 112] compute dtype, zeros where mask is False
    token_ids: torch.Tensor  # [B, 77]
    id_mask: torch.Tensor  # [B, 77] bool
    face_mask: torch.Tensor  # [B] bool

    def __len__(self) -> int:
        return int(self.faces.shape[0])

    def rows(self, start: int, stop: int, device: torch.device) -> EncodeInputs:
        """Rows start..stop-1 on ``device`` (one copy per tensor)."""
        return EncodeInputs(*(t[start:stop].to(device, non_blocking=True) for t in
                              (self.faces, self.token_ids, self.id_mask, self.face_mask)))


class FaceCLIPEncoder(nn.Module):
    """The FaceCLIP_L_G_Wrapper equivalent. Build with :func:`faceclip_core.load_encoder`."""

    def __init__(self, cfg: EncoderConfig, device: Any = None, dtype: torch.dtype | None = None,
                 operations: Any = None, compute_dtype: torch.dtype | None = None) -> None:
        super().__init__()
        ops = ops_or_default(operations)
        self.cfg = cfg
        # The dtype activations run in. With torch.nn layers it must equal the weights' dtype; with
        # comfy.ops.manual_cast it may differ (weights are cast per layer).
        self.compute_dtype = compute_dtype or dtype or torch.float32
        self.face_clip_l = FaceCLIPBranch(cfg.l, device, dtype, ops)
        shared = self.face_clip_l.face_encoder if cfg.share_face_encoder else None
        self.face_clip_g = FaceCLIPBranch(cfg.g, device, dtype, ops, face_encoder=shared)

    @property
    def face_encoder_shared(self) -> bool:
        return self.face_clip_g.face_encoder is self.face_clip_l.face_encoder

    # ---- input handling -------------------------------------------------------------------------------------
    def prepare(self, faces: torch.Tensor, prompts: Sequence[str], face_mask: Any) -> EncodeInputs:
        """Validate the arguments of :meth:`encode` and turn them into model inputs, on the faces' device. Faces on
        the CPU are checked without any device synchronisation."""
        f32 = check_faces(faces)
        b = faces.shape[0]
        prompts = check_prompts(prompts)
        if len(prompts) != b:
            raise FaceCLIPInputError(f"got {b} face(s) but {len(prompts)} prompt(s); give one prompt per face")

        if isinstance(face_mask, torch.Tensor):
            mask = face_mask.detach().to("cpu")
        else:
            try:
                mask = torch.as_tensor(face_mask)
            except (TypeError, ValueError, RuntimeError) as err:
                raise FaceCLIPInputError(f"face_mask must be a bool tensor or list of bools: {err}") from err
        if mask.dtype != torch.bool:
            raise FaceCLIPInputError(f"face_mask must be bool (True = use the face), got dtype {mask.dtype}")
        mask = mask.reshape(-1) if mask.ndim == 0 else mask
        if mask.ndim != 1 or mask.shape[0] != b:
            raise FaceCLIPInputError(f"face_mask must have shape [{b}] (one flag per face), got {tuple(mask.shape)}")

        texts = [ID_PREFIX + p if m else p for p, m in zip(prompts, mask.tolist(), strict=True)]
        ids = tokenize_batch(texts).ids
        # Only the prefix "id" (position 4) is replaced; an "id" the user typed stays an ordinary token.
        window = torch.arange(ids.shape[1]) < ID_WINDOW
        id_mask = (ids == ID_TOKEN) & window[None, :] & mask[:, None]

        dev = faces.device
        img = f32
        if img.shape[-2:] != (self.cfg.l.face.img_size,) * 2:
            size = self.cfg.l.face.img_size
            img = F.interpolate(img, size=(size, size), mode="bilinear", align_corners=False)
        # Rows without a face take the official negative path: an all-zero image through the ViT.
        img = torch.where(mask.to(dev)[:, None, None, None], img, torch.zeros((), device=dev))
        return EncodeInputs(faces=img.to(self.compute_dtype), token_ids=ids.to(dev), id_mask=id_mask.to(dev),
                            face_mask=mask.to(dev))

    # ---- forward --------------------------------------------------------------------------------------------
    def run_faces(self, faces: torch.Tensor) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        out = {"face_clip_l": self.face_clip_l.face_encoder(faces)}
        if self.face_encoder_shared:
            out["face_clip_g"] = out["face_clip_l"]
        else:
            out["face_clip_g"] = self.face_clip_g.face_encoder(faces)
        return out

    def forward_all(self, inputs: EncodeInputs) -> dict[str, dict[str, torch.Tensor]]:
        """All intermediates per branch (face_embed, face_patches, id_token, text_hidden, pooled, fused)."""
        faces = self.run_faces(inputs.faces)
        result = {}
        for name in BRANCHES:
            emb, patches = faces[name]
            out = getattr(self, name)(emb, patches, inputs.token_ids, inputs.id_mask)
            out.update(face_embed=emb, face_patches=patches, token_ids=inputs.token_ids, id_insert_mask=inputs.id_mask)
            result[name] = out
        return result

    @torch.no_grad()  # not inference_mode: callers may reuse the outputs in autograd code (ID-embedding training)
    def encode(self, faces: torch.Tensor, prompts: Sequence[str], face_mask: Any, *,
               device: torch.device | str | None = None, output_device: torch.device | str | None = None,
               chunk_size: int | None = None, between: Callable[[int, int], None] | None = None
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """faces float [B,3,H,W] RGB in [0,1]; prompts: B strings (the id prefix is added where face_mask is True);
        face_mask bool [B]. Returns (embeddings [B,77,dL+dG] float32, pooled [B,dG] float32).

        The inputs are checked once where they are (keep them on the CPU: no device syncs), then each chunk of
        ``chunk_size`` rows (all at once by default) moves once to ``device`` (default: the faces' device) and
        its outputs to ``output_device`` (default: ``device``). The weights may live elsewhere: under a model
        manager they are cast and moved per layer. ``between(done, total)`` runs after each chunk (progress, and
        an interrupt check that raises to stop).
        """
        inputs = self.prepare(faces, prompts, face_mask)
        device = torch.device(device) if device is not None else faces.device
        output_device = torch.device(output_device) if output_device is not None else device
        total = len(inputs)
        step = chunk_size or total
        embeddings, pooled = [], []
        for start in range(0, total, step):
            stop = min(total, start + step)
            out = self.forward_all(inputs.rows(start, stop, device))
            fused = torch.cat([out["face_clip_l"]["fused"], out["face_clip_g"]["fused"]], dim=-1)
            embeddings.append(fused.to(output_device, torch.float32))
            pooled.append(out["face_clip_g"]["pooled"].to(output_device, torch.float32))
            if between is not None:
                between(stop, total)
        return torch.cat(embeddings), torch.cat(pooled)
