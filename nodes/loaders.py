"""Load FaceCLIP."""
from __future__ import annotations

import folder_paths
from comfy_api.latest import io

from .faceclip_model import WEIGHT_DTYPES, FaceCLIPModel
from .folders import FACECLIP

FaceCLIP = io.Custom("FACECLIP")


class FaceCLIPLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="FaceCLIPLoader",
            display_name="Load FaceCLIP",
            category="FaceCLIP",
            description="Loads the FaceCLIP-SDXL joint face+text encoder. It replaces SDXL's text encoders: wire "
                        "its output into FaceCLIP Encode / FaceCLIP Text Encode, and use FaceCLIP's own SDXL UNet.",
            inputs=[
                io.Combo.Input("encoder_name", options=folder_paths.get_filename_list(FACECLIP),
                               tooltip="Encoder weights in models/faceclip (convert the official "
                                       "face_clip_encoder.pt with `python -m faceclip_core.convert`)."),
                io.Combo.Input("weight_dtype", options=["auto", *WEIGHT_DTYPES], default="auto",
                               tooltip="auto: bf16 on GPUs that support it, else fp16; fp32 on CPU."),
                io.Combo.Input("device", options=["auto", "cpu"], default="auto",
                               tooltip="auto: ComfyUI's text-encoder device, offloaded when the UNet needs the "
                                       "memory. cpu: always run the encoder on the CPU."),
            ],
            outputs=[FaceCLIP.Output(display_name="faceclip")],
        )

    @classmethod
    def execute(cls, encoder_name: str, weight_dtype: str, device: str) -> io.NodeOutput:
        path = folder_paths.get_full_path_or_raise(FACECLIP, encoder_name)
        return io.NodeOutput(FaceCLIPModel(path, weight_dtype, device))
