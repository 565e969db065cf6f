"""The shipped workflows' layout (tools/build_workflows.py layout_rows) for any node sizes: no two nodes overlap, and
the graph fits the templates browser's window at a readable zoom, also when a node grows or shrinks (a node whose
widget list changes, such as Train ID Embedding's)."""
from __future__ import annotations

import importlib.util
import random
import sys

import pytest

from tests.conftest import REPO

spec = importlib.util.spec_from_file_location("build_workflows", REPO / "tools" / "build_workflows.py")
build = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = build  # dataclasses look their module up while the module runs
spec.loader.exec_module(build)

TITLE = 30  # LiteGraph.NODE_TITLE_HEIGHT in 1.47 and 1.58


def boxes(placed, sizes) -> dict[str, tuple[int, int, int, int]]:
    return {k: (x, y - TITLE, sizes[k][0], sizes[k][1] + TITLE) for k, (x, y) in placed.pos.items()}


def overlapping(found: dict[str, tuple[int, int, int, int]]) -> list[tuple[str, str]]:
    items = list(found.items())
    return [(a, b) for i, (a, (ax, ay, aw, ah)) in enumerate(items) for b, (bx, by, bw, bh) in items[i + 1:]
            if min(ax + aw, bx + bw) > max(ax, bx) and min(ay + ah, by + bh) > max(ay, by)]


def sizes_for(nodes, seed: int | None = None, grow: dict[str, int] | None = None) -> dict[str, tuple[int, int]]:
    rng = random.Random(seed)
    sizes = {}
    for n in nodes:
        w, h = max(n.min_size[0], 220), max(n.min_size[1], 60)
        if seed is not None:
            w, h = int(w * rng.uniform(0.8, 1.3)), int(h * rng.uniform(0.7, 1.6))
        sizes[n.key] = (w, (grow or {}).get(n.type, h))
    return sizes


@pytest.mark.parametrize("key", list(build.BUILDERS))
@pytest.mark.parametrize("seed", [None, 1, 2, 3])
def test_no_two_nodes_overlap_and_the_extent_is_what_fitview_gets(key, seed):
    nodes = build.BUILDERS[key]()
    sizes = sizes_for(nodes, seed)
    placed = build.layout_rows(nodes, sizes, TITLE)
    found = boxes(placed, sizes)
    assert set(found) == {n.key for n in nodes}
    assert overlapping(found) == []
    assert max(x + w for x, _, w, _ in found.values()) == placed.width
    assert max(y + h for _, y, _, h in found.values()) == placed.height
    assert min(x for x, _, _, _ in found.values()) == 0 and min(y for _, y, _, _ in found.values()) == 0


@pytest.mark.parametrize("height", [200, 450, 724, 1000])
def test_a_training_node_of_any_height_still_lays_out(height):
    """Train ID Embedding is 724 px tall with every widget shown; showing only one method's settings shrinks it."""
    nodes = build.BUILDERS["id_ea"]()
    sizes = sizes_for(nodes, grow={"FaceCLIPTrainIDEmbedding": height})
    placed = build.layout_rows(nodes, sizes, TITLE)
    assert overlapping(boxes(placed, sizes)) == []
    if height <= 724:
        assert placed.fit_scale() >= 0.6, (placed.width, placed.height)
