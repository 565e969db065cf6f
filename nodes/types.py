"""This pack's socket types. Namespaced, so they never link to another pack's look-alike."""
from __future__ import annotations

from comfy_api.latest import io

FaceCLIP = io.Custom("FACECLIP")  # nodes.faceclip_model.FaceCLIPModel
FaceT5 = io.Custom("FACECLIP_FACET5")  # nodes.faceclip_model.FaceT5Model (FaceCLIP's FLUX variant)
FaceModels = io.Custom("FACECLIP_FACE_MODELS")  # faceclip_core.faces.FaceModels
Faces = io.Custom("FACECLIP_FACES")  # faceclip_core.faces.PreparedFaces: aligned crops of one identity
IDEmbeddingType = io.Custom("FACECLIP_ID_EMBEDDING")  # faceclip_core.identity.IDEmbedding
