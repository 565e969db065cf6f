"""Build the shipped example workflows (workflows/*.json, ComfyUI's UI format) and their .jpg thumbnails.

The UI format stores widget values by position, so the node schemas of a running ComfyUI with this pack loaded
decide the order. Maintainers run this after changing a node's inputs:

    python tools/build_workflows.py http://127.0.0.1:8188
"""
from __future__ import annotations

import json
import sys
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from faceclip_headless.model_files import MAIN_JOB_MODELS  # noqa: E402
from faceclip_headless.workflow import is_widget, ordered_inputs  # noqa: E402

# the file names the main job checks for, so the shipped workflows and the check never disagree
MODEL_NAME = {m.folder: m.name for m in MAIN_JOB_MODELS}
OUT = REPO / "workflows"
DEMO_PROMPT = "A woman wearing a blue denim shirt and khaki pants, on a rocky desert plateau."
W, H = 864, 1152  # the official FaceCLIP-SDXL demo size
SEED = 453563  # the official demo seed


@dataclass
class N:
    """One node of a workflow spec: widget values by input name, links by input name -> (node key, slot)."""

    key: str
    type: str
    pos: tuple[int, int]
    widgets: dict = field(default_factory=dict)
    links: dict = field(default_factory=dict)
    title: str | None = None
    size: tuple[int, int] | None = None


def model_nodes(x: int = 0, y: int = 0) -> list[N]:
    return [
        N("faceclip", "FaceCLIPLoader", (x, y), {"encoder_name": MODEL_NAME["faceclip"],
                                                 "weight_dtype": "auto", "device": "auto"}),
        N("detector", "FaceCLIPFaceDetectorLoader", (x, y + 150), {"pack": MODEL_NAME["insightface"],
                                                                   "provider": "CPU",
                                                                   "det_size": 640}),
        N("unet", "UNETLoader", (x, y + 320), {"unet_name": MODEL_NAME["diffusion_models"],
                                               "weight_dtype": "default"}, title="Load FaceCLIP SDXL UNet"),
        N("vae", "VAELoader", (x, y + 450), {"vae_name": MODEL_NAME["vae"]}),
    ]


def sampling_nodes(positive, negative, x: int, y: int = 0, prefix: str = "FaceCLIP") -> list[N]:
    return [
        N("latent", "EmptyLatentImage", (x, y + 420), {"width": W, "height": H, "batch_size": 1}),
        N("sample", "KSampler", (x, y), {"seed": SEED, "steps": 50, "cfg": 5.0, "sampler_name": "euler",
                                         "scheduler": "ddim_uniform", "denoise": 1.0},
          {"model": ("unet", 0), "positive": positive, "negative": negative, "latent_image": ("latent", 0)}),
        N("decode", "VAEDecode", (x + 340, y), links={"samples": ("sample", 0), "vae": ("vae", 0)}),
        N("save", "SaveImage", (x + 340, y + 120), {"filename_prefix": prefix}, {"images": ("decode", 0)},
          size=(432, 620)),
    ]


def face_nodes(key: str, image: str, x: int, y: int, prompt: str, identity: str = "per_face",
               images_link=None) -> list[N]:
    nodes = [] if images_link else [N(f"photo_{key}", "LoadImage", (x, y), {"image": image}, size=(300, 360))]
    images = images_link or (f"photo_{key}", 0)
    return nodes + [
        N(f"faces_{key}", "FaceCLIPPrepareFaces", (x + 330, y), {"selection": "largest", "index": 0,
                                                                 "on_no_face": "raise"},
          {"face_models": ("detector", 0), "images": images}, size=(320, 420)),
        N(f"encode_{key}", "FaceCLIPEncode", (x + 680, y), {"prompt": prompt, "negative": None,
                                                            "identity": identity},
          {"faceclip": ("faceclip", 0), "faces": (f"faces_{key}", 0)}, size=(400, 300)),
    ]


def note(key: str, text: str, pos: tuple[int, int]) -> N:
    return N(key, "MarkdownNote", pos, {"text": text}, size=(420, 220))


def basic() -> list[N]:
    return [
        *model_nodes(0, 0),
        *face_nodes("a", "faceclip_example.png", 0, 620, DEMO_PROMPT),
        *sampling_nodes(("encode_a", 0), ("encode_a", 1), 1150, 0),
        note("about", "**FaceCLIP-SDXL: one photo to portrait.** Load a photo of the person, write what the "
             "image should show (name the subject: a woman / a man). Official settings: euler + ddim_uniform, "
             "50 steps, CFG 5, 864x1152. Models: see the pack's README.", (0, -260)),
    ]


