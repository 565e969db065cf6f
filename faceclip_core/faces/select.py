"""Choosing one face when a photo shows several.

Peer packs disagree (IPAdapter takes the detector's first face, InstantID the largest,
ReActor lets users pick an order and an index), and users of group photos ask for
control, so the policy is explicit: an ordering plus an index into it.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from .detect import DetectedFace

SelectionPolicy = Literal["largest", "most_confident", "left_to_right", "right_to_left",
                          "top_to_bottom", "bottom_to_top", "index"]
SELECTION_POLICIES: tuple[str, ...] = ("largest", "most_confident", "left_to_right",
                                       "right_to_left", "top_to_bottom", "bottom_to_top",
                                       "index")


@dataclass(frozen=True)
class FaceSelection:
    """Which face to take from each image.

    policy: the ordering; ``index`` picks the ``index``-th face in it (0 = first,
        negative counts from the end):
        largest (box area, default) | most_confident (score) | left_to_right |
        right_to_left | top_to_bottom | bottom_to_top (box centres) | index (the
        detector's own order, i.e. the numbers drawn on the annotated preview).
    """

    policy: SelectionPolicy = "largest"
    index: int = 0

    def __post_init__(self) -> None:
        if self.policy not in SELECTION_POLICIES:
            raise ValueError(f"unknown face selection policy {self.policy!r}; choose one of "
                             f"{', '.join(SELECTION_POLICIES)}")
        if not isinstance(self.index, int):
            raise ValueError(f"face index must be an int, got {self.index!r}")


def order_faces(faces: Sequence[DetectedFace], policy: SelectionPolicy) -> list[int]:
    """Indices into ``faces`` in the order ``policy`` defines (ties keep detector order)."""
    idx = list(range(len(faces)))
    keys = {
        "largest": lambda i: -faces[i].area,
        "most_confident": lambda i: -faces[i].score,
        "left_to_right": lambda i: faces[i].center[0],
        "right_to_left": lambda i: -faces[i].center[0],
        "top_to_bottom": lambda i: faces[i].center[1],
        "bottom_to_top": lambda i: -faces[i].center[1],
        "index": lambda i: i,
    }
    return sorted(idx, key=keys[policy])  # sorted() is stable


def select_face(faces: Sequence[DetectedFace], selection: FaceSelection | None = None
                ) -> int | None:
    """Index into ``faces`` of the chosen face, or None when there is no such face
    (no faces at all, or ``selection.index`` beyond the number found)."""
    selection = selection or FaceSelection()
    order = order_faces(faces, selection.policy)
    k = selection.index
    if not -len(order) <= k < len(order):
        return None
    return order[k]


def describe_selection(selection: FaceSelection) -> str:
    """Human wording for messages, e.g. 'the 2nd face from the left'."""
    k = selection.index
    nth = "last" if k == -1 else _ordinal(k + 1) if k >= 0 else f"{_ordinal(-k)} from last"
    what = {
        "largest": "largest face", "most_confident": "most confident face",
        "left_to_right": "face from the left", "right_to_left": "face from the right",
        "top_to_bottom": "face from the top", "bottom_to_top": "face from the bottom",
        "index": "face in detector order",
    }[selection.policy]
    if selection.policy in ("largest", "most_confident") and k == 0:
        return f"the {what}"
    return f"the {nth} {what}"


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"
