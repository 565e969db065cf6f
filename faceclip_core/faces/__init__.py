"""Face detection, selection and five-point alignment for FaceCLIP (no ComfyUI imports).

Importing this package needs only numpy: insightface, onnxruntime, onnx and OpenCV are
imported when models are loaded or images warped, so a broken install of any of them
never breaks ``import faceclip_core``.

Typical use::

    from faceclip_core.faces import load_face_detector, prepare_faces, PrepareConfig
    det = load_face_detector(["/ComfyUI/models/insightface"], "antelopev2", "CPU")
    faces = prepare_faces(images, det, config=PrepareConfig(on_no_face="skip"))
    faces.crops  # [N, 448, 448, 3] uint8, aligned like insightface norm_crop(.., 448)
"""
from __future__ import annotations

from .align import (
                    ARCFACE_TEMPLATE_112,
                    FACECLIP_FACE_SIZE,
                    align_face,
                    alignment_matrix,
                    estimate_similarity,
                    template_landmarks,
                    transform_points,
)
from .annotate import annotate_faces, face_thumbnails, letterbox_batch
from .detect import (
                    DetectedFace,
                    DetectionConfig,
                    DetectionResult,
                    FaceDetector,
                    detect_faces,
                    load_detector_file,
                    load_face_detector,
)
from .errors import FaceError, FaceInputError, FaceModelError, NoFaceError
from .face_models import FaceModels, load_face_models, reference_embedding, similarity_to_reference
from .framing import FRAMINGS, frame_face, framing_matrix
from .images import split_images, to_float01, to_rgb_uint8
from .model_packs import (
                    AUTO_PACK,
                    PROVIDER_CHOICES,
                    ModelPack,
                    find_model_pack,
                    inspect_onnx,
                    list_model_packs,
                    resolve_auto_pack,
                    resolve_providers,
)
from .prepare import NO_FACE_POLICIES, PrepareConfig, PreparedFaces, PreparedImage, prepare_faces
from .recognize import FaceRecognizer, load_face_recognizer, load_recognizer_file, mean_identity
from .select import SELECTION_POLICIES, FaceSelection, order_faces, select_face

__all__ = [
    "ARCFACE_TEMPLATE_112", "AUTO_PACK", "FACECLIP_FACE_SIZE", "FRAMINGS", "NO_FACE_POLICIES", "PROVIDER_CHOICES",
    "SELECTION_POLICIES", "DetectedFace", "DetectionConfig", "DetectionResult",
    "FaceDetector", "FaceError", "FaceModels", "load_face_models", "reference_embedding",
    "similarity_to_reference", "letterbox_batch", "FaceInputError", "FaceModelError", "FaceRecognizer",
    "FaceSelection", "ModelPack", "NoFaceError", "PrepareConfig", "PreparedFaces",
    "PreparedImage", "align_face", "alignment_matrix", "annotate_faces",
    "detect_faces", "mean_identity", "estimate_similarity", "face_thumbnails",
    "find_model_pack", "frame_face", "framing_matrix", "inspect_onnx", "list_model_packs", "load_detector_file",
    "load_face_detector", "load_face_recognizer", "load_recognizer_file", "order_faces",
    "prepare_faces", "resolve_auto_pack", "resolve_providers", "select_face", "split_images",
    "template_landmarks", "to_float01", "to_rgb_uint8", "transform_points",
]
