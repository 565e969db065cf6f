"""API-format graphs for the end-to-end tests, built from small pieces."""
from __future__ import annotations

from tests.e2e.conftest import TINY_FACECLIP, UNET_NAME, VAE_NAME


def face_graph(image: str, prompt: str = "A woman in a red coat", seed: int = 1, size: int = 64,
               selection: str = "largest", index: int = 0, on_no_face: str = "raise", identity: str = "per_face",
               pack: str = "antelopev2", encoder: str = TINY_FACECLIP, batch_images: list[str] | None = None
               ) -> dict:
    """Photo(s) -> Prepare Faces -> FaceCLIP Encode -> KSampler -> VAEDecode -> SaveImage, with shape probes."""
    graph = {
        "load": {"class_type": "LoadImage", "inputs": {"image": image}},
        "detector": {"class_type": "FaceCLIPFaceDetectorLoader",
                     "inputs": {"pack": pack, "provider": "CPU", "det_size": 640}},
        "faces": {"class_type": "FaceCLIPPrepareFaces",
                  "inputs": {"face_models": ["detector", 0], "images": ["load", 0], "selection": selection,
                             "index": index, "on_no_face": on_no_face}},
        "faceclip": {"class_type": "FaceCLIPLoader",
                     "inputs": {"encoder_name": encoder, "weight_dtype": "fp32", "device": "auto"}},
        "encode": {"class_type": "FaceCLIPEncode",
                   "inputs": {"faceclip": ["faceclip", 0], "faces": ["faces", 0], "prompt": prompt,
                              "negative": "blurry", "identity": identity}},
        "pos_shapes": {"class_type": "FaceCLIPTest_ConditioningShapes", "inputs": {"conditioning": ["encode", 0]}},
        "neg_shapes": {"class_type": "FaceCLIPTest_ConditioningShapes", "inputs": {"conditioning": ["encode", 1]}},
        "unet": {"class_type": "UNETLoader", "inputs": {"unet_name": UNET_NAME, "weight_dtype": "default"}},
        "vae": {"class_type": "VAELoader", "inputs": {"vae_name": VAE_NAME}},
        "latent": {"class_type": "EmptyLatentImage", "inputs": {"width": size, "height": size, "batch_size": 1}},
        "sample": {"class_type": "KSampler", "inputs": {
            "model": ["unet", 0], "positive": ["pos_shapes", 0], "negative": ["neg_shapes", 0],
            "latent_image": ["latent", 0], "seed": seed, "steps": 2, "cfg": 5.0, "sampler_name": "euler",
            "scheduler": "ddim_uniform", "denoise": 1.0}},
        "decode": {"class_type": "VAEDecode", "inputs": {"samples": ["sample", 0], "vae": ["vae", 0]}},
        "save": {"class_type": "SaveImage", "inputs": {"images": ["decode", 0], "filename_prefix": "faceclip_e2e"}},
    }
    if batch_images:
        # several reference photos of one person as one IMAGE batch (ImageBatch needs equal sizes)
        graph["load2"] = {"class_type": "LoadImage", "inputs": {"image": batch_images[0]}}
        graph["batch"] = {"class_type": "ImageBatch", "inputs": {"image1": ["load", 0], "image2": ["load2", 0]}}
        graph["faces"]["inputs"]["images"] = ["batch", 0]
    return graph


def shapes(result, node: str = "pos_shapes") -> list[dict]:
    return result.outputs[node]["conditioning"]
