"""Build the shipped example workflows (workflows/*.json, ComfyUI's UI format) and their .jpg title cards.

The graphs are made in the live frontend, as a user would make them: this script starts the test ComfyUI (tiny
random models, this pack loaded; see tests/harness) and the pinned frontend in headless Chromium, creates every
node there, sets its widgets by name, wires it, lays the graph out in columns from the sizes the frontend gives
each node (plus room for the pictures a node shows after a run), and saves what the frontend serializes. So the
widget order, the grown inputs of core nodes and the node sizes are the frontend's own. Maintainers run it after
changing a node's inputs, with the test environment provisioned (bash tests/run.sh does that):

    .testenv/venv/bin/python tools/build_workflows.py

The browser tests (tests/e2e/browser/test_workflows.py) check the result on the pinned and the newest frontend,
with Nodes 2.0 on and off, opened the way the templates browser opens them: no missing node, model or photo, no two
nodes overlapping, text drawn at the zoom the browser fits them to, no console error or warning.
"""
from __future__ import annotations

import argparse
import json
import logging
import re
import sys
import tempfile
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from faceclip_core.faces.model_packs import INSIGHTFACE_LICENCE, INSIGHTFACE_MODEL_ZOO  # noqa: E402
from faceclip_headless.download import DOWNLOADS  # noqa: E402
from faceclip_headless.model_files import FLUX_MAIN_JOB_MODELS, MAIN_JOB_MODELS, RequiredModel  # noqa: E402
from faceclip_headless.shipped_workflows import SHIPPED, ShippedWorkflow  # noqa: E402

logger = logging.getLogger("build_workflows")

MODEL_NAME = {m.folder: m.name for m in MAIN_JOB_MODELS}  # the names the main job checks for
FLUX_MODEL = {m.folder: m.name for m in FLUX_MAIN_JOB_MODELS}  # the names `--variant flux` checks for
FLUX_VAE_URL = "https://huggingface.co/black-forest-labs/FLUX.1-dev/resolve/main/ae.safetensors"
OUT = REPO / "workflows"
DEMO_PROMPT = "A woman wearing a blue denim shirt and khaki pants, on a rocky desert plateau."
W, H = 864, 1152  # the official FaceCLIP-SDXL demo size
SEED = 453563  # the official demo seed
PHOTO, PHOTO_2 = "faceclip_example.jpg", "faceclip_example_2.jpg"  # workflows/input/, copied to input/ at load

# Layout, in canvas units: gaps between columns, between nodes of a column and between rows; where the graph's
# top-left corner lands on the screen at the saved zoom (used when a file is dragged in; the templates browser fits
# the graph to the window instead, see FIT_WINDOW).
GAP_X, GAP_Y, GAP_ROW = 30, 40, 40
SCREEN_ORIGIN = (70, 80)
# The window the layout is made for, and the share of it the frontend's fitView fills (DragAndScale.fitToBounds,
# zoom 0.75, in 1.47 and 1.58). Below about 0.6 the classic canvas draws no text (min_font_size_for_lod 8 / 14 px)
# and Nodes 2.0 draws it tiny; the layout aims higher, for Nodes 2.0's larger nodes.
FIT_WINDOW = (1600, 1000)
FIT_SHARE = 0.75
MAX_ROWS = 3
NOTE_TYPES = ("MarkdownNote", "Note")

# What the frontend's missing-models panel shows (properties.models: name, folder, url; 1.58.1's workflow schema,
# zModelFile, requires all three, the url a valid URL). The url is the published file's address; the FaceCLIP files
# are conversions of the official .pt files, so theirs is the .pt's address and each note says how to convert it.
SDXL_VAE_URL = "https://huggingface.co/stabilityai/sdxl-vae/resolve/main/sdxl_vae.safetensors"
SDXL_BASE_URL = ("https://huggingface.co/stabilityai/stable-diffusion-xl-base-1.0/resolve/main/"
                 "sd_xl_base_1.0.safetensors")
HF = "https://huggingface.co/"
SOURCE_URL = {d.name: HF + d.repo_path for d in DOWNLOADS}  # the files the download command fetches, by target name


def model(folder: str, name: str, url: str | None = None) -> dict:
    return {"name": name, "url": url or SOURCE_URL[name], "directory": folder}


@dataclass
class N:
    """One node: its column, widget values by input name, links by input name -> (node key, output slot), and
    the smallest size it should get (room for a photo, a picker, a long prompt)."""

    key: str
    type: str
    col: int
    widgets: dict = field(default_factory=dict)
    links: dict = field(default_factory=dict)
    title: str | None = None
    min_size: tuple[int, int] = (0, 0)
    models: list[dict] = field(default_factory=list)


