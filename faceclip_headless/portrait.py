"""The main job, headless: a portrait of the person in a face photo, following a prompt.

    python -m faceclip_headless --face photo.jpg --prompt "A woman in a denim shirt on a desert plateau" \
        --out portrait.png [--seed N] [--steps 50] [--comfyui /path/to/ComfyUI | --server http://127.0.0.1:8188]

Checks every model file before any work and names what is missing, where to get it and where to put it. Then
runs the pack's shipped one-photo workflow ("1 - Portrait from one photo") through ComfyUI: a running server given by
--server, or a server of its own started from --comfyui / COMFYUI_PATH / the ComfyUI this pack is installed in.
Load Face Detector runs with pack "auto" (antelopev2 if installed, else buffalo_l, else any other pack), whatever
the workflow stores.

A photo in which no face is found is handled as --on-no-face says, with Prepare Faces' own policies: "raise"
(default) stops with exit code 1 and a message saying what to try; "text_only" makes the image from the prompt
alone, without the person's likeness, and warns that it did. "skip" is refused (exit code 2): it drops photos
without a face, and with the one photo there would be nothing left, so it would only stop like "raise".
--face-threshold is Load Face Detector's threshold: lower it for a small, dark or turned face that is not found.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
import tempfile
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from faceclip_core.atomic import write_bytes
from faceclip_core.faces.model_packs import AUTO_PACK
from faceclip_core.faces.prepare import NO_FACE_POLICIES

from .client import ComfyClient, PromptResult
from .model_files import (
    MODELS_BY_VARIANT,
    RequiredModel,
    describe_missing,
    find_missing,
    find_missing_on_server,
)
from .network import NETWORK_ERRORS, network_failure
from .server import ComfyServer, ServerConfig, ServerStartError
from .shipped_workflows import BY_KEY
from .workflow import find_nodes, to_api

logger = logging.getLogger(__name__)
PACK_DIR = Path(__file__).resolve().parents[1]
PACK_NAME = "comfyui-faceclip"
BASIC_WORKFLOW = BY_KEY["basic"].path
DEFAULT_OUT = "portrait.png"


@dataclass(frozen=True)
class Variant:
    """What --variant runs: a shipped one-photo workflow and the node types the job fills in."""
    workflow: Path
    encode_node: str  # takes the prompt
    latent_node: str  # takes the size
    models: tuple[RequiredModel, ...]


VARIANTS = {
    "sdxl": Variant(BASIC_WORKFLOW, "FaceCLIPEncode", "EmptyLatentImage", MODELS_BY_VARIANT["sdxl"]),
    "flux": Variant(BY_KEY["flux_basic"].path, "FaceCLIPFaceT5Encode", "EmptySD3LatentImage",
                    MODELS_BY_VARIANT["flux"]),
}

EXIT_FAILED, EXIT_BAD_ARGS, EXIT_MODELS_MISSING = 1, 2, 3
EPILOG = ("Face detection uses whichever insightface pack is installed: antelopev2, else buffalo_l (Load Face "
          "Detector's pack 'auto'). Exit codes: 0 done; 1 generation failed or ComfyUI unusable (the message says "
          "why, e.g. no face found in the photo); 2 bad arguments; 3 models missing.")

# Prepare Faces' on_no_face policies that mean something for one photo ("skip" would leave no face at all).
ON_NO_FACE_CHOICES = tuple(policy for policy in NO_FACE_POLICIES if policy != "skip")
# Load Face Detector's threshold input: default and range.
FACE_THRESHOLD, FACE_THRESHOLD_RANGE = 0.5, (0.05, 0.95)


@dataclass(frozen=True)
class PortraitRequest:
    prompt: str
    seed: int
    steps: int
    width: int
    height: int
    on_no_face: str = "raise"
    face_threshold: float = FACE_THRESHOLD


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m faceclip_headless", description=__doc__.split("\n\n")[0],
                                epilog=EPILOG)
    p.add_argument("--face", type=Path, required=True, help="a photo of the person (any size; the face is found)")
    p.add_argument("--prompt", required=True, help="what the portrait should show (name the subject: a woman...)")
    p.add_argument("--out", type=Path, default=None,
                   help=f"where to write the PNG (default: {DEFAULT_OUT} in the current folder; run from inside "
                        "this pack's folder, in your home folder instead)")
    p.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    p.add_argument("--variant", choices=list(VARIANTS), default="sdxl",
                   help="sdxl: FaceCLIP-SDXL (default, official CFG 5); flux: FaceT5-FLUX (FLUX.1-dev fine-tune, "
                        "official CFG 3.5 and guidance 1.0; workflow '7 - FLUX portrait from one photo')")
    p.add_argument("--seed", type=int, default=453563, help="sampling seed (default: the official demo's)")
    p.add_argument("--steps", type=int, default=50, help="sampling steps (official: 50)")
    p.add_argument("--width", type=int, default=864, help="image width (official: 864)")
    p.add_argument("--height", type=int, default=1152, help="image height (official: 1152)")
    # No argparse choices: "skip" is one of Prepare Faces' policies and deserves its own explanation (check_request).
    p.add_argument("--on-no-face", default="raise", metavar="{raise,text_only}",
                   help="when no face is found in --face: raise (default) stops with exit code 1 and says what to "
                        "try; text_only makes the image from the prompt alone, without the person's likeness, and "
                        "warns. (Prepare Faces' 'skip' is refused: with one photo nothing would be left.)")
    p.add_argument("--face-threshold", type=float, default=FACE_THRESHOLD,
                   help=f"lowest face-detection score that counts as a face, {FACE_THRESHOLD_RANGE[0]:g} to "
                        f"{FACE_THRESHOLD_RANGE[1]:g} (default {FACE_THRESHOLD:g}, Load Face Detector's threshold); "
                        "lower it (e.g. 0.3) when a small, dark or turned face is not found")
    p.add_argument("--comfyui", type=Path, help="ComfyUI folder to start (default: COMFYUI_PATH, or the ComfyUI "
                                                "this pack sits in)")
    p.add_argument("--python", default=sys.executable, help="Python to start ComfyUI with (default: this one)")
    p.add_argument("--cpu", action="store_true", help="start ComfyUI with --cpu (no GPU)")
    p.add_argument("--server", help="URL of a running ComfyUI with this pack installed, instead of starting one")
    p.add_argument("--extra-model-paths-config", type=Path, action="append", default=[],
                   help="extra_model_paths.yaml files to search besides ComfyUI's own")
    p.add_argument("--timeout", type=float, default=3600, help="seconds to wait for the image")
    return p.parse_args(argv)


def default_out(cwd: Path) -> Path:
    """--out when none is given: the current folder, unless that is this pack's checkout (where the README's
    command runs), which is no place for a user's pictures: then the home folder."""
    cwd = cwd.resolve()
    inside_pack = cwd == PACK_DIR or PACK_DIR in cwd.parents
    return (Path.home() if inside_pack else cwd) / DEFAULT_OUT


