"""FaceCLIP Encode, FaceCLIP Text Encode: FaceCLIP's joint face+text encoding as standard SDXL conditioning."""
from __future__ import annotations

import torch
from comfy_api.latest import io

from ..faceclip_core import OFFICIAL_NEGATIVE, average_identity
from .conditioning import sdxl_conditioning
from .progress import progress_callback, show_on_node
from .types import FaceCLIP, Faces

IDENTITY_MODES = ("per_face", "average")


def show_cuts(model, texts: dict[str, str], node_id: str | None, **options) -> None:
    """Say on the node which texts the encoder cuts (the server log has it too, where few look)."""
    notices = model.cut_notices(texts, **options)
    if notices:
        show_on_node("\n".join(notices), node_id, keep=True)


class FaceCLIPEncode(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="FaceCLIPEncode",
            search_aliases=["identity", "likeness", "portrait", "face", "person", "ID"],
            display_name="FaceCLIP Encode",
            category="FaceCLIP",
            description="Joint face+text encoding: the person's face and your prompt become SDXL conditioning "
                        "for FaceCLIP's UNet. Also encodes the negative the way FaceCLIP does (zero face).",
            inputs=[
                FaceCLIP.Input("faceclip", tooltip="From Load FaceCLIP."),
                Faces.Input("faces", tooltip="From Prepare Faces."),
                io.String.Input("prompt", multiline=True, dynamic_prompts=True,
                                tooltip="What the image shows, e.g. 'A woman wearing a denim shirt on a desert "
                                        "plateau'. Name the subject (a woman / a man); no trigger word is needed."),
                io.String.Input("negative", multiline=True, default=OFFICIAL_NEGATIVE,
                                tooltip="Negative prompt, encoded with FaceCLIP's zero face (the official string "
                                        "by default)."),
                io.Combo.Input("identity", options=list(IDENTITY_MODES), default="per_face",
                               tooltip="per_face: one conditioning per face (face i -> latent i of the batch). "
                                       "average: all faces blended into one identity."),
            ],
            outputs=[io.Conditioning.Output(display_name="positive"),
                     io.Conditioning.Output(display_name="negative")],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def execute(cls, faceclip, faces, prompt: str, negative: str, identity: str) -> io.NodeOutput:
        show_cuts(faceclip, {"prompt": prompt, "negative prompt": negative}, cls.hidden.unique_id,
                  with_face={"prompt"} if faces.has_face.any() else ())
        crops = torch.from_numpy(faces.crops_float()).permute(0, 3, 1, 2)
        mask = torch.from_numpy(faces.has_face)
        embeddings, pooled = faceclip.encode(crops, [prompt] * len(faces), mask, between=progress_callback(len(faces)))
        if identity == "average":
            embeddings, pooled = average_identity(embeddings, pooled, mask)
        neg_embeddings, neg_pooled = faceclip.encode_text([negative])
        return io.NodeOutput(sdxl_conditioning(embeddings, pooled), sdxl_conditioning(neg_embeddings, neg_pooled))


class FaceCLIPTextEncode(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="FaceCLIPTextEncode",
            search_aliases=["negative", "prompt", "text encode"],
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
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def execute(cls, faceclip, text: str) -> io.NodeOutput:
        show_cuts(faceclip, {"text": text}, cls.hidden.unique_id)
        embeddings, pooled = faceclip.encode_text([text])
        return io.NodeOutput(sdxl_conditioning(embeddings, pooled))
