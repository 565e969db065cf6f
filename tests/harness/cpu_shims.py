"""Make the PyPI torchvision/torchaudio wheels importable on a CPU-only torch, without editing them.

The wheels on PyPI are CUDA builds: their compiled extensions link libc10_cuda.so, which a CPU torch lacks.
ComfyUI imports both at start-up; provision.sh installs these shims into the test venv (a module and a .pth line)
so that every program run with its Python gets them. No installed package is edited.

- torchvision: `_meta_registrations` registers fake kernels for `torchvision::nms`/`qnms`, which fails when the
  extension did not define the ops. Defining the two schemas up front lets it import; pure-Python torchvision
  (transforms) then works, while its compiled ops (nms, roi_align, ...) still report that they are unavailable.
- torchaudio: `_extension._load_lib` lets the loader's OSError escape. Wrapping it so that a library that cannot
  load counts as "not built" makes torchaudio fall back to its pure-Python paths.
"""
from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import logging
import sys
from types import ModuleType

logger = logging.getLogger(__name__)


def _torchvision_extension_loads() -> bool:
    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations:
        return True  # not installed: nothing to shim
    import glob
    import os

    import torch

    for path in glob.glob(os.path.join(list(spec.submodule_search_locations)[0], "_C*.so")):
        try:
            torch.ops.load_library(path)
            return True
        except OSError:
            return False
    return False


_LIBRARIES: list = []  # torch.library.Library objects must stay alive for their definitions to persist


def _define_torchvision_schemas() -> None:
    if _torchvision_extension_loads():
        return
    import torch

    lib = torch.library.Library("torchvision", "DEF")
    lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    lib.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    _LIBRARIES.append(lib)
    logger.info("cpu_shims: torchvision extension unavailable; defined the nms/qnms schemas only")


class _ImportShims(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Acts at import time only, so torch is not imported before ComfyUI's main.py has set things up.

    - before `torchvision` is first imported: define its op schemas when its extension cannot load;
    - after `torchaudio._extension.utils` has run: make its _load_lib report an unloadable library as absent.
    """

    _AUDIO_UTILS = "torchaudio._extension.utils"

    def __init__(self) -> None:
        self._torchvision_done = False
        self._inner: importlib.abc.Loader | None = None

    def find_spec(self, fullname, path, target=None):
        if fullname == "torchvision" and not self._torchvision_done:
            self._torchvision_done = True
            _define_torchvision_schemas()
            return None  # the normal finders import torchvision itself
        if fullname != self._AUDIO_UTILS:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is not None:
            self._inner = spec.loader
            spec.loader = self
        return spec

    def create_module(self, spec):
        return self._inner.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self._inner.exec_module(module)
        original = module._load_lib

        def load_lib_or_report_missing(lib: str) -> bool:
            try:
                return original(lib)
            except OSError as exc:
                logger.info("cpu_shims: torchaudio library %s not loadable (%s); using pure-Python torchaudio",
                            lib, exc)
                return False

        module._load_lib = load_lib_or_report_missing


def install() -> None:
    """Idempotent; call before anything imports torchvision or torchaudio."""
    # by name: a second copy of this module (imported from the repository besides the venv's) must not add another
    if not any(type(f).__name__ == _ImportShims.__name__ for f in sys.meta_path):
        sys.meta_path.insert(0, _ImportShims())