def locate_comfyui(explicit: Path | None) -> Path | None:
    if explicit is not None:
        candidates = [explicit]
    else:
        candidates = [Path(os.environ["COMFYUI_PATH"])] if os.environ.get("COMFYUI_PATH") else []
        if PACK_DIR.parent.name == "custom_nodes":
            candidates.append(PACK_DIR.parent.parent)
    return next((c.resolve() for c in candidates if (c / "main.py").is_file()), None)


def portrait_prompt(workflow: dict, object_info: dict, image: str, request: PortraitRequest,
                    variant: Variant = VARIANTS["sdxl"]) -> dict:
    """The variant's one-photo workflow as an API prompt, with the user's photo, prompt, seed, steps, size and
    no-face settings filled in, and Load Face Detector set to pack "auto" (whatever pack the workflow names)."""
    prompt = to_api(workflow, object_info)
    targets = {t: find_nodes(prompt, t) for t in ("LoadImage", variant.encode_node, "KSampler", variant.latent_node,
                                                  "SaveImage", "FaceCLIPFaceDetectorLoader", "FaceCLIPPrepareFaces")}
    missing = [t for t, ids in targets.items() if len(ids) != 1]
    if missing:
        raise ValueError(f"{variant.workflow.name} must have exactly one node of each of {', '.join(missing)}")
    one = {t: prompt[ids[0]]["inputs"] for t, ids in targets.items()}
    one["LoadImage"]["image"] = image
    one[variant.encode_node]["prompt"] = request.prompt
    one["KSampler"].update(seed=request.seed, steps=request.steps)
    one[variant.latent_node].update(width=request.width, height=request.height)
    for node_id in find_nodes(prompt, "ModelSamplingFlux"):  # FLUX's schedule follows the output size
        prompt[node_id]["inputs"].update(width=request.width, height=request.height)
    # "auto": the job runs with whichever insightface pack is installed (the pre-flight accepts either).
    one["FaceCLIPFaceDetectorLoader"].update(pack=AUTO_PACK, threshold=request.face_threshold)
    one["FaceCLIPPrepareFaces"]["on_no_face"] = request.on_no_face
    return prompt


def is_no_face_error(result: PromptResult, prepare_node: str) -> bool:
    """Whether the run stopped because Prepare Faces found no face in the photo."""
    error = result.error or {}
    return (result.status == "error" and str(error.get("node_id")) == prepare_node
            and str(error.get("exception_type", "")).endswith("NoFaceError"))


