"""The example workflows the pack ships in workflows/: their file names (which ComfyUI's templates browser shows
as titles, in this order when sorted by name) and what each one makes, in plain words."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

WORKFLOWS_DIR = Path(__file__).resolve().parents[1] / "workflows"


@dataclass(frozen=True)
class ShippedWorkflow:
    key: str  # short id used by the tools and tests
    number: int  # place in the templates browser (the file name starts with it)
    title: str
    model: str  # what it runs on
    summary: str  # what it makes, for the title card and the README
    colour: tuple[int, int, int]  # the title card's accent

    @property
    def file_stem(self) -> str:
        return f"{self.number} - {self.title}"

    @property
    def path(self) -> Path:
        return WORKFLOWS_DIR / f"{self.file_stem}.json"


SHIPPED: tuple[ShippedWorkflow, ...] = (
    ShippedWorkflow("basic", 1, "Portrait from one photo", "SDXL",
                    "One photo of a person and a prompt make a new portrait of them.", (231, 141, 38)),
    ShippedWorkflow("several_photos", 2, "Portrait from several photos", "SDXL",
                    "Two or more photos of one person are blended into one identity, then one portrait.",
                    (214, 104, 64)),
    ShippedWorkflow("two_people", 3, "Two people in one image", "SDXL",
                    "One photo of each of two people: one image with both, one on each half.", (94, 162, 222)),
    ShippedWorkflow("likeness_check", 4, "Portrait with a likeness score", "SDXL",
                    "The one-photo portrait, plus a score of how much it looks like the photo.", (96, 184, 120)),
    ShippedWorkflow("id_ea", 5, "Identity tokens for any SDXL model (ID-EA)", "any SDXL checkpoint",
                    "Trains a reusable embedding of the person from 1-5 photos, then makes a portrait with it.",
                    (168, 120, 220)),
    ShippedWorkflow("sefi_ide", 6, "Per-stage identity tokens for any SDXL model (SeFi-IDE)", "any SDXL checkpoint",
                    "Trains per-noise-stage identity tokens from 1-5 photos, then makes a portrait with them.",
                    (200, 96, 170)),
    ShippedWorkflow("flux_basic", 7, "FLUX portrait from one photo (FaceT5)", "FaceT5-FLUX",
                    "One photo of a person and a prompt make a FLUX portrait of them, with the official settings.",
                    (64, 196, 200)),
    ShippedWorkflow("flux_two_people", 8, "FLUX two people in one image (FaceT5)", "FaceT5-FLUX",
                    "One photo of each of two people: one FLUX image with both, one on each half.", (72, 140, 210)),
)

BY_KEY = {w.key: w for w in SHIPPED}
