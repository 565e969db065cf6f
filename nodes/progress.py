"""Progress bars and interrupt checks for the core's long loops."""
from __future__ import annotations

import logging
import time
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


# A text the node keeps after its run (web/faceclip_notices.js): the newest frontend (1.58) clears progress texts
# when a run ends, which would take a notice away the moment it could be read.
NOTICE_EVENT = "faceclip.node_notice"


def _server():
    try:
        from server import PromptServer
    except ImportError:  # pragma: no cover - always there inside ComfyUI
        return None
    return PromptServer.instance


def show_on_node(text: str, node_id: str | None, keep: bool = False) -> None:
    """``text`` on the node itself (ComfyUI's progress text), for what the user must see without reading the
    server log. ``keep``: a notice that stays on the node after the run ends, until the next run (progress texts
    such as "step 3/320" may go with the run)."""
    server = _server()
    if node_id is None or server is None:
        return
    server.send_progress_text(text, node_id)
    if keep:
        server.send_sync(NOTICE_EVENT, {"node": str(node_id), "text": text})


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes}:{secs:02d}" if minutes < 60 else f"{minutes // 60}:{minutes % 60:02d}:{secs:02d}"


class TrainingProgress:
    """Progress bar + interrupt check, and on the node and in the log: the run's estimate before the first step,
    then each step's loss terms with the time left (from the steps measured so far; the first step, which
    carries the warm-up, is left out once there are others)."""

    def __init__(self, total: int, node_id: str | None) -> None:
        self.total, self.node_id = total, node_id
        self._bar = progress_callback(total)
        self._started = time.monotonic()
        # (steps done, time) after the first two steps and after the latest: the rate is measured from the
        # second step on once there is a third (the first carries the warm-up)
        self._first: list[tuple[int, float]] = []
        self._last: tuple[int, float] | None = None

    def _show(self, text: str) -> None:
        show_on_node(text, self.node_id)

    def stopped(self, step: int) -> None:
        """Said on the node when the run stops early (Cancel, or an error) after its steps up to ``step`` were
        saved; it stays on the node after the run."""
        show_on_node(f"saved at step {step} of {self.total} \u2014 turn on resume to continue", self.node_id,
                     keep=True)

    def announce(self, estimate: str) -> None:
        """What the run will take, said before its first step."""
        logger.info("ID embedding training: %s", estimate)
        self._show(estimate)

    def seconds_left(self) -> float | None:
        if self._last is None or self._last == self._first[0]:
            return None
        (d0, t0), (d1, t1) = self._first[1 if self._last != self._first[-1] else 0], self._last
        return (t1 - t0) / max(d1 - d0, 1) * (self.total - d1)

    def elapsed_text(self) -> str:
        return f"trained in {_clock(time.monotonic() - self._started)}"

    def __call__(self, done: int, of: int, stats: StepStats) -> None:
        self._last = (done, time.monotonic())
        if len(self._first) < 2:
            self._first.append(self._last)
        left = self.seconds_left()
        eta = "" if left is None else f"  {_clock(left)} left"
        self._show(f"step {done}/{of}{eta}  {stats.text()}")
        if done == of or done % 10 == 0 or done == 1:
            logger.info("ID embedding step %d/%d%s  %s", done, of, eta, stats.text())
        self._bar(done, of)


def training_progress(total: int, node_id: str | None) -> TrainingProgress:
    return TrainingProgress(total, node_id)
