"""Load FaceCLIP, Load Face Detector."""
from __future__ import annotations

import folder_paths
from comfy_api.latest import io

from ..faceclip_core import WEIGHT_DTYPES
from ..faceclip_core.faces import AUTO_PACK, PROVIDER_CHOICES, list_model_packs, load_face_models
from ..faceclip_core.file_kinds import FACECLIP_SDXL
from .faceclip_model import DEVICES, FaceCLIPModel
from .folders import FACECLIP, INSIGHTFACE, encoder_files
from .types import FaceCLIP, FaceModels


class FaceCLIPLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="FaceCLIPLoader",
            search_aliases=["identity", "likeness", "portrait", "face encoder"],
            display_name="Load FaceCLIP",
            category="FaceCLIP",
            description="Loads the FaceCLIP-SDXL joint face+text encoder. It replaces SDXL's text encoders: wire "
                        "its output into FaceCLIP Encode / FaceCLIP Text Encode, and use FaceCLIP's own SDXL UNet.",
            inputs=[
                io.Combo.Input("encoder_name", options=encoder_files(FACECLIP_SDXL),
                               tooltip="Encoder weights in models/faceclip (convert the official "
                                       "face_clip_encoder.pt with `python -m faceclip_core.convert`)."),
                io.Combo.Input("weight_dtype", options=["auto", *WEIGHT_DTYPES], default="auto",
                               tooltip="How the weights are stored. auto: as ComfyUI stores its text encoders "
                                       "(fp16, or what --fp32/--bf16/--fp16-text-enc says). The encoder computes "
                                       "in fp32 either way."),
                io.Combo.Input("device", options=list(DEVICES), default="auto", advanced=True,
                               tooltip="auto: ComfyUI's text-encoder device, offloaded when the UNet needs the "
                                       "memory. cpu: always run the encoder on the CPU."),
            ],
            outputs=[FaceCLIP.Output(display_name="faceclip")],
        )

    @classmethod
    def execute(cls, encoder_name: str, weight_dtype: str, device: str) -> io.NodeOutput:
        path = folder_paths.get_full_path_or_raise(FACECLIP, encoder_name)
        return io.NodeOutput(FaceCLIPModel(path, weight_dtype, device))


class FaceCLIPFaceDetectorLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        # "auto" first and default, so shared workflows run with whichever pack the user has. With no pack
        # installed, "antelopev2" stays listed so workflows that name it still validate and reach the loader's
        # message saying where to get a pack, instead of ComfyUI's bare "value not in list".
        installed = [p for p in list_model_packs(folder_paths.get_folder_paths(INSIGHTFACE)) if p != AUTO_PACK]
        packs = [AUTO_PACK, *(installed or ["antelopev2"])]
        return io.Schema(
            node_id="FaceCLIPFaceDetectorLoader",
            search_aliases=["insightface", "antelopev2", "buffalo_l", "face detector", "ArcFace"],
            display_name="Load Face Detector",
            category="FaceCLIP",
            description="Loads an insightface model pack: the SCRFD face detector (required) and, when the pack "
                        "has one, the ArcFace recognizer used by Face Similarity. Runs with onnxruntime.",
            inputs=[
                io.Combo.Input("pack", options=packs, default=AUTO_PACK,
                               tooltip="auto: antelopev2 if installed, else buffalo_l, else the first other pack "
                                       "found (the log names the pack used). Or a folder in models/insightface "
                                       "(or any insightface folder in extra_model_paths.yaml) holding the pack's "
                                       ".onnx files."),
                io.Combo.Input("provider", options=list(PROVIDER_CHOICES), default="CPU",
                               tooltip="Where onnxruntime runs the models. CPU is fast enough for reference "
                                       "photos; the others need the matching onnxruntime build (see the log "
                                       "for the provider really used)."),
                io.Int.Input("det_size", default=640, min=160, max=1280, step=32,
                             tooltip="Detector input size. Smaller sizes are tried when no face is found."),
                # optional: API graphs saved before this input existed still validate
                io.Float.Input("threshold", default=0.5, min=0.05, max=0.95, step=0.05, optional=True,
                               advanced=True,
                               tooltip="Minimum detection score. Lower it (e.g. 0.3) for small, dark or turned "
                                       "faces that are not found; raise it if the background gets faces."),
            ],
            outputs=[FaceModels.Output(display_name="face_models")],
        )

    @classmethod
    def execute(cls, pack: str, provider: str, det_size: int, threshold: float = 0.5) -> io.NodeOutput:
        roots = folder_paths.get_folder_paths(INSIGHTFACE)
        return io.NodeOutput(load_face_models(roots, pack, provider, det_size, threshold))
