"""Face Similarity: ArcFace likeness of generated images to the reference faces, inside the graph."""
from __future__ import annotations

import math

import numpy as np
import torch
from comfy_api.latest import io

from ..faceclip_core.faces import (
    FaceSelection,
    PrepareConfig,
    annotate_faces,
    letterbox_batch,
    prepare_faces,
    similarity_to_reference,
    split_images,
    to_rgb_uint8,
)
from .faces import as_image
from .progress import progress_callback
from .types import FaceModels, Faces


class FaceCLIPFaceSimilarity(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="FaceCLIPFaceSimilarity",
            search_aliases=["likeness", "identity", "compare faces", "ArcFace", "insightface"],
            display_name="Face Similarity",
            category="FaceCLIP",
            description="Measures likeness: ArcFace cosine similarity between the reference faces (one identity) "
                        "and the largest face in each image. Needs a model pack with a recognizer.",
            inputs=[
                FaceModels.Input("face_models", tooltip="From Load Face Detector (antelopev2 or buffalo_l)."),
                Faces.Input("reference", tooltip="The reference faces, from Prepare Faces."),
                io.Image.Input("images", tooltip="Generated images to score."),
            ],
            outputs=[
                io.Float.Output(display_name="similarity",
                                tooltip="Mean cosine similarity over the images with a face (0 when none has "
                                        "one). Same person is typically above 0.4 for ArcFace."),
                io.Image.Output(display_name="annotated", tooltip="Each image with its score."),
            ],
        )

    @classmethod
    def execute(cls, face_models, reference, images: torch.Tensor) -> io.NodeOutput:
        recognizer = face_models.require_recognizer()
        # converted once: the detector and the annotated pictures use the same RGB arrays
        photos = [to_rgb_uint8(image, index=i) for i, image in enumerate(split_images(images))]
        generated = prepare_faces(photos, face_models.detector, recognizer=recognizer,
                                  config=PrepareConfig(selection=FaceSelection("largest"), on_no_face="text_only",
                                                       detection=face_models.detection, annotate=False),
                                  progress=progress_callback(images.shape[0]))
        scores = similarity_to_reference(reference, generated, recognizer)
        pictures = []
        for im, score in zip(generated.images, scores, strict=True):
            label = "no face found" if math.isnan(float(score)) else f"similarity {float(score):.3f}"
            pictures.append(annotate_faces(photos[im.index], im.faces, im.chosen, message=label))
        found = scores[~np.isnan(scores)]
        mean = float(found.mean()) if len(found) else 0.0
        annotated = as_image(letterbox_batch(pictures))
        text = ["no face found" if math.isnan(s) else f"{s:.3f}" for s in scores.tolist()]
        return io.NodeOutput(mean, annotated, ui={"text": text})