def several_photos() -> list[N]:
    return [
        *model_nodes(0, 0),
        N("photo_1", "LoadImage", (0, 620), {"image": "faceclip_example.png"}, size=(300, 360)),
        N("photo_2", "LoadImage", (0, 1000), {"image": "faceclip_example_2.png"}, size=(300, 360)),
        N("batch", "ImageBatch", (320, 1000), links={"image1": ("photo_1", 0), "image2": ("photo_2", 0)}),
        *face_nodes("a", "", 0, 620, DEMO_PROMPT, identity="average", images_link=("batch", 0)),
        *sampling_nodes(("encode_a", 0), ("encode_a", 1), 1150, 0, "FaceCLIP_several"),
        note("about", "**Several photos of one person.** Batch Images scales and centre-crops the second photo "
             "to the first one's size, so use photos of similar shape (add more with further Batch Images "
             "nodes). identity = average blends the faces into one identity; per_face gives one image per "
             "photo with a latent batch of the same size.", (0, -260)),
    ]


def two_people() -> list[N]:
    half = W // 2
    return [
        *model_nodes(0, 0),
        *face_nodes("left", "faceclip_example.png", 0, 620, "A woman in a red dress, standing on the left, "
                    "at a summer garden party."),
        *face_nodes("right", "faceclip_example_2.png", 0, 1080, "A man in a grey suit, standing on the right, "
                    "at a summer garden party."),
        N("scene", "FaceCLIPTextEncode", (680, 1520), {"text": "Two friends at a summer garden party, warm "
                                                                "evening light, photo."},
          {"faceclip": ("faceclip", 0)}, size=(400, 200)),
        N("empty", "SolidMask", (1120, 620), {"value": 0.0, "width": W, "height": H}),
        N("half", "SolidMask", (1120, 780), {"value": 1.0, "width": half, "height": H}),
        N("mask_left", "MaskComposite", (1380, 620), {"x": 0, "y": 0, "operation": "add"},
          {"destination": ("empty", 0), "source": ("half", 0)}),
        N("mask_right", "MaskComposite", (1380, 820), {"x": half, "y": 0, "operation": "add"},
          {"destination": ("empty", 0), "source": ("half", 0)}),
        N("set_left", "ConditioningSetMask", (1640, 620), {"strength": 1.0, "set_cond_area": "default"},
          {"conditioning": ("encode_left", 0), "mask": ("mask_left", 0)}),
        N("set_right", "ConditioningSetMask", (1640, 820), {"strength": 1.0, "set_cond_area": "default"},
          {"conditioning": ("encode_right", 0), "mask": ("mask_right", 0)}),
        N("people", "ConditioningCombine", (1900, 620), links={"conditioning_1": ("set_left", 0),
                                                              "conditioning_2": ("set_right", 0)}),
        N("all", "ConditioningCombine", (1900, 780), links={"conditioning_1": ("people", 0),
                                                           "conditioning_2": ("scene", 0)}),
        *sampling_nodes(("all", 0), ("encode_left", 1), 1150, 0, "FaceCLIP_two_people"),
        note("about", "**Two people in one image.** Each person gets a FaceCLIP Encode of their own, limited to "
             "one half of the picture by core ConditioningSetMask; a face-free scene prompt covers the whole "
             "image. Change the masks to move people around.", (0, -260)),
    ]


def likeness_check() -> list[N]:
    return [n for n in basic() if n.key != "about"] + [
        N("similarity", "FaceCLIPFaceSimilarity", (1490, 800), links={
            "face_models": ("detector", 0), "reference": ("faces_a", 0), "images": ("decode", 0)}),
        N("show_similarity", "PreviewImage", (1800, 800), links={"images": ("similarity", 1)}, size=(432, 620)),
        N("score", "PreviewAny", (1490, 1000), links={"source": ("similarity", 0)}, size=(280, 140)),
        note("about", "**Likeness check.** The portrait is scored against the reference face with ArcFace "
             "(Face Similarity needs a model pack with a recognizer: antelopev2 or buffalo_l). The score shows "
             "in Preview as Text and on the annotated image; the same person usually scores above 0.4.",
             (0, -260)),
    ]


