"""One progress-and-interrupt callback for the core's long loops."""
from __future__ import annotations

from collections.abc import Callable

import comfy.model_management as mm
import comfy.utils


def progress_callback(total: int) -> Callable[[int, int], None]:
    """``(done, total)`` callback: moves the node's progress bar and raises when the user pressed Cancel."""
    bar = comfy.utils.ProgressBar(total)

    def step(done: int, of: int) -> None:
        mm.throw_exception_if_processing_interrupted()
        bar.update_absolute(done, of)

    return step
