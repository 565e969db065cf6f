"""FaceCLIP Text Encode (and, with the faces nodes, FaceCLIP Encode)."""
from __future__ import annotations

from comfy_api.latest import io

from .loaders import FaceCLIP


def as_conditioning(embeddings, pooled) -> list:
    # Exactly what SDXL expects; size keys stay unset so ComfyUI fills them from the latent, as diffusers does.
    return [[embeddings, {"pooled_output": pooled}]]


class FaceCLIPTextEncode(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="FaceCLIPTextEncode",
            display_name="FaceCLIP Text Encode",
            category="FaceCLIP",
            description="Encodes a prompt through FaceCLIP without a face (FaceCLIP's own negative path): for "
                        "negative prompts and for prompts without a person.",
            inputs=[
                FaceCLIP.Input("faceclip", tooltip="From Load FaceCLIP."),
                io.String.Input("text", multiline=True, dynamic_prompts=True,
                                tooltip="The prompt. FaceCLIP reads at most 77 tokens; longer text is cut."),
            ],
            outputs=[io.Conditioning.Output(tooltip="SDXL conditioning for KSampler (FaceCLIP's UNet).")],
        )

    @classmethod
    def execute(cls, faceclip, text: str) -> io.NodeOutput:
        embeddings, pooled = faceclip.encode_text([text])
        return io.NodeOutput(as_conditioning(embeddings, pooled))