def id_embedding_nodes(method: str, name: str, prompt: str, steps: int) -> list[N]:
    """SDXL checkpoint + photo -> Train ID Embedding -> Apply ID Embedding -> KSampler (any SDXL checkpoint)."""
    return [
        N("ckpt", "CheckpointLoaderSimple", (0, 0), {"ckpt_name": "sd_xl_base_1.0.safetensors"}),
        N("detector", "FaceCLIPFaceDetectorLoader", (0, 160), {"pack": "antelopev2", "provider": "CPU",
                                                               "det_size": 640}),
        N("photo", "LoadImage", (0, 330), {"image": "faceclip_example.png"}, size=(300, 360)),
        N("faces", "FaceCLIPPrepareFaces", (330, 330), {"selection": "largest", "index": 0, "on_no_face": "raise"},
          {"face_models": ("detector", 0), "images": ("photo", 0)}, size=(320, 420)),
        N("train", "FaceCLIPTrainIDEmbedding", (680, 0), {
            "method": method, "name": name, "steps": steps, "learning_rate": 0.0, "seed": 0, "resolution": 1024,
            "batch_size": 0, "resume": False, "overwrite": False, "training_dtype": "auto",
            "framing": "head_and_shoulders", "class_word": "person"},
          {"model": ("ckpt", 0), "clip": ("ckpt", 1), "vae": ("ckpt", 2), "faces": ("faces", 0)}, size=(360, 700)),
        N("apply", "FaceCLIPApplyIDEmbedding", (1080, 0), {"prompt": prompt},
          {"model": ("ckpt", 0), "clip": ("ckpt", 1), "id_embedding": ("train", 0)}, size=(400, 260)),
        N("negative", "CLIPTextEncode", (1080, 300), {"text": "blurry, low quality, deformed"},
          {"clip": ("ckpt", 1)}, size=(400, 160)),
        N("latent", "EmptyLatentImage", (1520, 420), {"width": 1024, "height": 1024, "batch_size": 1}),
        N("sample", "KSampler", (1520, 0), {"seed": SEED, "steps": 30, "cfg": 6.0, "sampler_name": "euler",
                                            "scheduler": "normal", "denoise": 1.0},
          {"model": ("apply", 0), "positive": ("apply", 1), "negative": ("negative", 0),
           "latent_image": ("latent", 0)}),
        N("decode", "VAEDecode", (1860, 0), links={"samples": ("sample", 0), "vae": ("ckpt", 2)}),
        N("save", "SaveImage", (1860, 120), {"filename_prefix": f"ID_{method}"}, {"images": ("decode", 0)},
          size=(432, 620)),
    ]


def id_ea() -> list[N]:
    return id_embedding_nodes("ID-EA", "my_identity_idea", "a photo of {id} person wearing an oversized "
                              "sweater, in a cafe", 320) + [
        note("about", "**ID-EA identity embedding (any SDXL checkpoint).** Trains 2 tokens from 1-5 photos "
             "(320 steps of 8 samples, as the method's code; a GPU is needed) and saves "
             "models/embeddings/my_identity_idea.safetensors: a standard embedding, so afterwards "
             "`embedding:my_identity_idea person` works in any CLIPTextEncode prompt. Here Apply ID Embedding "
             "puts it where {id} stands. Set class_word to woman or man if it fits. Out of GPU memory: "
             "micro_batch 1 or gradient_checkpointing (advanced). Press Cancel to stop: the state is saved; "
             "queue again with resume on to continue.", (0, -260))]


def sefi_ide() -> list[N]:
    return id_embedding_nodes("SeFi-IDE", "my_identity_sefi", "a photo of {id} wearing drop earrings, "
                              "eyes closed", 400) + [
        note("about", "**SeFi-IDE identity embedding (any SDXL checkpoint).** Trains per-noise-stage key/value "
             "tokens with the face-wise attention loss (a GPU is needed). Apply ID Embedding encodes its prompt "
             "per stage and the model uses the stage of the current noise level, on that prompt only: connect "
             "both its outputs to KSampler. {id} stands in place of a word like 'person'.", (0, -260))]


WORKFLOWS = {"basic": basic, "several_photos": several_photos, "two_people": two_people,
             "likeness_check": likeness_check, "id_ea": id_ea, "sefi_ide": sefi_ide}