def no_face_message(face: Path, server_message: str, threshold: float) -> str:
    """The no-face error in the CLI's own terms: the server's message advises node inputs the CLI user cannot set,
    so only its facts (sizes tried, threshold) are kept, and the advice names this command's options."""
    facts = re.search(r"no face found \(([^)]*)\)", server_message)
    detail = f" ({facts.group(1)})" if facts else ""
    return (f"No face was found in {face}{detail}, so there is no one to portray; nothing was written. Try a photo "
            "where the face is larger, frontal and well lit, or crop it around the face; lower --face-threshold "
            f"(now {threshold:g}) for a small, dark or turned face; or pass --on-no-face text_only to make the image "
            "from the prompt alone, without the person's likeness.")


def made_without_face(result: PromptResult, prepare_node: str) -> bool:
    """Whether Prepare Faces kept the photo as a face-free slot (--on-no-face text_only and no face found)."""
    images = result.outputs.get(prepare_node, {}).get("faceclip_faces") or []
    return any(image.get("status") == "text_only" for image in images)


NO_PACK = ("This ComfyUI (%s) has no FaceCLIP nodes: the pack is not installed there or failed to import (look "
           "for 'comfyui-faceclip' in its log).")
MAX_SIDE = 8192


def check_request(args: argparse.Namespace) -> str | None:
    """What is wrong with the arguments, before anything is uploaded or started; None when nothing is."""
    if not args.face.is_file():
        return f"The face photo {args.face} does not exist."
    try:
        from PIL import Image

        with Image.open(args.face) as photo:
            photo.verify()
    except Exception as exc:  # noqa: BLE001 - PIL raises many kinds for a file that is not an image
        return f"--face {args.face} is not an image PIL can read ({type(exc).__name__}); give a JPEG, PNG or WebP."
    if args.server is not None and not re.match(r"https?://", args.server, re.IGNORECASE):
        address = args.server.split("://", 1)[-1]
        return (f"--server {args.server} needs its scheme: add http:// (--server http://{address}), or https:// "
                "for a ComfyUI behind TLS.")
    if not 1 <= args.steps <= 10000:
        return f"--steps must be between 1 and 10000, got {args.steps}."
    # SDXL's latent is 1/8 of the image; FLUX packs 2x2 latent cells into one token, so its grid is 16.
    grid, model = (16, "FLUX") if args.variant == "flux" else (8, "SDXL")
    for name in ("width", "height"):
        value = getattr(args, name)
        if not 64 <= value <= MAX_SIDE or value % grid:
            return (f"--{name} must be a multiple of {grid} between 64 and {MAX_SIDE} ({model}'s latent grid), "
                    f"got {value}.")
    if not 0 <= args.seed < 2 ** 64:
        return f"--seed must be between 0 and 2**64 - 1, got {args.seed}."
    if args.on_no_face not in ON_NO_FACE_CHOICES:
        if args.on_no_face == "skip":  # a Prepare Faces policy that means nothing for one photo
            return ("--on-no-face skip drops photos without a face; with the one --face photo nothing would be left, "
                    "so it would only stop like 'raise'. Use --on-no-face raise (stop and say so) or text_only "
                    "(make the image from the prompt alone, without the person's likeness).")
        return f"--on-no-face must be one of {', '.join(ON_NO_FACE_CHOICES)}, got {args.on_no_face!r}."
    low, high = FACE_THRESHOLD_RANGE
    if not low <= args.face_threshold <= high:
        return f"--face-threshold must be between {low:g} and {high:g}, got {args.face_threshold:g}."
    if args.out.exists() and not args.force:
        return f"{args.out} already exists; choose another --out or pass --force to overwrite it."
    return None


