"""FaceT5-FLUX: FaceCLIP's FLUX variant. A face image and a prompt -> FLUX's T5 and pooled conditionings.

``load_facet5_encoder`` reads the released ``face_t5_encoder.pt`` (or a .safetensors copy) into a
:class:`FaceT5Encoder`, whose ``encode(images, prompts)`` / ``encode_tokens(images, t5_ids, clip_ids)`` return
(prompt_embeds [B, 512, 4096], pooled [B, 768]).
"""
from __future__ import annotations

from .config import FACET5_GUIDANCE, FACET5_NEGATIVE, FaceT5Config, FaceT5FuserConfig, T5Config, default_config
from .encoder import FaceT5Encoder
from .loader import infer_config, load_facet5_encoder
from .tokenizer import FaceT5TokenizerError, find_t5_tokenizer, tokenize, tokenize_clip, tokenize_t5

__all__ = [
    "FACET5_GUIDANCE", "FACET5_NEGATIVE", "FaceT5Config", "FaceT5Encoder", "FaceT5FuserConfig", "FaceT5TokenizerError",
    "T5Config", "default_config", "find_t5_tokenizer", "infer_config", "load_facet5_encoder", "tokenize",
    "tokenize_clip", "tokenize_t5",
]
