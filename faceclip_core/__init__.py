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
    "load_encoder": ".loader",
    "FaceCLIPEncoder": ".encoder",
    "OFFICIAL_NEGATIVE": ".encoder",
    "tokenize": ".tokenizer",
    "FaceCLIPError": ".errors",
    "FaceCLIPWeightsError": ".errors",
    "FaceCLIPStateDictError": ".errors",
    "FaceCLIPInputError": ".errors",
    # faces (issue 4)
    "align_face": ".faces",
    "detect_faces": ".faces",
    "prepare_faces": ".faces",
    "load_face_detector": ".faces",
    "load_face_recognizer": ".faces",
    "list_model_packs": ".faces",
    "find_model_pack": ".faces",
    "annotate_faces": ".faces",
    "face_thumbnails": ".faces",
    "PreparedFaces": ".faces",
    "PreparedImage": ".faces",
    "PrepareConfig": ".faces",
    "FaceSelection": ".faces",
    "DetectionConfig": ".faces",
    "DetectedFace": ".faces",
    "FaceDetector": ".faces",
    "FaceRecognizer": ".faces",
    "FaceError": ".faces",
    "NoFaceError": ".faces",
    "FaceModelError": ".faces",
    "FaceInputError": ".faces",
    "FaceModels": ".faces",
    "load_face_models": ".faces",
    "similarity_to_reference": ".faces",
    # several faces -> conditioning (issue 5)
    "encode_in_chunks": ".conditioning",
    "average_identity": ".conditioning",
    "WEIGHT_DTYPES": ".dtypes",
    # per-identity ID embeddings: SeFi-IDE and ID-EA (issue 6)
    "train_identity": ".identity",
    "load_embedding": ".identity",
    "save_embedding": ".identity",
    "IDEmbedding": ".identity",
    "IdentityError": ".identity",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'faceclip_core' has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value
