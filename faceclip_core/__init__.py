"""faceclip_core: the standalone FaceCLIP core (the SDXL encoder, the FaceT5-FLUX encoder, faces, identity methods).
Never imports ComfyUI.

Modules that need optional packages (onnxruntime, insightface, tokenizers) import them when they are used, so
importing this package needs only torch, numpy and safetensors.
"""
from __future__ import annotations

from .conditioning import average_identity
from .dtypes import FP8_WEIGHT_DTYPES, WEIGHT_DTYPES
from .errors import FaceCLIPError, FaceCLIPInputError, FaceCLIPStateDictError, FaceCLIPWeightsError
from .faces import (
                    DetectedFace,
                    DetectionConfig,
                    FaceDetector,
                    FaceError,
                    FaceInputError,
                    FaceModelError,
                    FaceModels,
                    FaceRecognizer,
                    FaceSelection,
                    NoFaceError,
                    PrepareConfig,
                    PreparedFaces,
                    PreparedImage,
                    align_face,
                    annotate_faces,
                    detect_faces,
                    face_thumbnails,
                    find_model_pack,
                    list_model_packs,
                    load_face_detector,
                    load_face_models,
                    load_face_recognizer,
                    mean_identity,
                    prepare_faces,
                    similarity_to_reference,
)
from .facet5 import FACET5_NEGATIVE, FaceT5Encoder, load_facet5_encoder
from .identity import IDEmbedding, IdentityError, load_embedding, save_embedding, train_identity
from .sdxl import OFFICIAL_NEGATIVE, FaceCLIPEncoder, load_encoder, tokenize

__all__ = [
    "FACET5_NEGATIVE", "FP8_WEIGHT_DTYPES", "OFFICIAL_NEGATIVE", "WEIGHT_DTYPES", "DetectedFace",
    "DetectionConfig", "FaceCLIPEncoder", "FaceCLIPError", "FaceT5Encoder",
    "FaceCLIPInputError", "FaceCLIPStateDictError", "FaceCLIPWeightsError", "FaceDetector", "FaceError",
    "FaceInputError", "FaceModelError", "FaceModels", "FaceRecognizer", "FaceSelection", "IDEmbedding",
    "IdentityError", "NoFaceError", "PrepareConfig", "PreparedFaces", "PreparedImage", "align_face",
    "annotate_faces", "average_identity", "detect_faces", "face_thumbnails", "find_model_pack", "list_model_packs",
    "load_embedding", "load_encoder", "load_face_detector", "load_face_models", "load_face_recognizer",
    "load_facet5_encoder",
    "mean_identity", "prepare_faces", "save_embedding", "similarity_to_reference", "tokenize", "train_identity",
]
