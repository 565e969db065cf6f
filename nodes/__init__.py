"""Thin V3 node classes over faceclip_core, one module per concern."""
from __future__ import annotations

from comfy_api.latest import io

from .encode import FaceCLIPEncode, FaceCLIPTextEncode
from .faces import FaceCLIPPrepareFaces
from .facet5 import FaceCLIPFaceT5Encode, FaceCLIPFaceT5Loader
from .folders import register_model_folders
from .identity import FaceCLIPApplyIDEmbedding, FaceCLIPLoadIDEmbedding, FaceCLIPTrainIDEmbedding
from .loaders import FaceCLIPFaceDetectorLoader, FaceCLIPLoader
from .similarity import FaceCLIPFaceSimilarity

# Node ids are permanent: saved workflows refer to them and store widget values by position.
NODES: list[type[io.ComfyNode]] = [
    FaceCLIPLoader,
    FaceCLIPFaceDetectorLoader,
    FaceCLIPPrepareFaces,
    FaceCLIPEncode,
    FaceCLIPTextEncode,
    FaceCLIPFaceSimilarity,
    FaceCLIPTrainIDEmbedding,
    FaceCLIPLoadIDEmbedding,
    FaceCLIPApplyIDEmbedding,
    FaceCLIPFaceT5Loader,
    FaceCLIPFaceT5Encode,
]

__all__ = ["NODES", "register_model_folders"]
