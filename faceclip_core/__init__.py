"""faceclip_core: the standalone FaceCLIP-SDXL core (encoder, faces, identity methods).

Never imports ComfyUI. Public names are resolved lazily so that importing the package stays
cheap and never pulls optional dependencies (onnxruntime, insightface) until they are used.
"""
from __future__ import annotations

import importlib
from typing import Any

# public name -> submodule that defines it
_EXPORTS: dict[str, str] = {
    # encoder (issue 3)
    # faces (issue 4)
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'faceclip_core' has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value
