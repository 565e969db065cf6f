"""Thin V3 node classes over faceclip_core, one module per concern."""
from __future__ import annotations

from comfy_api.latest import io

from .encode import FaceCLIPTextEncode
from .folders import register_model_folders
from .loaders import FaceCLIPLoader

NODES: list[type[io.ComfyNode]] = [FaceCLIPLoader, FaceCLIPTextEncode]

__all__ = ["NODES", "register_model_folders"]
