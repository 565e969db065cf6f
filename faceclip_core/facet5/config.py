"""Architecture of the FaceT5-FLUX encoder (FaceCLIP's FLUX variant), as dataclasses.

The loader infers every field from the checkpoint's tensor shapes (``facet5.loader.infer_config``); the defaults
below are the released model's. Head counts cannot be read from shapes, so they follow the official code's fixed
choices: CLIP-L head_dim 64, face ViT 8 heads, fuser 4 (BiAttention) / 4 (text) / 8 (face) heads; T5's head count
is the width of its relative-position table.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ..sdxl.face_vit import FaceViTConfig
from ..sdxl.fuser import FuserConfig
from ..sdxl.text_tower import TextTowerConfig

T5_LENGTH = 512  # the official T5 tokenizer pads/truncates to this, and the fuser's text positions have this many rows
CLIP_LENGTH = 77

# The FLUX inference script's negative prompt (its ``null_text``), encoded with a zero face in a separate call.
FACET5_NEGATIVE = (
    "digital painting, 3d render, CGI, cartoon, anime, unreal, stylized, overexposed, glossy skin, wearing mask, "
    "looking away from the camera, wearing glasses, wearing sunglasses, nude, worst quality, low quality, normal "
    "quality, nsfw, abstract, glitch, deformed, mutated, ugly, disfigured, text, watermark, bad hands, error, jpeg "
    "artifacts, blurry, missing fingers, poorly drawn face, ugly eyes, imperfect eyes, deformed pupils, deformed "
    "iris, bad anatomy")
# The distilled guidance the official script gives FLUX's guidance embedder (FluxPipeline guidance_scale=1.0) for
# both the positive and the negative pass; its true CFG (3.5) is a sampler setting (ComfyUI's KSampler cfg).
FACET5_GUIDANCE = 1.0


@dataclass(frozen=True)
class T5Config:
    """T5 v1.1 encoder (flash-T5 layout in the checkpoint)."""

    d_model: int = 4096
    layers: int = 24
    heads: int = 64
    d_kv: int = 64
    d_ff: int = 10240
    vocab_size: int = 32128
    buckets: int = 32
    max_distance: int = 128
    eps: float = 1e-6

    @property
    def inner(self) -> int:
        return self.heads * self.d_kv


@dataclass(frozen=True)
class FaceT5FuserConfig:
    """The fuser: per layer a BiAttention block (face <-> text), a text self-attention layer and a face layer."""

    d_model: int = 4096
    layers: int = 6
    bi_dim: int = 1024
    text_ffn: int = 1024
    face_ffn: int = 2048
    bi_heads: int = 4
    text_heads: int = 4
    face_heads: int = 8  # the checkpoint's, though with B=1 semantics the face attention has one key per query
    ln_eps: float = 1e-5
    logit_clamp: float = 50000.0

    def blocks(self) -> FuserConfig:
        """The FaceCLIP-SDXL fuser's config for the blocks both variants share (BiAttentionBlock, TextLayer)."""
        return FuserConfig(d_model=self.d_model, layers=self.layers, bi_dim=self.bi_dim, bi_heads=self.bi_heads,
                           text_heads=self.text_heads, text_ffn=self.text_ffn, ln_eps=self.ln_eps,
                           logit_clamp=self.logit_clamp)


def _clip_l() -> TextTowerConfig:
    return TextTowerConfig(width=768, layers=12, heads=12, mlp_width=3072, activation="quick_gelu")


@dataclass(frozen=True)
class FaceT5Config:
    clip: TextTowerConfig = field(default_factory=_clip_l)
    t5: T5Config = field(default_factory=T5Config)
    face: FaceViTConfig = field(default_factory=lambda: FaceViTConfig(feature_head=False))
    fuser: FaceT5FuserConfig = field(default_factory=FaceT5FuserConfig)
    text_positions: int = T5_LENGTH  # rows of the stored ``encoder_2.positional_embedding``


def default_config() -> FaceT5Config:
    """The released FaceT5-FLUX architecture (CLIP-L, T5-v1.1-XXL, arcface ViT-L, 6 fuser layers at 4096)."""
    return FaceT5Config()
