"""Progress bars and interrupt checks for the core's long loops."""
from __future__ import annotations

import logging
from collections.abc import Callable

import comfy.model_management as mm
import comfy.utils

from ..faceclip_core.identity import StepStats

logger = logging.getLogger(__name__)


def progress_callback(total: int) -> Callable[[int, int], None]:
    """``(done, total)`` callback: moves the node's progress bar and raises when the user pressed Cancel."""
    bar = comfy.utils.ProgressBar(total)

    def step(done: int, of: int) -> None:
        mm.throw_exception_if_processing_interrupted()
        bar.update_absolute(done, of)

    return step


def training_progress(total: int, node_id: str | None) -> Callable[[int, int, StepStats], None]:
    """Progress bar + interrupt check, and the loss terms in the node's text and the log."""
    step = progress_callback(total)
    try:
        from server import PromptServer
    except ImportError:  # pragma: no cover - always there inside ComfyUI
        PromptServer = None

    def update(done: int, of: int, stats: StepStats) -> None:
        if PromptServer is not None and node_id is not None:
            PromptServer.instance.send_progress_text(f"step {done}/{of}  {stats.text()}", node_id)
        if done == of or done % 10 == 0 or done == 1:
            logger.info("ID embedding step %d/%d  %s", done, of, stats.text())
        step(done, of)

    return update
