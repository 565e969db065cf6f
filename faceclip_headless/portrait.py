"""The main job, headless: a portrait of the person in a face photo, following a prompt.

    python -m faceclip_headless --face photo.jpg --prompt "A woman in a denim shirt on a desert plateau" \
        --out portrait.png [--comfyui /path/to/ComfyUI | --server http://127.0.0.1:8188]

Checks every model file before any work and names what is missing, where to get it and where to put it.
Then runs the pack's shipped basic workflow (workflows/basic.json) through ComfyUI: a server of its own
started from --comfyui (default: the ComfyUI this pack is installed in), or a running one given by --server.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from .model_files import describe_missing, find_missing

log = logging.getLogger(__name__)
PACK_DIR = Path(__file__).resolve().parents[1]
BASIC_WORKFLOW = PACK_DIR / "workflows" / "basic.json"

EXIT_BAD_ARGS, EXIT_MODELS_MISSING, EXIT_NOT_AVAILABLE = 2, 3, 4


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m faceclip_headless", description=__doc__.split("\n\n")[0])
    p.add_argument("--face", type=Path, required=True, help="a photo of the person (any size; the face is found)")
    p.add_argument("--prompt", required=True, help="what the portrait should show")
    p.add_argument("--out", type=Path, default=Path("portrait.png"), help="where to write the PNG")
    p.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    p.add_argument("--seed", type=int, default=453563, help="sampling seed (default: the official demo's)")
    p.add_argument("--comfyui", type=Path, help="ComfyUI folder (default: COMFYUI_PATH, or the ComfyUI this "
                                                "pack sits in under custom_nodes/)")
    p.add_argument("--server", help="URL of a running ComfyUI with this pack installed, instead of starting one")
    p.add_argument("--extra-model-paths-config", type=Path, action="append", default=[],
                   help="extra_model_paths.yaml files to search besides ComfyUI's own")
    return p.parse_args(argv)


def locate_comfyui(explicit: Path | None) -> Path | None:
    candidates = [explicit] if explicit else []
    if not explicit and os.environ.get("COMFYUI_PATH"):
        candidates.append(Path(os.environ["COMFYUI_PATH"]))
    if not explicit and PACK_DIR.parent.name == "custom_nodes":
        candidates.append(PACK_DIR.parent.parent)
    return next((c.resolve() for c in candidates if (c / "main.py").is_file()), None)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = parse_args(argv)
    if not args.face.is_file():
        log.error("The face photo %s does not exist.", args.face)
        return EXIT_BAD_ARGS
    if args.out.exists() and not args.force:
        log.error("%s already exists; choose another --out or pass --force to overwrite it.", args.out)
        return EXIT_BAD_ARGS

    if args.server is None:
        comfyui = locate_comfyui(args.comfyui)
        if comfyui is None:
            log.error("No ComfyUI found. Pass --comfyui /path/to/ComfyUI, set COMFYUI_PATH, install this pack "
                      "under ComfyUI/custom_nodes/, or pass --server URL of a running ComfyUI.")
            return EXIT_BAD_ARGS
        missing = find_missing(comfyui, args.extra_model_paths_config)
        if missing:
            log.error(describe_missing(missing))
            return EXIT_MODELS_MISSING

    if not BASIC_WORKFLOW.is_file():
        log.error("Every model is in place, but this version of the pack cannot make the portrait yet: the "
                  "FaceCLIP nodes and the basic workflow (%s) arrive in a later release.", BASIC_WORKFLOW)
        return EXIT_NOT_AVAILABLE
    log.error("workflows/basic.json exists but the headless runner for it is not implemented in this version.")
    return EXIT_NOT_AVAILABLE


if __name__ == "__main__":
    sys.exit(main())
