"""Test launcher: install the CPU shims, then run ComfyUI's main.py in this process.

usage: python tests/harness/launch_comfyui.py COMFYUI_DIR [main.py arguments...]
"""
from __future__ import annotations

import os
import runpy
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cpu_shims  # noqa: E402  (must run before ComfyUI imports torchvision/torchaudio)


def main() -> None:
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    comfy_dir = os.path.abspath(sys.argv[1])
    cpu_shims.install()
    sys.path.insert(0, comfy_dir)
    sys.path.remove(os.path.dirname(os.path.abspath(__file__)))
    sys.argv = [os.path.join(comfy_dir, "main.py"), *sys.argv[2:]]
    runpy.run_path(sys.argv[0], run_name="__main__")


if __name__ == "__main__":
    main()