def _widget_values(n: N, schema: dict) -> list:
    values = []
    for name, spec in ordered_inputs(schema):
        if not is_widget(spec):
            continue
        options = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
        value = n.widgets.get(name)
        values.append(options.get("default") if value is None else value)
        if options.get("control_after_generate"):
            values.append("fixed")
    if n.type == "LoadImage":
        values.append("image")  # the upload button's slot
    return values


def to_ui(spec: list[N], info: dict) -> dict:
    ids = {n.key: i + 1 for i, n in enumerate(spec)}
    types = {n.key: n.type for n in spec}
    links: list[list] = []
    sockets: dict[str, list[dict]] = {}
    for n in spec:
        if n.type == "MarkdownNote":
            continue
        rows = []
        for name, input_spec in ordered_inputs(info[n.type]):
            if is_widget(input_spec):
                continue
            link = None
            if name in n.links:
                src, slot = n.links[name]
                link = len(links) + 1
                links.append([link, ids[src], slot, ids[n.key], len(rows), info[types[src]]["output"][slot]])
            rows.append({"name": name, "type": input_spec[0], "link": link})
        sockets[n.key] = rows
    ui_nodes = []
    for order, n in enumerate(spec):
        node = {"id": ids[n.key], "type": n.type, "pos": list(n.pos), "size": list(n.size or (300, 130)),
                "flags": {}, "order": order, "mode": 0}
        if n.type == "MarkdownNote":
            node.update(inputs=[], outputs=[], properties={}, widgets_values=[n.widgets["text"]],
                        color="#432", bgcolor="#653")
        else:
            schema = info[n.type]
            outputs = [{"name": schema["output_name"][i], "type": t, "slot_index": i,
                        "links": [link[0] for link in links if link[1] == ids[n.key] and link[2] == i]}
                       for i, t in enumerate(schema["output"])]
            node.update(inputs=sockets[n.key], outputs=outputs, properties={"Node name for S&R": n.type},
                        widgets_values=_widget_values(n, schema))
            if n.title:
                node["title"] = n.title
        ui_nodes.append(node)
    return {"last_node_id": len(spec), "last_link_id": len(links), "nodes": ui_nodes, "links": links,
            "groups": [], "config": {}, "extra": {"ds": {"scale": 0.6, "offset": [140, 460]}}, "version": 0.4}


def thumbnail(spec: list[N], path: Path) -> None:
    """A schematic of the graph (the pack ships no weights, so there is no real render to show)."""
    from PIL import Image, ImageDraw

    real = [n for n in spec if n.type != "MarkdownNote"]
    xs = [n.pos[0] for n in real]
    ys = [n.pos[1] for n in real]
    x0, y0, x1, y1 = min(xs), min(ys), max(xs) + 420, max(ys) + 420
    scale = min(512 / (x1 - x0), 384 / (y1 - y0))
    img = Image.new("RGB", (512, 384), (32, 34, 40))
    draw = ImageDraw.Draw(img)
    box = {n.key: ((n.pos[0] - x0) * scale + 8, (n.pos[1] - y0) * scale + 8) for n in real}
    for n in real:
        for src, _ in n.links.values():
            (ax, ay), (bx, by) = box[src], box[n.key]
            draw.line([(ax + 60, ay + 10), (bx, by + 10)], fill=(120, 170, 230), width=2)
    for n in real:
        x, y = box[n.key]
        ours = n.type.startswith("FaceCLIP")
        draw.rectangle([x, y, x + 100, y + 22], fill=(150, 90, 20) if ours else (70, 74, 84),
                       outline=(240, 180, 60) if ours else (140, 140, 150))
        draw.text((x + 4, y + 5), (n.title or n.type)[:16], fill=(240, 240, 240))
    img.save(path, quality=90)


def main(url: str) -> None:
    with urllib.request.urlopen(url.rstrip("/") + "/object_info") as r:  # noqa: S310 - a local ComfyUI
        info = json.load(r)
    OUT.mkdir(exist_ok=True)
    for name, build in WORKFLOWS.items():
        spec = build()
        (OUT / f"{name}.json").write_text(json.dumps(to_ui(spec, info), indent=1) + "\n")
        thumbnail(spec, OUT / f"{name}.jpg")
        print("wrote", OUT / f"{name}.json")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:8188")
