"""Per-identity ID embeddings for SDXL: SeFi-IDE ("Beyond Inserting") and ID-EA, as plain PyTorch.

Pieces: ``config`` (dataclasses), ``prompts`` (identity slots in tokenised prompts), ``text`` (differentiable
SDXL text encoding over CLIP modules), ``params`` (parameterisations), ``attention`` (attn2 hooks for the K/V
split, the attention loss and the stage router), ``losses``, ``loop`` (one optimisation loop), ``embedding``
and ``files`` (the learned tokens and their safetensors files).
"""
from __future__ import annotations

from .attention import StageRouter, TrainingAttention
from .config import METHODS, IDEAConfig, MethodConfig, SeFiConfig, TrainConfig
from .embedding import IDEmbedding
from .errors import IdentityError, IdentityFileError
from .files import TrainState, load_embedding, load_state, save_embedding, save_state
from .loop import Denoiser, TrainingProblem, TrainResult, mean_face, train_identity
from .prompts import PromptTokens, tokenize_prompt
from .text import CLIPStack, SDXLTextEncoder

__all__ = [
    "METHODS", "CLIPStack", "Denoiser", "IDEAConfig", "IDEmbedding", "IdentityError", "IdentityFileError",
    "MethodConfig", "PromptTokens", "SDXLTextEncoder", "SeFiConfig", "StageRouter", "TrainConfig", "TrainResult",
    "TrainState", "TrainingAttention", "TrainingProblem", "load_embedding", "load_state", "mean_face",
    "save_embedding", "save_state", "tokenize_prompt", "train_identity",
]
