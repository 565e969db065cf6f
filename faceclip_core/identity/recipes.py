"""Training recipes: how many samples of what size a run trains on, per method.

``quick`` fits an artist's GPU: about 2 minutes per identity on a 4090-class card and under 12 GB at 1024 px
(bench/regime.py estimates both; the Train node's help page lists them per card). ``paper`` is the method's own
recipe (ID-EA's reference code trains batch 8 at a learning rate scaled for it), about 8x the compute for ID-EA.
"""
from __future__ import annotations

from dataclasses import dataclass

from .errors import IdentityError


@dataclass(frozen=True)
class Recipe:
    batch_size: int
    lr: float


RECIPES: dict[str, dict[str, Recipe]] = {
    # choice: one sample per step for both methods; ID-EA's per-step learning rate is SeFi-IDE's (Adam's steps
    # are about lr long whatever the batch, so the tokens travel as far in the same 320 steps)
    "quick": {"SeFi-IDE": Recipe(batch_size=1, lr=0.005), "ID-EA": Recipe(batch_size=1, lr=0.005)},
    # ID-EA: the reference code's 0.0015 x batch 8; SeFi-IDE's is unpublished (choice, as quick)
    "paper": {"SeFi-IDE": Recipe(batch_size=1, lr=0.005), "ID-EA": Recipe(batch_size=8, lr=0.012)},
}
RECIPE_NAMES: tuple[str, ...] = tuple(RECIPES)
DEFAULT_RECIPE = "quick"
DEFAULT_RESOLUTION = 1024
DEFAULT_STEPS = 320
DEFAULT_CHECKPOINTING = True  # as ComfyUI's own trainer: a 1024 px step fits 12 GB only with it


def recipe(name: str, method: str) -> Recipe:
    if name not in RECIPES:
        raise IdentityError(f"recipe must be one of {', '.join(RECIPE_NAMES)}, got {name!r}")
    return RECIPES[name][method]
