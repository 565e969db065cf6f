"""The onnxruntime install trap: the CPU and GPU builds installed side by side (both provide the module
``onnxruntime``; whichever was installed last wins, often leaving only CPUExecutionProvider)."""
from __future__ import annotations

import importlib.metadata

ONNXRUNTIME_BUILDS = ("onnxruntime", "onnxruntime-gpu", "onnxruntime-directml", "onnxruntime-openvino")


def installed_onnxruntime_builds() -> list[str]:
    """The onnxruntime distributions installed in this Python (metadata only: nothing is imported)."""
    found = []
    for name in ONNXRUNTIME_BUILDS:
        try:
            importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            continue
        found.append(name)
    return found


def onnxruntime_conflict() -> str | None:
    """A message saying exactly what to run when more than one onnxruntime build is installed, else None."""
    builds = installed_onnxruntime_builds()
    if len(builds) < 2:
        return None
    keep = next((b for b in builds if b != "onnxruntime"), builds[0])
    return (f"several onnxruntime builds are installed side by side ({', '.join(builds)}); they overwrite each "
            "other's files and face detection may fall back to the CPU or fail. Keep one: run "
            f"`python -m pip uninstall -y {' '.join(builds)}` and then `python -m pip install {keep}` with the "
            "Python that runs ComfyUI, and restart it.")
