"""The shipped workflows in the real frontend: each loads with no missing node; the basic one runs from the UI."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.e2e.browser.conftest import APP, WORKFLOWS, load_workflow

SHIPPED = sorted(WORKFLOWS.glob("*.json"))

# A one-node workflow whose node type no pack provides: what a missing node looks like to the checks below.
UNKNOWN_NODE_WORKFLOW = {
    "last_node_id": 1, "last_link_id": 0, "links": [], "groups": [], "config": {}, "extra": {}, "version": 0.4,
    "nodes": [{"id": 1, "type": "FaceCLIPNoSuchNode", "pos": [200, 200], "size": [300, 80], "flags": {},
               "order": 0, "mode": 0, "inputs": [], "outputs": [], "properties": {}, "widgets_values": []}],
}

# Fast settings for the tiny random models: 2 steps at 64x64 (the shipped values are the official 50 at 864x1152).
SHRINK = """() => {
  const changed = [];
  for (const node of %(app)s.rootGraph.nodes) {
    for (const w of node.widgets ?? []) {
      const value = w.name === "steps" ? 2 : /^Empty.*Latent/.test(node.type) && /^(width|height)$/.test(w.name)
        ? 64 : undefined;
      if (value !== undefined) { w.value = value; changed.push(`${node.type}.${w.name}=${value}`); }
    }
  }
  return changed;
}""" % {"app": APP}

# Every SaveImage node shows its output: loaded <img> elements pointing at /view?...type=output. An error
# overlay (execution error) ends the wait early with its text.
OUTPUT_SHOWN = """() => {
  const overlay = document.querySelector('[data-testid="error-overlay"]');
  if (overlay) return { error: overlay.innerText };
  const saves = %(app)s.rootGraph.nodes.filter((n) => n.type === "SaveImage");
  const shown = saves.length > 0 && saves.every((n) => n.imgs?.length
    && n.imgs.every((img) => img instanceof HTMLImageElement && img.complete && img.naturalWidth > 0));
  return shown ? { images: saves.flatMap((n) => n.imgs.map((img) => ({ src: img.src, width: img.naturalWidth,
                                                                       height: img.naturalHeight }))) } : null;
}""" % {"app": APP}


def _workflow_id(path: Path) -> str:
    return path.stem


@pytest.mark.parametrize("path", SHIPPED or [WORKFLOWS / "<none>.json"], ids=_workflow_id)
def test_shipped_workflow_loads_with_no_missing_node(browser, path):
    assert path.is_file(), f"no workflows/*.json in {WORKFLOWS}"
    workflow = json.loads(path.read_text())
    report = load_workflow(browser, workflow)
    browser.screenshot(f"workflow-{path.stem}")
    assert report["missing"] == [], report
    assert report["unregistered"] == [], report
    assert "missing node" not in (report["overlay"] or "").lower(), report  # the frontend's missing-node notice
    assert len(report["loaded"]) == len(workflow["nodes"]), report


def test_the_missing_node_check_sees_an_unknown_node(browser):
    """The check above can fail: a workflow naming an unknown node type trips every part of it."""
    report = load_workflow(browser, UNKNOWN_NODE_WORKFLOW)
    browser.screenshot("workflow-unknown-node")
    assert report["missing"] == ["FaceCLIPNoSuchNode"], report
    assert report["unregistered"] == ["FaceCLIPNoSuchNode"], report
    assert "missing node" in (report["overlay"] or "").lower() and "FaceCLIPNoSuchNode" in report["overlay"], report


def test_basic_workflow_queues_from_the_ui_and_shows_the_output_image(browser, comfy_server):
    path = WORKFLOWS / "basic.json"
    assert path.is_file(), "workflows/basic.json is missing"
    report = load_workflow(browser, json.loads(path.read_text()))
    assert report["missing"] == [] and report["overlay"] is None, report  # no missing node, model or photo
    assert "SaveImage" in report["loaded"], report
    assert browser.eval(SHRINK), "no steps widget found in the basic workflow"
    browser.click('[data-testid="queue-button"]')
    shown = browser.wait_for(OUTPUT_SHOWN, timeout=240, what="the SaveImage output")
    browser.screenshot("basic-output")
    assert "error" not in shown, f"{shown['error']}\n{comfy_server.log_tail()}"
    for image in shown["images"]:
        assert "type=output" in image["src"] and (image["width"], image["height"]) == (64, 64), shown
