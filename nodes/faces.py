"""Prepare Faces: photos -> aligned 448 face crops of one identity, with previews for the face picker."""
from __future__ import annotations

import numpy as np
import torch
from comfy_api.latest import io, ui

from ..faceclip_core.faces import (
    NO_FACE_POLICIES,
    SELECTION_POLICIES,
    FaceSelection,
    NoFaceError,
    PrepareConfig,
    PreparedFaces,
    letterbox_batch,
    prepare_faces,
    to_float01,
)
from .progress import progress_callback
from .types import FaceModels, Faces

PICKER_KEY = "faceclip_faces"  # ui payload the face picker (web/faceclip_picker.js) reads


def as_image(batch_uint8: np.ndarray) -> torch.Tensor:
    """[N,H,W,3] uint8 -> ComfyUI IMAGE."""
    return torch.from_numpy(to_float01(batch_uint8))


def picker_payload(prepared: PreparedFaces, cls: type[io.ComfyNode]) -> list[dict]:
    """Per input image its PreparedImage.to_dict(), each face numbered (detector order = the #numbers on the
    preview) and given its saved thumbnail."""
    payload = []
    for im in prepared.images:
        thumbs = []
        if im.thumbnails is not None and len(im.thumbnails):
            thumbs = ui.ImageSaveHelper.save_images(as_image(im.thumbnails), "faceclip_face", io.FolderType.temp,
                                                    cls, compress_level=1)
        entry = im.to_dict()
        entry["faces"] = [{**face, "index": j, "thumbnail": dict(thumbs[j]) if thumbs else None}
                          for j, face in enumerate(entry["faces"])]
        payload.append(entry)
    return payload


class FaceCLIPPrepareFaces(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="FaceCLIPPrepareFaces",
            # its picker is UI output: ComfyUI caches it and sends it again when a run is served from the cache
            has_intermediate_output=True,
            search_aliases=["face detection", "align face", "crop face", "insightface", "identity", "portrait"],
            display_name="Prepare Faces",
            category="FaceCLIP",
            description="Finds the face in each photo and aligns it the way FaceCLIP was trained (ArcFace "
                        "five-point template, 448x448). Several photos of one person become one identity.",
            inputs=[
                FaceModels.Input("face_models", tooltip="From Load Face Detector."),
                io.Image.Input("images", tooltip="One or more ordinary photos of the same person, any size."),
                io.Combo.Input("selection", options=list(SELECTION_POLICIES), default="largest",
                               tooltip="Which face to use when a photo shows several. 'index' uses the face "
                                       "numbered #index on the preview (click a thumbnail to pick it)."),
                io.Int.Input("index", default=0, min=0, max=99,
                             tooltip="Face number for selection 'index' (or the n-th face in the chosen order)."),
                io.Combo.Input("on_no_face", options=list(NO_FACE_POLICIES), default="raise",
                               tooltip="A photo without a usable face: raise (stop and name the photo), skip "
                                       "(leave it out), or text_only (keep it as a face-free prompt)."),
            ],
            outputs=[
                Faces.Output(display_name="faces", tooltip="The aligned faces, for FaceCLIP Encode."),
                io.Image.Output(display_name="aligned", tooltip="The aligned 448x448 crops FaceCLIP sees."),
                io.Image.Output(display_name="preview", tooltip="Each photo with every face found; the used "
                                                                "face is green."),
            ],
        )

    @classmethod
    def execute(cls, face_models, images: torch.Tensor, selection: str, index: int,
                on_no_face: str) -> io.NodeOutput:
        config = PrepareConfig(selection=FaceSelection(selection, index), on_no_face=on_no_face,
                               detection=face_models.detection, thumbnails=True)
        try:
            prepared = prepare_faces(images, face_models.detector, recognizer=face_models.recognizer,
                                     config=config, progress=progress_callback(images.shape[0]))
        except NoFaceError as exc:
            if on_no_face != "skip":
                raise
            # Every photo was skipped: stop only the branch that needs a face, with the reason, not the queue.
            return io.NodeOutput(None, None, None, block_execution=str(exc))
        preview = as_image(letterbox_batch(prepared.annotated()))
        ui_out = {**ui.PreviewImage(preview, cls=cls).as_dict(), PICKER_KEY: picker_payload(prepared, cls)}
        return io.NodeOutput(prepared, as_image(prepared.crops), preview, ui=ui_out)