def _server_for(args: argparse.Namespace, stack: ExitStack) -> ComfyClient | int:
    """A client for the ComfyUI to use (starting one if needed), or an exit code after explaining why not."""
    if args.server:
        client = ComfyClient(args.server, timeout=args.timeout)
        try:
            info = client.object_info(VARIANTS[args.variant].encode_node)  # {} from a ComfyUI without the pack
        except NETWORK_ERRORS + (aiohttp.ClientError, OSError) as exc:  # refused, timed out, no such host
            logger.error("Cannot reach ComfyUI at %s: %s. Is it running, and is that its address?",
                         args.server, network_failure(exc, args.server).split(": ", 1)[-1])
            return EXIT_FAILED
        except Exception as exc:  # noqa: BLE001 - an answer that is not ComfyUI's HTTP API
            logger.error("Cannot reach ComfyUI at %s (%s: %s). Is it running, and is that its address?",
                         args.server, type(exc).__name__, exc)
            return EXIT_FAILED
        if VARIANTS[args.variant].encode_node not in info:
            logger.error(NO_PACK, args.server)
            return EXIT_FAILED

        def listing(folder: str) -> list[str] | None:
            try:
                return client.get_json(f"/models/{folder}")
            except Exception:  # noqa: BLE001 - an unknown folder answers 404: report it as missing
                return None

        missing = find_missing_on_server(listing, VARIANTS[args.variant].models)
        if missing:
            logger.error(describe_missing(missing))
            return EXIT_MODELS_MISSING
        return client

    comfyui = locate_comfyui(args.comfyui)
    if comfyui is None:
        logger.error("No ComfyUI found. Pass --comfyui /path/to/ComfyUI, set COMFYUI_PATH, install this pack under "
                  "ComfyUI/custom_nodes/, or pass --server URL of a running ComfyUI.")
        return EXIT_BAD_ARGS
    missing = find_missing(comfyui, args.extra_model_paths_config, VARIANTS[args.variant].models)
    if missing:
        logger.error(describe_missing(missing))
        return EXIT_MODELS_MISSING

    extra = list(args.extra_model_paths_config)
    if not (comfyui / "custom_nodes" / PACK_DIR.name).exists() and PACK_DIR.parent.resolve() != \
            (comfyui / "custom_nodes").resolve():
        # Mount the pack the way the tests do: a custom_nodes folder holding a link to it.
        mount = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="faceclip_mount_")))
        (mount / PACK_NAME).symlink_to(PACK_DIR, target_is_directory=True)
        (mount / "extra_model_paths.yaml").write_text(f"faceclip_pack:\n    custom_nodes: {mount}\n")
        extra.append(mount / "extra_model_paths.yaml")
    # Kept after a failure, since the messages point to it; removed after a successful job.
    fd, name = tempfile.mkstemp(prefix="faceclip_comfyui_", suffix=".log")
    os.close(fd)
    log_path = Path(name)
    stack.callback(lambda: log_path.unlink(missing_ok=True) if args.job_succeeded else None)
    server = ComfyServer(ServerConfig(comfyui_dir=comfyui, python=args.python, cpu=args.cpu,
                                      extra_model_paths=extra, log_path=log_path))
    logger.info("Starting ComfyUI from %s (log: %s) ...", comfyui, log_path)
    try:
        stack.enter_context(server)
    except ServerStartError as exc:
        logger.error("ComfyUI did not start: %s\nIts whole log: %s", exc, log_path)
        return EXIT_FAILED
    return ComfyClient(server.url, timeout=args.timeout)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = parse_args(argv)
    args.job_succeeded = False
    if args.out is None:
        args.out = default_out(Path.cwd())
        logger.info("No --out given: the portrait goes to %s", args.out)
    problem = check_request(args)
    if problem:
        logger.error(problem)
        return EXIT_BAD_ARGS
    request = PortraitRequest(args.prompt, args.seed, args.steps, args.width, args.height, args.on_no_face,
                              args.face_threshold)
    with ExitStack() as stack:
        client = _server_for(args, stack)
        if isinstance(client, int):
            return client
        info = client.object_info()
        variant = VARIANTS[args.variant]
        if variant.encode_node not in info:
            logger.error(NO_PACK, client.base_url)
            return EXIT_FAILED
        image = client.upload_image(args.face)
        prompt = portrait_prompt(json.loads(variant.workflow.read_text()), info, image, request, variant)
        logger.info("Generating: %d steps at %dx%d, seed %d ...", request.steps, request.width, request.height,
                 request.seed)
        result = client.run(prompt)
        (prepare,) = find_nodes(prompt, "FaceCLIPPrepareFaces")
        if is_no_face_error(result, prepare):
            logger.error(no_face_message(args.face, str(result.error.get("exception_message", "")),
                                         request.face_threshold))
            return EXIT_FAILED
        if not result.ok:
            logger.error("ComfyUI could not make the portrait: %s", result.describe_error())
            return EXIT_FAILED
        if made_without_face(result, prepare):
            logger.warning("No face was found in %s, so the image was made from the prompt alone, without the "
                           "person's likeness (--on-no-face text_only).", args.face)
        (save,) = find_nodes(prompt, "SaveImage")
        images = result.images(save)
        if not images:
            logger.error("The workflow finished without an image.")
            return EXIT_FAILED
        try:
            write_bytes(args.out, client.view(images[0]), overwrite=args.force)
        except FileExistsError:
            logger.error("%s appeared while generating; not overwritten (pass --force).", args.out)
            return EXIT_BAD_ARGS
        args.job_succeeded = True
    logger.info("Wrote %s", args.out.resolve())
    return 0


if __name__ == "__main__":
    sys.exit(main())
