"""Build the shipped example workflows (workflows/*.json, ComfyUI's UI format) and their .jpg title cards.

The graphs are made in the live frontend, as a user would make them: this script starts the test ComfyUI (tiny
random models, this pack loaded; see tests/harness) and the pinned frontend in headless Chromium, creates every
node there, sets its widgets by name, wires it, lays the graph out in columns from the sizes the frontend gives
each node (plus room for the pictures a node shows after a run), and saves what the frontend serializes. So the
widget order, the grown inputs of core nodes and the node sizes are the frontend's own. Maintainers run it after
changing a node's inputs, with the test environment provisioned (bash tests/run.sh does that):

    .testenv/venv/bin/python tools/build_workflows.py

The browser tests (tests/e2e/browser/test_workflows.py) check the result on the pinned and the newest frontend,
with Nodes 2.0 on and off: no missing node, model or photo, no two nodes overlapping, text readable at the saved
zoom.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from faceclip_headless.model_files import FLUX_MAIN_JOB_MODELS, MAIN_JOB_MODELS  # noqa: E402
from faceclip_headless.shipped_workflows import SHIPPED, ShippedWorkflow  # noqa: E402

logger = logging.getLogger("build_workflows")

MODEL_NAME = {m.folder: m.name for m in MAIN_JOB_MODELS}  # the names the main job checks for
OUT = REPO / "workflows"
DEMO_PROMPT = "A woman wearing a blue denim shirt and khaki pants, on a rocky desert plateau."
W, H = 864, 1152  # the official FaceCLIP-SDXL demo size
SEED = 453563  # the official demo seed
PHOTO, PHOTO_2 = "faceclip_example.jpg", "faceclip_example_2.jpg"  # workflows/input/, copied to input/ at load

# Layout, in canvas units: gaps between columns and between nodes of a column, the saved zoom (text renders at
# it: the frontend drops text below about 0.6) and where the graph's top-left corner lands on the screen.
GAP_X, GAP_Y = 60, 50
ZOOM = 0.8
SCREEN_ORIGIN = (70, 80)

# Where the frontend's missing-models panel can send users (name, folder, download URL where a file of that
# name is published). The FaceCLIP files are conversions of the official .pt files: no direct download.
SDXL_VAE_URL = "https://huggingface.co/stabilityai/sdxl-vae/resolve/main/sdxl_vae.safetensors"
SDXL_BASE_URL = ("https://huggingface.co/stabilityai/stable-diffusion-xl-base-1.0/resolve/main/"
                 "sd_xl_base_1.0.safetensors")


def model(folder: str, name: str, url: str | None = None) -> dict:
    entry = {"name": name, "directory": folder}
    if url:
        entry["url"] = url
    return entry


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


def note(text: str) -> N:
    return N("about", "MarkdownNote", 0, {"text": text}, min_size=(420, 230))


def model_nodes() -> list[N]:
    return [
        N("faceclip", "FaceCLIPLoader", 0, {"encoder_name": MODEL_NAME["faceclip"], "weight_dtype": "auto"},
          min_size=(420, 0), models=[model("faceclip", MODEL_NAME["faceclip"])]),
        N("detector", "FaceCLIPFaceDetectorLoader", 0, {"pack": "auto", "provider": "CPU", "det_size": 640},
          min_size=(420, 0)),
        N("unet", "UNETLoader", 0, {"unet_name": MODEL_NAME["diffusion_models"], "weight_dtype": "default"},
          title="Load FaceCLIP SDXL UNet", min_size=(420, 0),
          models=[model("diffusion_models", MODEL_NAME["diffusion_models"])]),
        N("vae", "VAELoader", 0, {"vae_name": MODEL_NAME["vae"]}, min_size=(420, 0),
          models=[model("vae", MODEL_NAME["vae"], SDXL_VAE_URL)]),
    ]


def photo(key: str, name: str, col: int) -> N:
    return N(key, "LoadImage", col, {"image": name}, min_size=(320, 430))


def face_nodes(key: str, images, col: int, prompt: str, identity: str = "per_face") -> list[N]:
    return [
        N(f"faces_{key}", "FaceCLIPPrepareFaces", col, {"selection": "largest", "index": 0, "on_no_face": "raise"},
          {"face_models": ("detector", 0), "images": images}, min_size=(340, 520)),
        N(f"encode_{key}", "FaceCLIPEncode", col + 1, {"prompt": prompt, "identity": identity},
          {"faceclip": ("faceclip", 0), "faces": (f"faces_{key}", 0)}, min_size=(400, 300)),
    ]


def sampling_nodes(positive, negative, col: int, prefix: str, model_link=("unet", 0), vae_link=("vae", 0),
                   size=(W, H), sampler=None, latent_type: str = "EmptyLatentImage") -> list[N]:
    settings = {"seed": SEED, "control_after_generate": "fixed", "steps": 50, "cfg": 5.0, "sampler_name": "euler",
                "scheduler": "ddim_uniform", "denoise": 1.0, **(sampler or {})}
    return [
        N("sample", "KSampler", col, settings, {"model": model_link, "positive": positive, "negative": negative,
                                                "latent_image": ("latent", 0)}, min_size=(320, 0)),
        N("latent", latent_type, col, {"width": size[0], "height": size[1], "batch_size": 1},
          min_size=(320, 0)),
        N("decode", "VAEDecode", col + 1, links={"samples": ("sample", 0), "vae": vae_link}, min_size=(300, 0)),
        N("save", "SaveImage", col + 1, {"filename_prefix": prefix}, {"images": ("decode", 0)},
          min_size=(420, 560)),
    ]


def basic() -> list[N]:
    return [
        note("**Portrait from one photo (FaceCLIP-SDXL).** Load a photo of the person (the example photo is "
             "NASA's public-domain portrait of Eileen Collins: replace it), and write what the image should show, "
             "naming the subject (a woman / a man). Official settings: euler + ddim_uniform, 50 steps, CFG 5, "
             "864x1152. Models: see the pack's README."),
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
             "size."),
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
        N("empty", "SolidMask", 4, {"value": 0.0, "width": width, "height": height}, min_size=(260, 0)),
        N("half", "SolidMask", 4, {"value": 1.0, "width": half, "height": height}, min_size=(260, 0)),
        N("mask_left", "MaskComposite", 4, {"x": 0, "y": 0, "operation": "add"},
          {"destination": ("empty", 0), "source": ("half", 0)}, title="Left half", min_size=(260, 0)),
        N("mask_right", "MaskComposite", 4, {"x": half, "y": 0, "operation": "add"},
          {"destination": ("empty", 0), "source": ("half", 0)}, title="Right half", min_size=(260, 0)),
        N("set_left", "ConditioningSetMask", 5, {"strength": 1.0, "set_cond_area": "default"},
          {"conditioning": ("encode_left", 0), "mask": ("mask_left", 0)}, min_size=(300, 0)),
        N("set_right", "ConditioningSetMask", 5, {"strength": 1.0, "set_cond_area": "default"},
          {"conditioning": ("encode_right", 0), "mask": ("mask_right", 0)}, min_size=(300, 0)),
        N("people", "ConditioningCombine", 5, links={"conditioning_1": ("set_left", 0),
                                                     "conditioning_2": ("set_right", 0)}, min_size=(300, 0)),
    ]


def two_people() -> list[N]:
    return [
        note("**Two people in one image.** Each person gets a FaceCLIP Encode of their own, limited to one half "
             "of the picture by core Conditioning (Set Mask); a face-free scene prompt covers the whole image. "
             "Both example photos show the same person: load one photo of each of your two people. Change the "
             "masks to move people around."),
        *model_nodes(),
        photo("photo_left", PHOTO, 1),
        photo("photo_right", PHOTO_2, 1),
        N("faces_left", "FaceCLIPPrepareFaces", 2, {"selection": "largest", "index": 0, "on_no_face": "raise"},
          {"face_models": ("detector", 0), "images": ("photo_left", 0)}, min_size=(340, 520)),
        N("faces_right", "FaceCLIPPrepareFaces", 2, {"selection": "largest", "index": 0, "on_no_face": "raise"},
          {"face_models": ("detector", 0), "images": ("photo_right", 0)}, min_size=(340, 520)),
        N("encode_left", "FaceCLIPEncode", 3, {"prompt": "A woman in a red dress, standing on the left, at a "
                                                          "summer garden party."},
          {"faceclip": ("faceclip", 0), "faces": ("faces_left", 0)}, min_size=(400, 300)),
        N("encode_right", "FaceCLIPEncode", 3, {"prompt": "A woman in a grey suit, standing on the right, at a "
                                                           "summer garden party."},
          {"faceclip": ("faceclip", 0), "faces": ("faces_right", 0)}, min_size=(400, 300)),
        N("scene", "FaceCLIPTextEncode", 3, {"text": "Two friends at a summer garden party, warm evening light, "
                                                     "photo."},
          {"faceclip": ("faceclip", 0)}, min_size=(400, 200)),
        *halves(W, H),
        N("all", "ConditioningCombine", 5, links={"conditioning_1": ("people", 0), "conditioning_2": ("scene", 0)},
          min_size=(300, 0)),
        *sampling_nodes(("all", 0), ("encode_left", 1), 6, "FaceCLIP_two_people"),
    ]


def likeness_check() -> list[N]:
    base = [n for n in basic() if n.key != "about"]
    return [
        note("**Portrait with a likeness score.** The portrait is scored against the reference face with ArcFace "
             "(Face Similarity needs a model pack with a recognizer: antelopev2 or buffalo_l). The score shows in "
             "Preview Any and on the annotated image; the same person usually scores above 0.4."),
        *base,
        N("similarity", "FaceCLIPFaceSimilarity", 6, links={
            "face_models": ("detector", 0), "reference": ("faces_a", 0), "images": ("decode", 0)},
          min_size=(320, 0)),
        N("score", "PreviewAny", 6, links={"source": ("similarity", 0)}, min_size=(320, 160)),
        N("show_similarity", "PreviewImage", 7, links={"images": ("similarity", 1)}, min_size=(420, 560)),
    ]


def id_embedding_nodes(method: str, name: str, prompt: str, steps: int) -> list[N]:
    """SDXL checkpoint + photo -> Train ID Embedding -> Apply ID Embedding -> KSampler (any SDXL checkpoint)."""
    return [
        N("ckpt", "CheckpointLoaderSimple", 0, {"ckpt_name": "sd_xl_base_1.0.safetensors"}, min_size=(420, 0),
          models=[model("checkpoints", "sd_xl_base_1.0.safetensors", SDXL_BASE_URL)]),
        N("detector", "FaceCLIPFaceDetectorLoader", 0, {"pack": "auto", "provider": "CPU", "det_size": 640},
          min_size=(420, 0)),
        photo("photo", PHOTO, 1),
        N("faces", "FaceCLIPPrepareFaces", 2, {"selection": "largest", "index": 0, "on_no_face": "raise"},
          {"face_models": ("detector", 0), "images": ("photo", 0)}, min_size=(340, 520)),
        N("train", "FaceCLIPTrainIDEmbedding", 3, {
            "method": method, "name": name, "steps": steps, "learning_rate": 0.005, "seed": 0,
            "control_after_generate": "fixed", "resolution": 1024, "batch_size": 1, "resume": False,
            "overwrite": False, "training_dtype": "auto", "framing": "head_and_shoulders", "class_word": "person",
            "gradient_checkpointing": True},
          {"model": ("ckpt", 0), "clip": ("ckpt", 1), "vae": ("ckpt", 2), "faces": ("faces", 0)},
          min_size=(380, 0)),
        N("apply", "FaceCLIPApplyIDEmbedding", 4, {"prompt": prompt},
          {"model": ("ckpt", 0), "clip": ("ckpt", 1), "id_embedding": ("train", 0)}, min_size=(400, 240)),
        N("negative", "CLIPTextEncode", 4, {"text": "blurry, low quality, deformed"}, {"clip": ("ckpt", 1)},
          title="Negative prompt", min_size=(400, 160)),
        *sampling_nodes(("apply", 1), ("negative", 0), 5, f"ID_{method}", model_link=("apply", 0),
                        vae_link=("ckpt", 2), size=(1024, 1024),
                        sampler={"steps": 30, "cfg": 6.0, "scheduler": "normal"}),
    ]


def id_ea() -> list[N]:
    return [note("**Identity tokens for any SDXL checkpoint (ID-EA).** Trains 2 tokens from 1-5 photos (320 "
                 "steps of one sample, recipe quick: about 2 minutes on a 4090-class GPU, under 12 GB; recipe "
                 "paper: 8 samples per step, as the method's code) and saves "
                 "models/embeddings/my_identity_idea.safetensors: a standard embedding, so afterwards "
                 "`embedding:my_identity_idea person` works in any CLIP Text Encode prompt. Here Apply ID Embedding "
                 "puts it where {id} stands. The node says what the run will take before it starts, and the time "
                 "left as it runs. Press Cancel to stop: the state is saved; queue again with resume on to continue."),
            *id_embedding_nodes("ID-EA", "my_identity_idea", "a photo of {id} person wearing an oversized "
                                "sweater, in a cafe", 320)]


def sefi_ide() -> list[N]:
    return [note("**Per-stage identity tokens for any SDXL checkpoint (SeFi-IDE).** Trains key/value tokens "
                 "per noise stage with the face-wise attention loss (a GPU is needed: about 2 minutes on a "
                 "4090-class GPU, under 12 GB). Apply ID Embedding encodes "
                 "its prompt per stage and the model uses the stage of the current noise level, on that prompt "
                 "only: connect both its outputs to KSampler. {id} stands in place of a word like 'person'."),
            *id_embedding_nodes("SeFi-IDE", "my_identity_sefi", "a photo of {id} wearing drop earrings, "
                                "eyes closed", 400)]


FLUX_W, FLUX_H = 864, 1152  # the official FaceT5-FLUX size
FLUX_PROMPT = "A woman wearing a blue denim shirt and khaki pants, on a rocky desert plateau"  # official, as is
FLUX_MODEL = {m.folder: m.name for m in FLUX_MAIN_JOB_MODELS}  # the names `--variant flux` checks for
FLUX_VAE_URL = "https://huggingface.co/black-forest-labs/FLUX.1-dev/resolve/main/ae.safetensors"
# The official sampling mapped onto core nodes (shared/docs/facet5-flux.md §7): true CFG 3.5 = KSampler cfg,
# guidance 1.0 is in FaceT5 Encode's conditioning, the schedule comes from ModelSamplingFlux at the output size.
FLUX_SAMPLER = {"steps": 50, "cfg": 3.5, "sampler_name": "euler", "scheduler": "simple"}


def flux_model_nodes() -> list[N]:
    return [
        N("facet5", "FaceCLIPFaceT5Loader", 0, {"encoder_name": FLUX_MODEL["faceclip"], "weight_dtype": "auto"},
          min_size=(420, 0), models=[model("faceclip", FLUX_MODEL["faceclip"])]),
        N("detector", "FaceCLIPFaceDetectorLoader", 0, {"pack": "auto", "provider": "CPU", "det_size": 640},
          min_size=(420, 0)),
        N("unet", "UNETLoader", 0, {"unet_name": FLUX_MODEL["diffusion_models"], "weight_dtype": "default"},
          title="Load FaceT5 FLUX DiT", min_size=(420, 0),
          models=[model("diffusion_models", FLUX_MODEL["diffusion_models"])]),
        N("schedule", "ModelSamplingFlux", 0, {"max_shift": 1.15, "base_shift": 0.5, "width": FLUX_W,
                                               "height": FLUX_H}, {"model": ("unet", 0)}, min_size=(420, 0)),
        N("vae", "VAELoader", 0, {"vae_name": FLUX_MODEL["vae"]}, min_size=(420, 0),
          models=[model("vae", FLUX_MODEL["vae"], FLUX_VAE_URL)]),
    ]


def flux_sampling_nodes(positive, negative, col: int, prefix: str) -> list[N]:
    # EmptySD3LatentImage: FLUX's 16-channel latent
    return sampling_nodes(positive, negative, col, prefix, model_link=("schedule", 0), size=(FLUX_W, FLUX_H),
                          sampler=FLUX_SAMPLER, latent_type="EmptySD3LatentImage")


def flux_basic() -> list[N]:
    return [
        note("**FLUX portrait from one photo (FaceT5-FLUX).** FaceT5 Encode turns the face and your prompt into "
             "FLUX conditioning (guidance 1.0, set by the node) and encodes the official negative with a zero "
             "face. Official settings: euler + simple, 50 steps, CFG 3.5 (true CFG against the negative), "
             "ModelSamplingFlux at the output size, 864x1152. Replace the example photo with yours. Models: see "
             "the pack's README."),
        *flux_model_nodes(),
        photo("photo_a", PHOTO, 1),
        N("faces_a", "FaceCLIPPrepareFaces", 2, {"selection": "largest", "index": 0, "on_no_face": "raise"},
          {"face_models": ("detector", 0), "images": ("photo_a", 0)}, min_size=(340, 520)),
        N("encode_a", "FaceCLIPFaceT5Encode", 3, {"prompt": FLUX_PROMPT},
          {"facet5": ("facet5", 0), "faces": ("faces_a", 0)}, min_size=(400, 300)),
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
              {"face_models": ("detector", 0), "images": (f"photo_{side}", 0)}, min_size=(340, 520)),
            N(f"encode_{side}", "FaceCLIPFaceT5Encode", 3, {"prompt": prompt},
              {"facet5": ("facet5", 0), "faces": (f"faces_{side}", 0)}, min_size=(400, 300)),
        ]
    return [
        note("**FLUX: two people in one image (FaceT5-FLUX).** Each person gets a FaceT5 Encode of their own, "
             "limited to one half of the picture by core Conditioning (Set Mask); each prompt describes the whole "
             "scene and that person. Both example photos show the same person: load one photo of each of your "
             "two people. Change the masks to move people around."),
        *flux_model_nodes(),
        *people,
        *halves(FLUX_W, FLUX_H),
        *flux_sampling_nodes(("people", 0), ("encode_left", 1), 6, "FaceT5_FLUX_two_people"),
    ]


BUILDERS = {"basic": basic, "several_photos": several_photos, "two_people": two_people,
            "likeness_check": likeness_check, "id_ea": id_ea, "sefi_ide": sefi_ide, "flux_basic": flux_basic,
            "flux_two_people": flux_two_people}

# Runs in the page: builds one graph from the spec, lays it out, returns the frontend's serialization.
BUILD_GRAPH = """async (spec) => {
  const app = %(app)s;
  const graph = app.rootGraph;
  graph.clear();
  const made = {};
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
  // Columns left to right; in a column, nodes top to bottom in spec order. Sizes: what the node needs for its
  // widgets (the frontend's computeSize), at least the spec's minimum.
  const title = window.LiteGraph.NODE_TITLE_HEIGHT;
  const columns = [];
  for (const n of spec.nodes) (columns[n.col] ??= []).push(n);
  let x = 0;
  for (const column of columns) {
    if (!column) continue;
    let y = 0;
    let width = 0;
    for (const n of column) {
      const node = made[n.key];
      const [w, h] = node.computeSize();
      node.size = [Math.ceil(Math.max(w, n.min_size[0])), Math.ceil(Math.max(h, n.min_size[1]))];
      node.pos = [x, y + title];
      y += title + node.size[1] + spec.gap[1];
      width = Math.max(width, node.size[0]);
    }
    x += width + spec.gap[0];
  }
  const data = app.graph.serialize();
  data.extra = { ...(data.extra ?? {}), ds: { scale: spec.zoom, offset: spec.offset } };
  return data;
}"""


def spec_for_page(nodes: list[N]) -> dict:
    return {"nodes": [{"key": n.key, "type": n.type, "col": n.col, "widgets": n.widgets,
                       "links": {k: list(v) for k, v in n.links.items()}, "title": n.title,
                       "min_size": list(n.min_size), "models": n.models} for n in nodes],
            "gap": [GAP_X, GAP_Y], "zoom": ZOOM,
            # the graph starts at canvas (0, title height); put that at SCREEN_ORIGIN
            "offset": [SCREEN_ORIGIN[0] / ZOOM, SCREEN_ORIGIN[1] / ZOOM]}


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
        data = page.eval(BUILD_GRAPH % {"app": APP}, spec_for_page(BUILDERS[workflow.key]()))
        target = OUT / f"{workflow.file_stem}.json"
        target.write_text(json.dumps(data, indent=1) + "\n")
        title_card(workflow, target.with_suffix(".jpg"))
        logger.info("wrote %s", target)


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