# How to get each file, in a line: the published file, its download size, and the conversion where the official file
# is a .pt pickle (the sizes are Hugging Face's listing, shared/docs; the commands as model_files.py gives them).
PT_SIZE = {"face_clip_encoder.pt": "3.15 GB", "unet.pt": "5.1 GB", "face_t5_encoder.pt": "12.5 GB",
           "dit.pt": "23.8 GB"}
BF16 = {"faceclip_sdxl_encoder.safetensors", "faceclip_sdxl_unet.safetensors"}  # converted with --dtype bf16


def how_to_get(m: RequiredModel) -> str:
    if m.is_folder:
        return f"unzipped from [insightface's model zoo]({INSIGHTFACE_MODEL_ZOO}) ({INSIGHTFACE_LICENCE})"
    url = SOURCE_URL.get(m.name)
    if url and url.endswith(".pt"):
        pt = url.rsplit("/", 1)[1]
        return f"[{pt}]({url}) ({PT_SIZE[pt]}, CC-BY-NC-4.0), converted{' --dtype bf16' if m.name in BF16 else ''}"
    if m.name == FLUX_MODEL["vae"]:
        return f"[download]({FLUX_VAE_URL}) (335 MB; gated: accept FLUX.1-dev's licence first)"
    if m is SDXL_BASE:
        return f"[download]({SDXL_BASE_URL}) (6.9 GB), or any SDXL checkpoint"
    return f"[download]({url}) (335 MB)"


# Paths in bold and commands as plain text, not code spans: 1.47's Nodes 2.0 draws code spans blue on blue.
CONVERT = ("Convert each .pt file: python -m faceclip_core.convert FILE.pt ComfyUI/models/FOLDER/NAME (plus the "
           "flag shown).")


