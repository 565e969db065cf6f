"""The shipped workflows in the real frontend: each opens with no error, no overlapping nodes and readable text;
the one-photo portrait runs from the UI."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from faceclip_headless.shipped_workflows import BY_KEY
from tests.e2e.browser.conftest import APP, PICKER_PHOTO, WORKFLOWS, load_workflow
from tests.harness.browser import MISSING_NODES_PROBE

SHIPPED = sorted(WORKFLOWS.glob("*.json"))

# A one-node workflow whose node type no pack provides: what a missing node looks like to the checks below.
UNKNOWN_NODE_WORKFLOW = {
    "last_node_id": 1, "last_link_id": 0, "links": [], "groups": [], "config": {}, "extra": {}, "version": 0.4,
    "nodes": [{"id": 1, "type": "FaceCLIPNoSuchNode", "pos": [200, 200], "size": [300, 80], "flags": {},
               "order": 0, "mode": 0, "inputs": [], "outputs": [], "properties": {}, "widgets_values": []}],
}

EMPTY_WORKFLOW = {"last_node_id": 0, "last_link_id": 0, "nodes": [], "links": [], "groups": [], "config": {},
                  "extra": {}, "version": 0.4}

# Fast settings for the tiny random models: 2 steps at 64x64 (the shipped values are the official 50 at 864x1152),
# and a photo with marker faces, which the stand-in detector finds (it finds none in the shipped example photo).
SHRINK = """(photo) => {
  const changed = [];
  for (const node of %(app)s.rootGraph.nodes) {
    for (const w of node.widgets ?? []) {
      const value = w.name === "steps" ? 2 : /^Empty.*Latent/.test(node.type) && /^(width|height)$/.test(w.name)
        ? 64 : node.type === "LoadImage" && w.name === "image" ? photo : undefined;
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


# Every node's box on the screen after a workflow opened: the DOM element with Nodes 2.0, else the canvas node
# (title bar included, and at least the size its widgets need, which is what the canvas draws). Plus whether text is
# drawn: the classic canvas draws none below its low-quality zoom (blank boxes); with Nodes 2.0, each node's title
# element on the screen and its height in screen pixels.
LAYOUT = """async () => {
  const app = %(app)s;
  await new Promise((resolve) => setTimeout(resolve, 1500)); // photos load, Vue nodes settle
  const canvas = app.canvas;
  canvas.draw(true, true); // low_quality is decided as a frame is drawn
  const nodes2 = app.extensionManager.setting.get("Comfy.VueNodes.Enabled");
  const title = window.LiteGraph.NODE_TITLE_HEIGHT;
  const titleOnScreen = (element, text) => {
    const found = [...element.querySelectorAll("*")]
      .find((e) => e.children.length === 0 && e.textContent.trim() === text);
    if (!found) return null;
    const r = found.getBoundingClientRect();
    const visible = r.bottom > 0 && r.right > 0 && r.top < innerHeight && r.left < innerWidth;
    return visible ? Math.round(r.height * 10) / 10 : 0;
  };
  const boxes = app.rootGraph.nodes.map((n) => {
    if (nodes2) {
      const element = document.querySelector(`[data-node-id="${n.id}"]`);
      const r = element?.getBoundingClientRect();
      return { id: n.id, type: n.type, box: r ? [r.left, r.top, r.width, r.height] : null,
               titleHeight: element && n.type !== "MarkdownNote" ? titleOnScreen(element, n.title) : null };
    }
    const [w, h] = n.computeSize();
    const [x, y] = n.pos;
    const scale = canvas.ds.scale;
    const [sx, sy] = [(x + canvas.ds.offset[0]) * scale, (y - title + canvas.ds.offset[1]) * scale];
    return { id: n.id, type: n.type,
             box: [sx, sy, Math.max(n.size[0], w) * scale, (Math.max(n.size[1], h) + title) * scale] };
  });
  return { boxes, scale: canvas.ds.scale, lowQuality: !!canvas.low_quality, nodes2,
           window: [innerWidth, innerHeight] };
}""" % {"app": APP}

# The templates browser, as a user opens a template with it (1.47.12 and 1.58.1 alike): the Templates dialog
# (command Comfy.BrowseTemplates), this pack's entry under Extensions, then the workflow's card. The card calls
# useTemplateWorkflows().loadWorkflowTemplate(name, module): fetch /api/workflow_templates/<module>/<name>.json (1.58.1
# also validates it against its workflow schema) and app.loadGraphData(json, true, true, name, {openSource:
# "template"}), which fits the graph to the window (fitView) whatever zoom the file was saved with.
OPEN_TEMPLATES = """async () => {
  const app = %(app)s;
%(probe)s  const listing = await (await fetch("/api/workflow_templates")).json();
  await app.extensionManager.command.execute("Comfy.BrowseTemplates");
  return Object.keys(listing).find((module) => listing[module].some((n) => /^1 - /.test(n)));
}""" % {"app": APP, "probe": MISSING_NODES_PROBE}

TEMPLATE_OPENED = """(name) => {
  const app = %(app)s;
  const dialogOpen = !!document.querySelector('[data-testid="template-workflows-content"]');
  const active = app.extensionManager.workflow.activeWorkflow;
  if (dialogOpen || window.__faceclipMissing === null || !active?.filename?.startsWith(name)) return null;
  const overlay = document.querySelector('[data-testid="error-overlay"]');
  return { missing: window.__faceclipMissing, overlay: overlay ? overlay.innerText : null,
           loaded: app.rootGraph.nodes.map((n) => n.type), workflow: active.filename };
}""" % {"app": APP}

# The window the layouts are made for (tools/build_workflows.py FIT_WINDOW) and the zoom text needs.
TEMPLATE_WINDOW = (1600, 1000)
READABLE_ZOOM = 0.6
DEFAULT_WINDOW = (1400, 900)  # bridge.cjs's


def open_from_template_browser(browser, name: str) -> dict:
    """Open the shipped workflow ``name`` the way the templates browser does, by clicking through it."""
    module = browser.eval(OPEN_TEMPLATES)
    assert module, "the server lists no templates of this pack"
    browser.click(f'[role="button"]:has-text("{module}")')
    browser.click(f'[data-testid="template-workflow-{name}"]')
    return browser.wait_for(TEMPLATE_OPENED, name, timeout=60, what=f"template {name} to open")


def console_problems(events: list[dict]) -> list[dict]:
    return [e for e in events if e["kind"] in ("console", "warning", "pageerror")]


def overlaps(boxes: list[dict]) -> list[str]:
    found = []
    for i, a in enumerate(boxes):
        for b in boxes[i + 1:]:
            (ax, ay, aw, ah), (bx, by, bw, bh) = a["box"], b["box"]
            dx, dy = min(ax + aw, bx + bw) - max(ax, bx), min(ay + ah, by + bh) - max(ay, by)
            if dx > 0.5 and dy > 0.5:
                found.append(f"{a['type']} #{a['id']} and {b['type']} #{b['id']} overlap by {dx:.0f}x{dy:.0f} px")
    return found


@pytest.mark.parametrize("path", SHIPPED or [WORKFLOWS / "<none>.json"], ids=_workflow_id)
def test_template_opens_from_the_templates_browser_readable_with_no_error(browser, path):
    """What a new user sees on opening a template from the templates browser in a 1600x1000 window: no missing node,
    model or photo, no console error or warning (1.58.1 validates the file against its schema), nodes side by side
    rather than on top of each other, and text drawn at the zoom the browser fits the graph to."""
    assert path.is_file(), f"no workflows/*.json in {WORKFLOWS}"
    workflow = json.loads(path.read_text())
    browser.call("viewport", width=TEMPLATE_WINDOW[0], height=TEMPLATE_WINDOW[1])
    try:
        load_workflow(browser, EMPTY_WORKFLOW)  # no notice left over from the workflow open before
        browser.events()  # only what opening the template logs
        report = open_from_template_browser(browser, path.stem)
        layout = browser.eval(LAYOUT)
        browser.screenshot(f"template-{path.stem}")
        events = browser.events()
    finally:
        browser.call("viewport", width=DEFAULT_WINDOW[0], height=DEFAULT_WINDOW[1])
    assert report["missing"] == [], report
    assert report["overlay"] is None, report  # neither "missing node" nor "media input missing" nor any other
    assert len(report["loaded"]) == len(workflow["nodes"]), report
    assert console_problems(events) == [], events
    assert layout["window"] == list(TEMPLATE_WINDOW), layout
    assert all(b["box"] for b in layout["boxes"]), layout  # every node is drawn
    assert overlaps(layout["boxes"]) == []
    assert layout["scale"] >= READABLE_ZOOM, f"opens at {layout['scale']:.0%} zoom"
    if layout["nodes2"]:  # every node's title on the screen, at least 9 px tall
        small = {b["type"]: b["titleHeight"] for b in layout["boxes"]
                 if b["titleHeight"] is not None and b["titleHeight"] < 9}
        assert small == {}, small
    else:
        assert not layout["lowQuality"], layout  # the canvas draws text, not grey boxes


def test_a_workflow_dragged_in_opens_at_its_saved_readable_zoom(browser):
    """Dropped onto the canvas (app.loadGraphData without the template flag), a workflow opens at the view it was
    saved with: the same fitted, readable zoom."""
    workflow = json.loads(BY_KEY["basic"].path.read_text())
    report = load_workflow(browser, workflow)
    layout = browser.eval(LAYOUT)
    assert report["missing"] == [] and report["overlay"] is None, report
    assert layout["scale"] == pytest.approx(workflow["extra"]["ds"]["scale"]) and layout["scale"] >= READABLE_ZOOM
    assert not layout["lowQuality"], layout


def test_the_overlap_check_sees_overlapping_nodes(browser):
    """The layout check above can fail: the one-photo workflow with its sampler moved onto its photo trips it."""
    workflow = json.loads(BY_KEY["basic"].path.read_text())
    photo = next(n for n in workflow["nodes"] if n["type"] == "LoadImage")
    sampler = next(n for n in workflow["nodes"] if n["type"] == "KSampler")
    sampler["pos"] = [photo["pos"][0] + 40, photo["pos"][1] + 40]
    load_workflow(browser, workflow)
    found = overlaps(browser.eval(LAYOUT)["boxes"])
    assert any("KSampler" in f and "LoadImage" in f for f in found), found


def test_the_missing_node_check_sees_an_unknown_node(browser):
    """The check above can fail: a workflow naming an unknown node type trips every part of it."""
    report = load_workflow(browser, UNKNOWN_NODE_WORKFLOW)
    browser.screenshot("workflow-unknown-node")
    assert report["missing"] == ["FaceCLIPNoSuchNode"], report
    assert report["unregistered"] == ["FaceCLIPNoSuchNode"], report
    assert "missing node" in (report["overlay"] or "").lower() and "FaceCLIPNoSuchNode" in report["overlay"], report


def test_basic_workflow_queues_from_the_ui_and_shows_the_output_image(browser, ui_server, input_photos):
    path = BY_KEY["basic"].path
    assert path.is_file(), f"{path} is missing"
    report = load_workflow(browser, json.loads(path.read_text()))
    assert report["missing"] == [] and report["overlay"] is None, report  # no missing node, model or photo
    assert "SaveImage" in report["loaded"], report
    assert browser.eval(SHRINK, input_photos[PICKER_PHOTO]), "no steps widget found in the basic workflow"
    browser.click('[data-testid="queue-button"]')
    # The result is looked at where it is: the canvas draws (and loads) a node's images only when it is in view.
    browser.eval("""() => { const app = %(app)s;
      app.canvas.centerOnNode(app.rootGraph.nodes.find((n) => n.type === "SaveImage")); }""" % {"app": APP})
    shown = browser.wait_for(OUTPUT_SHOWN, timeout=240, what="the SaveImage output")
    browser.screenshot("basic-output")
    assert "error" not in shown, f"{shown['error']}\n{ui_server.log_tail()}"
    for image in shown["images"]:
        assert "type=output" in image["src"] and (image["width"], image["height"]) == (64, 64), shown


MISSING_MODELS_PANEL = """(name) => {
  const overlay = document.querySelector('[data-testid="error-overlay"]');
  const details = [...(overlay?.querySelectorAll("button, a") ?? [])].find((e) => /details/i.test(e.innerText));
  details?.click();
  const panel = [...document.querySelectorAll('[role="dialog"], .p-dialog, aside, [data-testid*="panel"]')]
    .map((e) => e.innerText)
    .find((text) => text.includes("Missing Models") && text.includes(name));
  return panel ?? null;
}"""


def test_a_missing_model_is_named_with_its_folder_and_download_address(browser):
    """Loader nodes carry their model's name, folder and (where one is published) download URL, which the
    frontend's missing-models notice uses; here the VAE is renamed to one the server does not have."""
    workflow = json.loads(BY_KEY["basic"].path.read_text())
    vae = next(n for n in workflow["nodes"] if n["type"] == "VAELoader")
    (entry,) = vae["properties"]["models"]
    assert entry["directory"] == "vae" and entry["url"].startswith("https://huggingface.co/"), entry
    missing = "faceclip_test_missing_vae.safetensors"
    vae["widgets_values"][0] = entry["name"] = missing
    entry["url"] = entry["url"].rsplit("/", 1)[0] + "/" + missing
    report = load_workflow(browser, workflow)
    assert missing in (report["overlay"] or ""), report
    # "View details": the frontend's panel lists the file with its folder and a download button
    panel = browser.wait_for(MISSING_MODELS_PANEL, missing, timeout=20, what="the missing-models panel")
    browser.screenshot("workflow-missing-model")
    after = panel.split(missing, 1)[1].split("\n")
    assert [line for line in after if line.strip()][:2] == ["vae", "Download"], panel
    browser.press("Escape")  # close the panel for the tests that follow
    loaders = [n for n in workflow["nodes"] if n["type"] in ("FaceCLIPLoader", "UNETLoader", "VAELoader",
                                                             "CheckpointLoaderSimple")]
    assert all(n["properties"]["models"][0]["directory"] for n in loaders)
