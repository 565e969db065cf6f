"""The main job, headless: a portrait of the person in a face photo, following a prompt.

    python -m faceclip_headless --face photo.jpg --prompt "A woman in a denim shirt on a desert plateau" \
        --out portrait.png [--seed N] [--steps 50] [--comfyui /path/to/ComfyUI | --server http://127.0.0.1:8188]

Checks every model file before any work and names what is missing, where to get it and where to put it. Then
runs the pack's shipped basic workflow (workflows/basic.json) through ComfyUI: a running server given by
--server, or a server of its own started from --comfyui / COMFYUI_PATH / the ComfyUI this pack is installed in.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from faceclip_core.atomic import write_bytes

from .client import ComfyClient
from .model_files import describe_missing, find_missing, find_missing_on_server
from .server import ComfyServer, ServerConfig, ServerStartError
from .workflow import find_nodes, to_api

logger = logging.getLogger(__name__)
PACK_DIR = Path(__file__).resolve().parents[1]
PACK_NAME = "comfyui-faceclip"
BASIC_WORKFLOW = PACK_DIR / "workflows" / "basic.json"

EXIT_FAILED, EXIT_BAD_ARGS, EXIT_MODELS_MISSING = 1, 2, 3


@dataclass(frozen=True)
class PortraitRequest:
    prompt: str
    seed: int
    steps: int
    width: int
    height: int


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m faceclip_headless", description=__doc__.split("\n\n")[0])
    p.add_argument("--face", type=Path, required=True, help="a photo of the person (any size; the face is found)")
    p.add_argument("--prompt", required=True, help="what the portrait should show (name the subject: a woman...)")
    p.add_argument("--out", type=Path, default=Path("portrait.png"), help="where to write the PNG")
    p.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    p.add_argument("--seed", type=int, default=453563, help="sampling seed (default: the official demo's)")
    p.add_argument("--steps", type=int, default=50, help="sampling steps (official: 50)")
    p.add_argument("--width", type=int, default=864, help="image width (official: 864)")
    p.add_argument("--height", type=int, default=1152, help="image height (official: 1152)")
    p.add_argument("--comfyui", type=Path, help="ComfyUI folder to start (default: COMFYUI_PATH, or the ComfyUI "
                                                "this pack sits in)")
    p.add_argument("--python", default=sys.executable, help="Python to start ComfyUI with (default: this one)")
    p.add_argument("--cpu", action="store_true", help="start ComfyUI with --cpu (no GPU)")
    p.add_argument("--server", help="URL of a running ComfyUI with this pack installed, instead of starting one")
    p.add_argument("--extra-model-paths-config", type=Path, action="append", default=[],
                   help="extra_model_paths.yaml files to search besides ComfyUI's own")
    p.add_argument("--timeout", type=float, default=3600, help="seconds to wait for the image")
    return p.parse_args(argv)


def locate_comfyui(explicit: Path | None) -> Path | None:
    if explicit is not None:
        candidates = [explicit]
    else:
        candidates = [Path(os.environ["COMFYUI_PATH"])] if os.environ.get("COMFYUI_PATH") else []
        if PACK_DIR.parent.name == "custom_nodes":
            candidates.append(PACK_DIR.parent.parent)
    return next((c.resolve() for c in candidates if (c / "main.py").is_file()), None)


def portrait_prompt(workflow: dict, object_info: dict, image: str, request: PortraitRequest) -> dict:
    """The basic workflow as an API prompt, with the user's photo, prompt, seed, steps and size filled in."""
    prompt = to_api(workflow, object_info)
    targets = {t: find_nodes(prompt, t) for t in ("LoadImage", "FaceCLIPEncode", "KSampler", "EmptyLatentImage",
                                                  "SaveImage")}
    missing = [t for t, ids in targets.items() if len(ids) != 1]
    if missing:
        raise ValueError(f"{BASIC_WORKFLOW.name} must have exactly one node of each of {', '.join(missing)}")
    one = {t: prompt[ids[0]]["inputs"] for t, ids in targets.items()}
    one["LoadImage"]["image"] = image
    one["FaceCLIPEncode"]["prompt"] = request.prompt
    one["KSampler"].update(seed=request.seed, steps=request.steps)
    one["EmptyLatentImage"].update(width=request.width, height=request.height)
    return prompt


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
    if not 1 <= args.steps <= 10000:
        return f"--steps must be between 1 and 10000, got {args.steps}."
    for name in ("width", "height"):
        value = getattr(args, name)
        if not 64 <= value <= MAX_SIDE or value % 8:
            return f"--{name} must be a multiple of 8 between 64 and {MAX_SIDE} (SDXL's latent grid), got {value}."
    if not 0 <= args.seed < 2 ** 64:
        return f"--seed must be between 0 and 2**64 - 1, got {args.seed}."
    if args.out.exists() and not args.force:
        return f"{args.out} already exists; choose another --out or pass --force to overwrite it."
    return None


def _server_for(args: argparse.Namespace, stack: ExitStack) -> ComfyClient | int:
    """A client for the ComfyUI to use (starting one if needed), or an exit code after explaining why not."""
    if args.server:
        client = ComfyClient(args.server, timeout=args.timeout)
        try:
            info = client.object_info("FaceCLIPEncode")  # {} from a ComfyUI without the pack
        except Exception as exc:  # noqa: BLE001 - refused, timed out, or not ComfyUI's HTTP API
            logger.error("Cannot reach ComfyUI at %s (%s: %s). Is it running, and is that its address?",
                         args.server, type(exc).__name__, exc)
            return EXIT_FAILED
        if "FaceCLIPEncode" not in info:
            logger.error(NO_PACK, args.server)
            return EXIT_FAILED

        def listing(folder: str) -> list[str] | None:
            try:
                return client.get_json(f"/models/{folder}")
            except Exception:  # noqa: BLE001 - an unknown folder answers 404: report it as missing
                return None

        missing = find_missing_on_server(listing)
        if missing:
            logger.error(describe_missing(missing))
            return EXIT_MODELS_MISSING
        return client

    comfyui = locate_comfyui(args.comfyui)
    if comfyui is None:
        logger.error("No ComfyUI found. Pass --comfyui /path/to/ComfyUI, set COMFYUI_PATH, install this pack under "
                  "ComfyUI/custom_nodes/, or pass --server URL of a running ComfyUI.")
        return EXIT_BAD_ARGS
    missing = find_missing(comfyui, args.extra_model_paths_config)
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
    problem = check_request(args)
    if problem:
        logger.error(problem)
        return EXIT_BAD_ARGS
    request = PortraitRequest(args.prompt, args.seed, args.steps, args.width, args.height)
    with ExitStack() as stack:
        client = _server_for(args, stack)
        if isinstance(client, int):
            return client
        info = client.object_info()
        if "FaceCLIPEncode" not in info:
            logger.error(NO_PACK, client.base_url)
            return EXIT_FAILED
        image = client.upload_image(args.face)
        prompt = portrait_prompt(json.loads(BASIC_WORKFLOW.read_text()), info, image, request)
        logger.info("Generating: %d steps at %dx%d, seed %d ...", request.steps, request.width, request.height,
                 request.seed)
        result = client.run(prompt)
        if not result.ok:
            logger.error("ComfyUI could not make the portrait: %s", result.describe_error())
            return EXIT_FAILED
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
    logger.info("Wrote %s", args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
