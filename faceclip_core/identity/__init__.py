"""Per-identity ID embeddings for SDXL: SeFi-IDE ("Beyond Inserting") and ID-EA, as plain PyTorch.

Pieces: ``config`` (dataclasses), ``prompts`` (identity slots in tokenised prompts), ``text`` (differentiable
SDXL text encoding over CLIP modules), ``params`` (parameterisations), ``attention`` (training-time attn2 hooks:
the K/V split and the attention loss), ``routing`` (noise stages and the per-stage contexts used at sampling),
``data`` (training images framed from the photos), ``losses``, ``loop`` (one optimisation loop), ``embedding``
and ``files`` (the learned tokens and their safetensors files).
"""
from __future__ import annotations

from .attention import AlignmentPlan, TrainingAttention, alignment_plan
from .config import (
                     CLASS_WORDS,
                     METHOD_DEFAULTS,
                     METHODS,
                     PRECISIONS,
                     IDEAConfig,
                     MethodConfig,
                     SeFiConfig,
                     TrainConfig,
                     method_default,
)
from .data import FRAMINGS, TrainingImages, training_images
from .embedding import IDEmbedding
from .errors import IdentityError, IdentityFileError
from .files import TrainState, load_embedding, load_state, save_embedding, save_state
from .loop import Denoiser, StepStats, TrainingProblem, TrainResult, anchor_words, token_gradients, train_identity
from .prompts import PromptTokens, tokenize_prompt
from .routing import StageContexts, encode_stages, route, stage_index
from .text import CLIPStack, SDXLTextEncoder

__all__ = [
    "CLASS_WORDS", "FRAMINGS", "METHODS", "METHOD_DEFAULTS", "PRECISIONS", "AlignmentPlan", "CLIPStack",
    "Denoiser", "IDEAConfig", "IDEmbedding", "IdentityError", "IdentityFileError", "MethodConfig", "PromptTokens",
    "SDXLTextEncoder", "SeFiConfig", "StageContexts", "StepStats", "TrainConfig", "TrainResult", "TrainState",
    "TrainingAttention", "TrainingImages", "TrainingProblem", "alignment_plan", "anchor_words", "load_embedding",
    "encode_stages", "load_state", "method_default", "route", "save_embedding", "save_state", "stage_index",
    "token_gradients", "tokenize_prompt", "train_identity", "training_images",
]