def note(text: str, models: tuple[RequiredModel, ...], get_all: str = "") -> N:
    """The workflow's note: what it does, then every model file it needs, in which folder, and how to get it."""
    lines = [text, "", "**Models** (in ComfyUI's folder):"]
    for m in models:
        where = " or ".join(f"**models/{m.folder}/{name}{'/' if m.is_folder else ''}**" for name in m.names)
        lines.append(f"- {where}: {how_to_get(m)}")
    if any(SOURCE_URL.get(m.name, "").endswith(".pt") for m in models):
        lines += ["", CONVERT]
    if get_all:
        lines += ["", get_all]
    body = "\n".join(lines)
    # room for the text at the note's width (the note's font: about 5.5 px a character, 16 px a line, measured in
    # 1.47 and 1.58), so it reads without scrolling
    width = 560
    shown = [re.sub(r"\]\([^)]*\)", "]", line) for line in lines]  # a link shows its text only
    rows = sum(max(1, -(-len(line) // 95)) for line in shown)
    return N("about", "MarkdownNote", 0, {"text": body}, min_size=(width, 50 + 16 * rows))


# The SDXL checkpoint of workflows 5 and 6 (any SDXL checkpoint does; this is the one they name).
SDXL_BASE = RequiredModel("checkpoints", "sd_xl_base_1.0.safetensors", "SDXL base 1.0, or any SDXL checkpoint",
                          SDXL_BASE_URL)
SDXL_GET_ALL = ("Or all but the detector in one go (8.6 GB), in the pack's folder: "
                "python -m faceclip_headless.download --comfyui PATH_TO_COMFYUI")
FLUX_GET_ALL = ("Or FaceT5's files in one go (36 GB, and as much free disk while converting), in the pack's folder: "
                "python -m faceclip_headless.download --comfyui PATH_TO_COMFYUI --variant flux")
ID_MODELS = (SDXL_BASE, MAIN_JOB_MODELS[-1])


def model_nodes() -> list[N]:
    return [
        N("faceclip", "FaceCLIPLoader", 0, {"encoder_name": MODEL_NAME["faceclip"], "weight_dtype": "auto"},
          min_size=(300, 0), models=[model("faceclip", MODEL_NAME["faceclip"])]),
        N("detector", "FaceCLIPFaceDetectorLoader", 0, {"pack": "auto", "provider": "CPU", "det_size": 640},
          min_size=(300, 0)),
        N("unet", "UNETLoader", 0, {"unet_name": MODEL_NAME["diffusion_models"], "weight_dtype": "default"},
          title="Load FaceCLIP SDXL UNet", min_size=(300, 0),
          models=[model("diffusion_models", MODEL_NAME["diffusion_models"])]),
        N("vae", "VAELoader", 0, {"vae_name": MODEL_NAME["vae"]}, min_size=(300, 0),
          models=[model("vae", MODEL_NAME["vae"], SDXL_VAE_URL)]),
    ]


def photo(key: str, name: str, col: int) -> N:
    return N(key, "LoadImage", col, {"image": name}, min_size=(230, 280))


def face_nodes(key: str, images, col: int, prompt: str, identity: str = "per_face") -> list[N]:
    return [
        N(f"faces_{key}", "FaceCLIPPrepareFaces", col, {"selection": "largest", "index": 0, "on_no_face": "raise"},
          {"face_models": ("detector", 0), "images": images}, min_size=(250, 260)),
        N(f"encode_{key}", "FaceCLIPEncode", col + 1, {"prompt": prompt, "identity": identity},
          {"faceclip": ("faceclip", 0), "faces": (f"faces_{key}", 0)}, min_size=(320, 210)),
    ]


def sampling_nodes(positive, negative, col: int, prefix: str, model_link=("unet", 0), vae_link=("vae", 0),
                   size=(W, H), sampler=None, latent_type: str = "EmptyLatentImage") -> list[N]:
    settings = {"seed": SEED, "control_after_generate": "fixed", "steps": 50, "cfg": 5.0, "sampler_name": "euler",
                "scheduler": "ddim_uniform", "denoise": 1.0, **(sampler or {})}
    return [
        N("sample", "KSampler", col, settings, {"model": model_link, "positive": positive, "negative": negative,
                                                "latent_image": ("latent", 0)}, min_size=(300, 0)),
        N("latent", latent_type, col, {"width": size[0], "height": size[1], "batch_size": 1},
          min_size=(280, 0)),
        N("decode", "VAEDecode", col + 1, links={"samples": ("sample", 0), "vae": vae_link}, min_size=(220, 0)),
        N("save", "SaveImage", col + 1, {"filename_prefix": prefix}, {"images": ("decode", 0)},
          min_size=(280, 260)),
    ]


def basic() -> list[N]:
    return [
        note("**Start here: portrait from one photo (FaceCLIP-SDXL).** Load a photo of the person (the example "
             "photo is NASA's public-domain portrait of Eileen Collins: replace it), and write what the image should "
             "show, naming the subject (a woman / a man). Official settings: euler + ddim_uniform, 50 steps, CFG 5, "
             "864x1152.", MAIN_JOB_MODELS, SDXL_GET_ALL),
        *model_nodes(),
        photo("photo_a", PHOTO, 1),
        *face_nodes("a", ("photo_a", 0), 2, DEMO_PROMPT),
        *sampling_nodes(("encode_a", 0), ("encode_a", 1), 4, "FaceCLIP"),
    ]


def several_photos() -> list[N]:
    return [
        note("**Portrait from several photos of one person.** Batch Images puts the photos in one batch (connect "
             "more photos to its free input). identity = average blends the faces into one identity, which helps "
             "when each photo is imperfect; per_face gives one image per photo with a latent batch of the same "
             "size.", MAIN_JOB_MODELS, SDXL_GET_ALL),
        *model_nodes(),
        photo("photo_1", PHOTO, 1),
        photo("photo_2", PHOTO_2, 1),
        N("batch", "BatchImagesNode", 2, links={"images.image0": ("photo_1", 0), "images.image1": ("photo_2", 0)},
          min_size=(220, 0)),
        *face_nodes("a", ("batch", 0), 3, DEMO_PROMPT, identity="average"),
        *sampling_nodes(("encode_a", 0), ("encode_a", 1), 5, "FaceCLIP_several"),
    ]


def halves(width: int, height: int) -> list[N]:
    """encode_left / encode_right limited to the left / right half of the image by core masks, then combined
    (node "people"): columns 4 and 5."""
    half = width // 2
    return [
        N("empty", "SolidMask", 4, {"value": 0.0, "width": width, "height": height}, min_size=(220, 0)),
        N("half", "SolidMask", 4, {"value": 1.0, "width": half, "height": height}, min_size=(220, 0)),
        N("mask_left", "MaskComposite", 4, {"x": 0, "y": 0, "operation": "add"},
          {"destination": ("empty", 0), "source": ("half", 0)}, title="Left half", min_size=(220, 0)),
        N("mask_right", "MaskComposite", 4, {"x": half, "y": 0, "operation": "add"},
          {"destination": ("empty", 0), "source": ("half", 0)}, title="Right half", min_size=(220, 0)),
        N("set_left", "ConditioningSetMask", 5, {"strength": 1.0, "set_cond_area": "default"},
          {"conditioning": ("encode_left", 0), "mask": ("mask_left", 0)}, min_size=(260, 0)),
        N("set_right", "ConditioningSetMask", 5, {"strength": 1.0, "set_cond_area": "default"},
          {"conditioning": ("encode_right", 0), "mask": ("mask_right", 0)}, min_size=(260, 0)),
        N("people", "ConditioningCombine", 5, links={"conditioning_1": ("set_left", 0),
                                                     "conditioning_2": ("set_right", 0)}, min_size=(260, 0)),
    ]


def two_people() -> list[N]:
    return [
        note("**Two people in one image.** Each person gets a FaceCLIP Encode of their own, limited to one half "
             "of the picture by core Conditioning (Set Mask); a scene prompt covers the whole image. Load one photo "
             "of each person (both examples show the same one).", MAIN_JOB_MODELS, SDXL_GET_ALL),
        *model_nodes(),
        photo("photo_left", PHOTO, 1),
        photo("photo_right", PHOTO_2, 1),
        N("faces_left", "FaceCLIPPrepareFaces", 2, {"selection": "largest", "index": 0, "on_no_face": "raise"},
          {"face_models": ("detector", 0), "images": ("photo_left", 0)}, min_size=(250, 260)),
        N("faces_right", "FaceCLIPPrepareFaces", 2, {"selection": "largest", "index": 0, "on_no_face": "raise"},
          {"face_models": ("detector", 0), "images": ("photo_right", 0)}, min_size=(250, 260)),
        N("encode_left", "FaceCLIPEncode", 3, {"prompt": "A woman in a red dress, standing on the left, at a "
                                                          "summer garden party."},
          {"faceclip": ("faceclip", 0), "faces": ("faces_left", 0)}, min_size=(320, 210)),
        N("encode_right", "FaceCLIPEncode", 3, {"prompt": "A woman in a grey suit, standing on the right, at a "
                                                           "summer garden party."},
          {"faceclip": ("faceclip", 0), "faces": ("faces_right", 0)}, min_size=(320, 210)),
        N("scene", "FaceCLIPTextEncode", 3, {"text": "Two friends at a summer garden party, warm evening light, "
                                                     "photo."},
          {"faceclip": ("faceclip", 0)}, min_size=(340, 160)),
        *halves(W, H),
        N("all", "ConditioningCombine", 5, links={"conditioning_1": ("people", 0), "conditioning_2": ("scene", 0)},
          min_size=(260, 0)),
        *sampling_nodes(("all", 0), ("encode_left", 1), 6, "FaceCLIP_two_people"),
    ]


def likeness_check() -> list[N]:
    base = [n for n in basic() if n.key != "about"]
    return [
        note("**Portrait with a likeness score.** The portrait is scored against the reference face with ArcFace "
             "(Face Similarity needs a model pack with a recognizer: antelopev2 or buffalo_l). The score shows in "
             "Preview Any and on the annotated image; the same person usually scores above 0.4.", MAIN_JOB_MODELS,
             SDXL_GET_ALL),
        *base,
        N("similarity", "FaceCLIPFaceSimilarity", 6, links={
            "face_models": ("detector", 0), "reference": ("faces_a", 0), "images": ("decode", 0)},
          min_size=(320, 0)),
        N("score", "PreviewAny", 6, links={"source": ("similarity", 0)}, min_size=(280, 120)),
        N("show_similarity", "PreviewImage", 7, links={"images": ("similarity", 1)}, min_size=(300, 300)),
    ]


def id_embedding_nodes(method: str, name: str, prompt: str, steps: int) -> list[N]:
    """SDXL checkpoint + photo -> Train ID Embedding -> Apply ID Embedding -> KSampler (any SDXL checkpoint)."""
    return [
        N("ckpt", "CheckpointLoaderSimple", 0, {"ckpt_name": "sd_xl_base_1.0.safetensors"}, min_size=(300, 0),
          models=[model("checkpoints", "sd_xl_base_1.0.safetensors", SDXL_BASE_URL)]),
        N("detector", "FaceCLIPFaceDetectorLoader", 0, {"pack": "auto", "provider": "CPU", "det_size": 640},
          min_size=(300, 0)),
        photo("photo", PHOTO, 1),
        N("faces", "FaceCLIPPrepareFaces", 2, {"selection": "largest", "index": 0, "on_no_face": "raise"},
          {"face_models": ("detector", 0), "images": ("photo", 0)}, min_size=(250, 260)),
        N("train", "FaceCLIPTrainIDEmbedding", 3, {
            "method": method, "name": name, "steps": steps, "learning_rate": 0.005, "seed": 0,
            "control_after_generate": "fixed", "resolution": 1024, "batch_size": 1, "resume": False,
            "overwrite": False, "training_dtype": "auto", "framing": "head_and_shoulders", "class_word": "person",
            "gradient_checkpointing": True},
          {"model": ("ckpt", 0), "clip": ("ckpt", 1), "vae": ("ckpt", 2), "faces": ("faces", 0)},
          min_size=(380, 0)),
        N("apply", "FaceCLIPApplyIDEmbedding", 4, {"prompt": prompt},
          {"model": ("ckpt", 0), "clip": ("ckpt", 1), "id_embedding": ("train", 0)}, min_size=(340, 220)),
        N("negative", "CLIPTextEncode", 4, {"text": "blurry, low quality, deformed"}, {"clip": ("ckpt", 1)},
          title="Negative prompt", min_size=(340, 140)),
        *sampling_nodes(("apply", 1), ("negative", 0), 5, f"ID_{method}", model_link=("apply", 0),
                        vae_link=("ckpt", 2), size=(1024, 1024),
                        sampler={"steps": 30, "cfg": 6.0, "scheduler": "normal"}),
    ]


def id_ea() -> list[N]:
    return [note("**Identity tokens for any SDXL checkpoint (ID-EA).** Trains 2 tokens from 1-5 photos (320 "
                 "steps of one sample: about 2 minutes on a 4090-class GPU, under 12 GB; the paper's recipe is "
                 "batch size 8 at learning rate 0.012) and saves "
                 "models/embeddings/my_identity_idea.safetensors: a standard embedding, so afterwards "
                 "**embedding:my_identity_idea person** works in any CLIP Text Encode prompt. Here Apply ID Embedding "
                 "puts it where {id} stands. The node says what the run will take before it starts, and the time "
                 "left as it runs. Press Cancel to stop: the state is saved; queue again with resume on to continue. "
                 "GPU memory: about 8.3 GiB at the defaults, up to 12.6 GiB at the paper's batch 8 (README: what a run "
                 "costs).",
                 ID_MODELS),
            *id_embedding_nodes("ID-EA", "my_identity_idea", "a photo of {id} person wearing an oversized "
                                "sweater, in a cafe", 320)]


def sefi_ide() -> list[N]:
    return [note("**Per-stage identity tokens for any SDXL checkpoint (SeFi-IDE).** Trains key/value tokens "
                 "per noise stage with the face-wise attention loss (a GPU is needed: about 2 minutes on a "
                 "4090-class GPU, under 12 GB). Apply ID Embedding encodes "
                 "its prompt per stage and the model uses the stage of the current noise level, on that prompt "
                 "only: connect both its outputs to KSampler. {id} stands in place of a word like 'person'. GPU "
                 "memory: about 8.5 GiB at the defaults (README: what a run costs).", ID_MODELS),
            *id_embedding_nodes("SeFi-IDE", "my_identity_sefi", "a photo of {id} wearing drop earrings, "
                                "eyes closed", 400)]


FLUX_W, FLUX_H = 864, 1152  # the official FaceT5-FLUX size
FLUX_PROMPT = "A woman wearing a blue denim shirt and khaki pants, on a rocky desert plateau"  # official, as is
# The official sampling mapped onto core nodes (shared/docs/facet5-flux.md §7): true CFG 3.5 = KSampler cfg,
# guidance 1.0 is in FaceT5 Encode's conditioning, the schedule comes from ModelSamplingFlux at the output size.
FLUX_SAMPLER = {"steps": 50, "cfg": 3.5, "sampler_name": "euler", "scheduler": "simple"}
# What FLUX takes, from shared/docs/facet5-flux.md and the README: file sizes in bf16 and where memory goes.
FLUX_NEEDS = ("Download: 36 GB. GPU memory: DiT 23.8 GB in bf16 (fp8_e4m3fn halves it), FaceT5 11.8 GB, "
              "offloaded when the DiT loads.")


def flux_model_nodes() -> list[N]:
    return [
        N("facet5", "FaceCLIPFaceT5Loader", 0, {"encoder_name": FLUX_MODEL["faceclip"], "weight_dtype": "auto"},
          min_size=(300, 0), models=[model("faceclip", FLUX_MODEL["faceclip"])]),
        N("detector", "FaceCLIPFaceDetectorLoader", 0, {"pack": "auto", "provider": "CPU", "det_size": 640},
          min_size=(300, 0)),
        N("unet", "UNETLoader", 0, {"unet_name": FLUX_MODEL["diffusion_models"], "weight_dtype": "default"},
          title="Load FaceT5 FLUX DiT", min_size=(300, 0),
          models=[model("diffusion_models", FLUX_MODEL["diffusion_models"])]),
        # The output size in one place, as core's FLUX templates: two Int nodes feed both ModelSamplingFlux (its
        # schedule depends on the size) and the empty latent (flux_sampling_nodes).
        N("width", "PrimitiveInt", 0, {"value": FLUX_W}, title="Width",
          min_size=(220, 0)),
        N("height", "PrimitiveInt", 0, {"value": FLUX_H}, title="Height",
          min_size=(220, 0)),
        N("schedule", "ModelSamplingFlux", 0, {"max_shift": 1.15, "base_shift": 0.5},
          {"model": ("unet", 0), "width": ("width", 0), "height": ("height", 0)}, min_size=(300, 0)),
        N("vae", "VAELoader", 0, {"vae_name": FLUX_MODEL["vae"]}, min_size=(300, 0),
          models=[model("vae", FLUX_MODEL["vae"], FLUX_VAE_URL)]),
    ]


def flux_sampling_nodes(positive, negative, col: int, prefix: str) -> list[N]:
    # EmptySD3LatentImage: FLUX's 16-channel latent, its size from the Width and Height nodes
    nodes = sampling_nodes(positive, negative, col, prefix, model_link=("schedule", 0), size=(FLUX_W, FLUX_H),
                           sampler=FLUX_SAMPLER, latent_type="EmptySD3LatentImage")
    latent = next(n for n in nodes if n.key == "latent")
    latent.widgets = {"batch_size": 1}
    latent.links = {"width": ("width", 0), "height": ("height", 0)}
    return nodes


def flux_basic() -> list[N]:
    return [
        note("**FLUX portrait from one photo (FaceT5-FLUX).** FaceT5 Encode turns the face and your prompt into "
             "FLUX conditioning (guidance 1.0, set by the node) and encodes the official negative with a zero "
             "face. Official settings: euler + simple, 50 steps, CFG 3.5 (true CFG against the negative), "
             "ModelSamplingFlux at the output size, 864x1152: set the size once, in Width and Height. Replace the "
             "example photo with yours. " + FLUX_NEEDS, FLUX_MAIN_JOB_MODELS, FLUX_GET_ALL),
        *flux_model_nodes(),
        photo("photo_a", PHOTO, 1),
        N("faces_a", "FaceCLIPPrepareFaces", 2, {"selection": "largest", "index": 0, "on_no_face": "raise"},
          {"face_models": ("detector", 0), "images": ("photo_a", 0)}, min_size=(250, 260)),
        N("encode_a", "FaceCLIPFaceT5Encode", 3, {"prompt": FLUX_PROMPT},
          {"facet5": ("facet5", 0), "faces": ("faces_a", 0)}, min_size=(320, 220)),
        *flux_sampling_nodes(("encode_a", 0), ("encode_a", 1), 4, "FaceT5_FLUX"),
    ]


def flux_two_people() -> list[N]:
    people = []
    for side, image, prompt in (("left", PHOTO, "A woman in a red dress, standing on the left, at a summer garden "
                                                 "party, warm evening light"),
                                ("right", PHOTO_2, "A woman in a grey suit, standing on the right, at a summer "
                                                   "garden party, warm evening light")):
        people += [
            photo(f"photo_{side}", image, 1),
            N(f"faces_{side}", "FaceCLIPPrepareFaces", 2, {"selection": "largest", "index": 0,
                                                           "on_no_face": "raise"},
              {"face_models": ("detector", 0), "images": (f"photo_{side}", 0)}, min_size=(250, 260)),
            N(f"encode_{side}", "FaceCLIPFaceT5Encode", 3, {"prompt": prompt},
              {"facet5": ("facet5", 0), "faces": (f"faces_{side}", 0)}, min_size=(320, 220)),
        ]
    return [
        note("**FLUX: two people in one image (FaceT5-FLUX).** One FaceT5 Encode per person (a prompt for the "
             "scene and that person), each limited to one half by core Conditioning (Set Mask). Size: Width and "
             "Height. " + FLUX_NEEDS, FLUX_MAIN_JOB_MODELS, FLUX_GET_ALL),
        *flux_model_nodes(),
        *people,
        *halves(FLUX_W, FLUX_H),
        *flux_sampling_nodes(("people", 0), ("encode_left", 1), 6, "FaceT5_FLUX_two_people"),
    ]


BUILDERS = {"basic": basic, "several_photos": several_photos, "two_people": two_people,
            "likeness_check": likeness_check, "id_ea": id_ea, "sefi_ide": sefi_ide, "flux_basic": flux_basic,
            "flux_two_people": flux_two_people}

# Runs in the page: builds one graph from the spec (nodes, widgets, links) and returns each node's size: what the
# frontend's computeSize says its widgets need, at least the spec's minimum, and the title bar's height.
CREATE_GRAPH = """async (spec) => {
  const app = %(app)s;
  const graph = app.rootGraph;
  graph.clear();
  const made = {};
  window.__faceclipBuilt = made;
  for (const n of spec.nodes) {
    const node = window.LiteGraph.createNode(n.type);
    if (!node) throw new Error(`node type ${n.type} is not registered`);
    graph.add(node);
    if (n.title) node.title = n.title;
    for (const [name, value] of Object.entries(n.widgets)) {
      const widget = node.widgets?.find((w) => w.name === name);
      if (!widget) throw new Error(`${n.type} has no widget ${name}`);
      widget.value = value;
    }
    if (n.models.length) node.properties.models = n.models;
    made[n.key] = node;
  }
  for (const n of spec.nodes) {
    for (const [input, [source, slot]] of Object.entries(n.links)) {
      const target = made[n.key];
      const index = target.findInputSlot(input);
      if (index < 0) throw new Error(`${n.type} has no input ${input}`);
      if (!made[source].connect(slot, target, index)) throw new Error(`cannot link ${source} to ${n.key}.${input}`);
    }
  }
  // Sizes with the example photos loaded: the classic canvas grows a Load Image node by its picture.
  await new Promise((resolve) => setTimeout(resolve, 2500));
  const sizes = {};
  for (const n of spec.nodes) {
    const [w, h] = made[n.key].computeSize();
    sizes[n.key] = [Math.ceil(Math.max(w, n.min_size[0])), Math.ceil(Math.max(h, n.min_size[1]))];
  }
  return { sizes, title: window.LiteGraph.NODE_TITLE_HEIGHT };
}"""

# Runs in the page after CREATE_GRAPH: puts every node where the layout says, returns the frontend's serialization.
PLACE_GRAPH = """(placed) => {
  const app = %(app)s;
  for (const [key, { pos, size }] of Object.entries(placed.nodes)) {
    const node = window.__faceclipBuilt[key];
    node.size = size;
    node.pos = pos;
  }
  const data = app.graph.serialize();
  data.extra = { ...(data.extra ?? {}), ds: placed.ds };
  return data;
}"""


@dataclass(frozen=True)
class Placed:
    """A laid-out graph: each node's top-left corner (of its body, below the title bar) and the whole extent."""
    pos: dict[str, tuple[int, int]]
    width: int
    height: int

    def fit_scale(self, window: tuple[int, int] = FIT_WINDOW) -> float:
        """The zoom the frontend's fitView gives this graph in ``window`` (its bounds have a 10 px margin)."""
        return min(FIT_SHARE * window[0] / (self.width + 20), FIT_SHARE * window[1] / (self.height + 20))


Column = list[tuple[str, int, int]]  # one column's nodes top to bottom: (key, width, height below the title bar)


def _stack(column: Column, height: int, title: int) -> list[Column] | None:
    """A column's nodes in order, stacked in as few side-by-side blocks as a row ``height`` tall allows (None when
    a node alone is taller)."""
    blocks, used = [[]], 0
    for key, w, h in column:
        box = title + h
        if box > height:
            return None
        if blocks[-1] and used + GAP_Y + box > height:
            blocks.append([])
            used = 0
        used += (GAP_Y if blocks[-1] else 0) + box
        blocks[-1].append((key, w, h))
    return blocks


def _row(columns: list[Column], height: int, title: int) -> tuple[int, list[Column]] | None:
    """The width of these columns laid out in a row ``height`` tall, and their blocks (stacks of nodes)."""
    # One sequence in reading order: a stack may hold the end of one column and the start of the next.
    blocks = _stack([node for column in columns for node in column], height, title)
    if blocks is None:
        return None
    return sum(max(w for _, w, _ in b) for b in blocks) + GAP_X * (len(blocks) - 1), blocks


def _row_splits(count: int, rows: int):
    """Every way to cut ``count`` columns in order into ``rows`` non-empty rows: (start, end) of each row."""
    from itertools import combinations
    for cuts in combinations(range(1, count), rows - 1):
        bounds = (0, *cuts, count)
        yield list(zip(bounds[:-1], bounds[1:], strict=True))


def layout_rows(nodes: list[N], sizes: dict[str, tuple[int, int]], title: int) -> Placed:
    """Columns (N.col; a note is a column of its own) in reading order, cut into at most MAX_ROWS rows; in a row, the
    nodes in reading order stacked top to bottom as high as the row, then the next stack: the arrangement fitView
    shows at the largest zoom in FIT_WINDOW (fewer rows when two tie). Works for any node sizes, so a node that
    grows or shrinks (a changed widget list) still lays out without overlaps."""
    keyed = [(n.key, -1 if n.type in NOTE_TYPES else n.col) for n in nodes]
    columns = [[(k, *sizes[k]) for k, c in keyed if c == col] for col in sorted({c for _, c in keyed})]
    tallest = max(title + h for _, h in sizes.values())
    total = sum(title + h + GAP_Y for _, h in sizes.values())
    heights = range(tallest, total + 10, 10)
    # every row (a range of columns) at every height: its width, or None where a node does not fit
    widths = {(a, e): [(h, _row(columns[a:e], h, title)) for h in heights]
              for a in range(len(columns)) for e in range(a + 1, len(columns) + 1)}
    best = None
    for rows in range(1, min(MAX_ROWS, len(columns)) + 1):
        for split in _row_splits(len(columns), rows):
            for width_limit in sorted({r[0] for span in split for _, r in widths[span] if r}):
                # each row at the least height that keeps it within the width limit
                chosen = [next(((h, r) for h, r in widths[span] if r and r[0] <= width_limit), None)
                          for span in split]
                if None in chosen:
                    continue
                rows_used = [(max(sum(title + h for _, _, h in b) + GAP_Y * (len(b) - 1) for b in r[1]), r)
                             for _, r in chosen]
                extent = Placed({}, max(r[0] for _, r in rows_used),
                                sum(h for h, _ in rows_used) + GAP_ROW * (rows - 1))
                score = (round(extent.fit_scale(), 4), -rows)
                if best is None or score > best[0]:
                    best = (score, rows_used, extent)
    _, rows_used, extent = best
    pos, y = {}, 0
    for row_height, (_, blocks) in rows_used:
        x = 0
        for block in blocks:
            top = y
            for key, _, h in block:
                pos[key] = (x, top + title)
                top += title + h + GAP_Y
            x += max(w for _, w, _ in block) + GAP_X
        y += row_height + GAP_ROW
    return Placed(pos, extent.width, extent.height)


def spec_for_page(nodes: list[N]) -> dict:
    return {"nodes": [{"key": n.key, "type": n.type, "widgets": n.widgets,
                       "links": {k: list(v) for k, v in n.links.items()}, "title": n.title,
                       "min_size": list(n.min_size), "models": n.models} for n in nodes]}


def placement_for_page(placed: Placed, sizes: dict[str, tuple[int, int]]) -> dict:
    # The saved view (used when a file is dragged in): the fitted zoom, the graph's top-left at SCREEN_ORIGIN.
    zoom = round(min(placed.fit_scale(), 1.0), 3)
    return {"nodes": {k: {"pos": list(p), "size": list(sizes[k])} for k, p in placed.pos.items()},
            "ds": {"scale": zoom, "offset": [SCREEN_ORIGIN[0] / zoom, SCREEN_ORIGIN[1] / zoom]}}


def title_card(workflow: ShippedWorkflow, path: Path) -> None:
    """A readable card for the templates browser: what the workflow makes, in words, on the pack's colours."""
    from PIL import Image, ImageDraw, ImageFont

    width, height = 512, 384
    img = Image.new("RGB", (width, height), (28, 30, 36))
    draw = ImageDraw.Draw(img)
    draw.rectangle([0, 0, width, 10], fill=workflow.colour)
    draw.text((28, 34), f"FaceCLIP  ·  {workflow.model}", font=ImageFont.load_default(size=22),
              fill=(170, 176, 190))
    y = 80
    for line in textwrap.wrap(workflow.title, 22):
        draw.text((28, y), line, font=ImageFont.load_default(size=40), fill=(245, 245, 245))
        y += 50
    y += 16
    for line in textwrap.wrap(workflow.summary, 40):
        draw.text((28, y), line, font=ImageFont.load_default(size=21), fill=(200, 204, 214))
        y += 28
    img.save(path, quality=92)


def build(page, names: list[str]) -> None:
    from tests.harness.browser import APP

    for workflow in SHIPPED:
        if names and workflow.key not in names:
            continue
        # A fresh page for each graph: the frontend keeps widget values by node id across graph.clear(), so node
        # 10 of one workflow would otherwise start with the values node 10 of the previous one had.
        page.reload()
        nodes = BUILDERS[workflow.key]()
        made = page.eval(CREATE_GRAPH % {"app": APP}, spec_for_page(nodes))
        sizes = {k: tuple(v) for k, v in made["sizes"].items()}
        placed = layout_rows(nodes, sizes, made["title"])
        data = page.eval(PLACE_GRAPH % {"app": APP}, placement_for_page(placed, sizes))
        target = OUT / f"{workflow.file_stem}.json"
        target.write_text(json.dumps(data, indent=1) + "\n")
        title_card(workflow, target.with_suffix(".jpg"))
        logger.info("wrote %s (%dx%d, fits %dx%d at %.2f)", target, placed.width, placed.height, *FIT_WINDOW,
                    placed.fit_scale())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help=f"only these workflows ({', '.join(BUILDERS)})")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    from faceclip_headless.server import ComfyServer
    from tests.conftest import comfyui_dir
    from tests.harness.browser import UI_VARIANTS, Browser, boot, missing_tools
    from tests.harness.server_env import prepare_base, server_config

    variant = UI_VARIANTS[0]  # the pinned frontend, classic: what every later frontend reads
    problems = missing_tools(variant)
    if problems:
        sys.exit("cannot build the workflows: " + "; ".join(problems) + " (bash tests/run.sh provisions them)")
    with tempfile.TemporaryDirectory(prefix="faceclip_build_") as tmp:
        work = Path(tmp)
        base = prepare_base(work / "base", comfyui_dir())
        server = ComfyServer(server_config(base, comfyui_dir(), work / "mount")).start()
        page = Browser(work / "profile", work, work / "bridge.log", variant, server.url)
        try:
            boot(page)
            build(page, args.names)
        finally:
            page.close()
            server.stop()


if __name__ == "__main__":
    main()
