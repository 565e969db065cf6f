"""Load FaceT5, FaceT5 Encode: FaceCLIP's FLUX variant (FaceT5-FLUX) as standard FLUX conditioning."""
from __future__ import annotations

import folder_paths
import torch
from comfy_api.latest import io

from ..faceclip_core import FP8_WEIGHT_DTYPES, WEIGHT_DTYPES, average_identity
from ..faceclip_core.facet5 import FACET5_GUIDANCE, FACET5_NEGATIVE
from ..faceclip_core.file_kinds import FACET5
from .conditioning import flux_conditioning
from .encode import IDENTITY_MODES, show_cuts
from .faceclip_model import DEVICES, FaceT5Model
from .folders import FACECLIP, encoder_files
from .progress import progress_callback
from .types import Faces, FaceT5


class FaceCLIPFaceT5Loader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="FaceCLIPFaceT5Loader",
            search_aliases=["identity", "likeness", "portrait", "flux", "FaceT5", "face encoder", "T5"],
            display_name="Load FaceT5",
            category="FaceCLIP",
            description="Loads the FaceT5-FLUX encoder (FaceCLIP's FLUX variant: its own CLIP-L and T5-XXL fused "
                        "with a face). It replaces FLUX's text encoders: wire it into FaceT5 Encode and use "
                        "FaceT5's own FLUX DiT (dit.pt) with core Load Diffusion Model.",
            inputs=[
                io.Combo.Input("encoder_name", options=encoder_files(FACET5),
                               tooltip="FaceT5 weights in models/faceclip (convert the official "
                                       "face_t5_encoder.pt with `python -m faceclip_core.convert`)."),
                io.Combo.Input("weight_dtype", options=["auto", *WEIGHT_DTYPES, *FP8_WEIGHT_DTYPES],
                               default="auto",
                               tooltip="How the weights are stored. auto: as ComfyUI stores its text encoders "
                                       "(fp16, or what --fp32/--bf16/--fp16-text-enc says). fp16/bf16 "
                                       "take about 12 GB, fp32 about 24 GB, fp8_e4m3fn about 6 GB (Linear weights "
                                       "in 8 bits: less faithful, see the help page). The encoder computes "
                                       "in fp32 either way."),
                io.Combo.Input("device", options=list(DEVICES), default="auto", advanced=True,
                               tooltip="auto: ComfyUI's text-encoder device, offloaded when the FLUX model needs "
                                       "the memory. cpu: always run the encoder on the CPU."),
            ],
            outputs=[FaceT5.Output(display_name="facet5")],
        )

    @classmethod
    def execute(cls, encoder_name: str, weight_dtype: str, device: str) -> io.NodeOutput:
        path = folder_paths.get_full_path_or_raise(FACECLIP, encoder_name)
        return io.NodeOutput(FaceT5Model(path, weight_dtype, device))


class FaceCLIPFaceT5Encode(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="FaceCLIPFaceT5Encode",
            search_aliases=["identity", "likeness", "portrait", "flux", "FaceT5", "face", "person", "ID"],
            display_name="FaceT5 Encode",
            category="FaceCLIP",
            description="FaceT5-FLUX's joint face+text encoding: the person's face and your prompt become FLUX "
                        "conditioning (guidance 1.0) for FaceT5's FLUX DiT. Also encodes the negative the "
                        "official way (zero face). Sample with KSampler cfg 3.5 (true CFG).",
            inputs=[
                FaceT5.Input("facet5", tooltip="From Load FaceT5."),
                Faces.Input("faces", tooltip="From Prepare Faces (its aligned 448 crops)."),
                io.String.Input("prompt", multiline=True, dynamic_prompts=True,
                                tooltip="What the image shows, e.g. 'A woman wearing a blue denim shirt and khaki "
                                        "pants, on a rocky desert plateau'. Name the subject; no trigger word. "
                                        "Read whole by T5 (up to 511 tokens) and CLIP-L (77); no (word:1.2) "
                                        "weights."),
                io.String.Input("negative", multiline=True, default=FACET5_NEGATIVE, optional=True,
                                tooltip="Negative prompt, encoded with a zero face (the official FLUX string by "
                                        "default)."),
                io.Combo.Input("identity", options=list(IDENTITY_MODES), default="per_face", optional=True,
                               tooltip="per_face: one conditioning per face (face i -> latent i of the batch). "
                                       "average: all faces blended into one identity."),
            ],
            outputs=[io.Conditioning.Output(display_name="positive"),
                     io.Conditioning.Output(display_name="negative")],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def execute(cls, facet5, faces, prompt: str, negative: str = FACET5_NEGATIVE,
                identity: str = "per_face") -> io.NodeOutput:
        show_cuts(facet5, {"prompt": prompt, "negative prompt": negative}, cls.hidden.unique_id)
        # text_only slots of Prepare Faces are zero crops: the official face-free encoding (FaceT5 reads no mask)
        crops = torch.from_numpy(faces.crops_float()).permute(0, 3, 1, 2)
        embeds, pooled = facet5.encode(crops, [prompt] * len(faces), between=progress_callback(len(faces)))
        if identity == "average":
            embeds, pooled = average_identity(embeds, pooled, torch.from_numpy(faces.has_face))
        neg_embeds, neg_pooled = facet5.encode_text([negative])  # its own B=1 call, as the official script
        return io.NodeOutput(flux_conditioning(embeds, pooled, FACET5_GUIDANCE),
                             flux_conditioning(neg_embeds, neg_pooled, FACET5_GUIDANCE))
