"""The face picker (web/faceclip_picker.js) in the real frontend: thumbnails after Prepare Faces, click to pick."""
from __future__ import annotations

import time

from tests.e2e.browser.conftest import APP, NO_FACE_PHOTO, PICKER_PHOTO

# The frontend writes the open workflow's draft (what a reload restores) a moment after a change, not at once; a
# user does not reload within that moment either.
DRAFT_SAVE_DELAY = 2.0

BUILD_GRAPH = """async (image) => {
  const app = %(app)s;
  app.rootGraph.clear();
  const add = (type, pos) => {
    const node = window.LiteGraph.createNode(type);
    if (!node) throw new Error(`node type ${type} is not registered`);
    node.pos = pos;
    app.rootGraph.add(node);
    return node;
  };
  const load = add("LoadImage", [40, 80]);
  load.widgets.find((w) => w.name === "image").value = image;
  const detector = add("FaceCLIPFaceDetectorLoader", [40, 520]);
  const faces = add("FaceCLIPPrepareFaces", [420, 80]);
  // The frontend keeps widget values by node id across graph.clear(): start from the defaults explicitly.
  for (const [name, value] of [["selection", "largest"], ["index", 0], ["on_no_face", "raise"]]) {
    faces.widgets.find((w) => w.name === name).value = value;
  }
  const preview = add("PreviewImage", [820, 80]);
  load.connect(0, faces, faces.findInputSlot("images"));
  detector.connect(0, faces, faces.findInputSlot("face_models"));
  faces.connect(faces.findOutputSlot("preview"), preview, 0);
  app.canvas.setDirty(true, true);
  return faces.id;
}""" % {"app": APP}

# A node by its id in the root graph, or by its execution id "13:7" (node 7 inside subgraph node 13).
NODE = """(id) => {
  const parts = String(id).split(":");
  let graph = %(app)s.rootGraph;
  for (const host of parts.slice(0, -1)) graph = graph.getNodeById(host).subgraph;
  return graph.getNodeById(parts.at(-1));
}""" % {"app": APP}

PICKER_STATE = """(id) => {
  const node = (%(node)s)(id);
  const value = (name) => node.widgets.find((w) => w.name === name)?.value;
  const buttons = [...document.querySelectorAll(".faceclip-picker-face")];
  return {
    selection: value("selection"), index: value("index"),
    faces: buttons.map((b) => ({
      index: Number(b.dataset.index), used: b.classList.contains("faceclip-used"),
      picked: b.classList.contains("faceclip-picked"), number: b.querySelector(".faceclip-picker-num")?.textContent,
      loaded: !!b.querySelector("img") && b.querySelector("img").complete && b.querySelector("img").naturalWidth > 0,
      visible: b.getBoundingClientRect().width > 0,
    })),
    saved: node.serialize().widgets_values,
  };
}""" % {"node": NODE}

# Thumbnails shown and loaded, one face marked as used (the given one, unless null).
PICKER_READY = """([id, used]) => {
  const state = (%(state)s)(id);
  const usedFaces = state.faces.filter((f) => f.used).map((f) => f.index);
  return state.faces.length === 2 && state.faces.every((f) => f.loaded && f.visible) && usedFaces.length === 1
    && (used === null || usedFaces[0] === used) ? state : null;
}""" % {"state": PICKER_STATE}


def test_picker_shows_numbered_thumbnails_and_a_click_picks_the_face(browser, input_photos):
    node_id = browser.eval(BUILD_GRAPH, input_photos[PICKER_PHOTO])
    browser.click('[data-testid="queue-button"]')
    state = browser.wait_for(PICKER_READY, [node_id, None], timeout=60, what="face thumbnails")
    browser.screenshot("picker-after-run")
    assert sorted(f["number"] for f in state["faces"]) == ["#0", "#1"], state
    assert state["selection"] == "largest", state
    used = next(f["index"] for f in state["faces"] if f["used"])
    other = 1 - used

    browser.click(f'.faceclip-picker-face[data-index="{other}"]')  # a real mouse click on the thumbnail
    state = browser.eval(PICKER_STATE, node_id)
    assert (state["selection"], state["index"]) == ("index", other), state
    assert [f["picked"] for f in state["faces"]] == [f["index"] == other for f in state["faces"]], state
    # the picker is no saved widget: the positional widgets_values stay the node's own three
    assert state["saved"] == ["index", other, "raise"], state
    browser.screenshot("picker-after-click")

    browser.click('[data-testid="queue-button"]')  # re-queue from the UI: the clicked face is used now
    browser.wait_for(PICKER_READY, [node_id, other], timeout=60, what="the picked face to be used")
    browser.screenshot("picker-after-requeue")
    errors = [e for e in browser.events() if e["kind"] == "pageerror" or "faceclip_picker" in e["text"]]
    assert errors == [], errors


# The node's widget values as the workflow's change tracker last recorded them: what undo steps between, what the
# tab's "modified" dot and the saved / restored-after-reload workflow hold.
RECORDED = """(id) => {
  const tracker = %(app)s.extensionManager.workflow.activeWorkflow.changeTracker;
  return tracker.activeState.nodes.find((n) => String(n.id) === String(id))?.widgets_values ?? null;
}""" % {"app": APP}

RECORD_NOW = """() => %(app)s.extensionManager.workflow.activeWorkflow.changeTracker.captureCanvasState()""" % {
    "app": APP}

# Console warnings from now on, recorded in the page. The frontend warns about the deprecated checkState() once per
# page load: the flag that remembers it is reset, so a call made by the picker is seen whatever ran before.
WATCH_WARNINGS = """() => {
  const tracker = %(app)s.extensionManager.workflow.activeWorkflow.changeTracker;
  tracker.constructor._checkStateWarned = false;
  window.__faceclipWarnings = [];
  if (!window.__faceclipWarnHooked) {
    window.__faceclipWarnHooked = true;
    const warn = console.warn;
    console.warn = (...args) => {
      window.__faceclipWarnings?.push(args.map(String).join(" "));
      return warn.apply(console, args);
    };
  }
}""" % {"app": APP}
WARNINGS = "() => window.__faceclipWarnings"

CURRENT = """(id) => %(app)s.rootGraph.getNodeById(id)?.widgets.map((w) => w.value).slice(0, 3) ?? null""" % {
    "app": APP}

BECOMES = """([id, want]) => {
  const now = (%s)(id);
  return JSON.stringify(now) === JSON.stringify(want) ? now : null;
}""" % CURRENT


def test_a_click_is_recorded_in_the_workflow_undone_by_ctrl_z_and_kept_after_a_reload(browser, input_photos):
    node_id = browser.eval(BUILD_GRAPH, input_photos[PICKER_PHOTO])
    browser.eval(SET_WIDGET, ["FaceCLIPFaceDetectorLoader", "det_size", 544])  # not served from the cache
    browser.click('[data-testid="queue-button"]')
    state = browser.wait_for(PICKER_READY, [node_id, None], timeout=60, what="face thumbnails")
    browser.eval(RECORD_NOW)  # what the user built by hand would be recorded by now
    before = browser.eval(RECORDED, node_id)
    assert before[:2] == ["largest", 0], before
    other = next(f["index"] for f in state["faces"] if not f["used"])

    browser.eval(WATCH_WARNINGS)
    browser.click(f'.faceclip-picker-face[data-index="{other}"]')
    assert browser.eval(RECORDED, node_id) == ["index", other, "raise"]  # recorded by the click itself
    # recorded through the change tracker's current call, not the deprecated one that warns in the console
    assert [w for w in browser.eval(WARNINGS) if "deprecated" in w] == []

    browser.press("Control+z")  # undo reloads the recorded graph: asynchronous
    assert browser.wait_for(BECOMES, [node_id, before], timeout=15, what="Ctrl+Z to undo the pick")
    browser.press("Control+y")
    assert browser.wait_for(BECOMES, [node_id, ["index", other, "raise"]], timeout=15,
                            what="Ctrl+Y to redo the pick")

    time.sleep(DRAFT_SAVE_DELAY)
    browser.reload()
    assert browser.eval(CURRENT, node_id) == ["index", other, "raise"], "the pick was lost on reload"
    browser.screenshot("picker-after-reload")


SET_WIDGET = """([type, name, value]) => {
  const app = %(app)s;
  const node = app.rootGraph.nodes.find((n) => n.type === type);
  node.widgets.find((w) => w.name === name).value = value;
  app.canvas.setDirty(true, true);
}""" % {"app": APP}

# The annotated previews the node shows: the classic canvas draws node.imgs; Nodes 2.0 shows <img> elements in the
# node's own DOM element (those of the picker's thumbnails aside).
PREVIEWS = """(id) => {
  const node = (%(node)s)(id);
  const element = window.LiteGraph.vueNodesMode
    ? document.querySelector(`[data-node-id="${node.id}"]`) : null;
  const shown = element ? [...element.querySelectorAll("img")].filter((img) => !img.closest(".faceclip-picker")) : [];
  return {
    canvas: window.LiteGraph.vueNodesMode ? null : node.imgs?.length ?? 0,
    dom: window.LiteGraph.vueNodesMode ? shown.length : null,
  };
}""" % {"node": NODE}

PREVIEW_SHOWN = """(id) => {
  const previews = (%s)(id);
  return (previews.canvas ?? previews.dom) > 0 ? previews : null;
}""" % PREVIEWS

# Run the graph where it fails; once the server has reported the failure, the picker's state and the previews as
# the page shows them a second after both are gone (or after a few seconds at the latest): the page draws a moment
# after the event, and must not bring back a preview it drew from an earlier output.
RUN_TO_FAILURE = """async (id) => {
  const failed = new Promise((resolve) => {
    const listener = ({ detail }) => {
      window.comfyAPI.api.api.removeEventListener("execution_error", listener);
      resolve(detail);
    };
    window.comfyAPI.api.api.addEventListener("execution_error", listener);
  });
  document.querySelector('[data-testid="queue-button"]').click();
  const error = await failed;
  const look = () => ({
    ...(%(state)s)(id), previews: (%(previews)s)(id),
    hint: document.querySelector(".faceclip-picker-hint")?.textContent ?? "",
  });
  let state = look();
  for (let waited = 0; waited < 5000 && (state.faces.length || state.previews.canvas || state.previews.dom);
       waited += 100) {
    await new Promise((resolve) => setTimeout(resolve, 100));
    state = look();
  }
  await new Promise((resolve) => setTimeout(resolve, 1000));
  return { ...look(), error: String(error.node_id) };
}""" % {"state": PICKER_STATE, "previews": PREVIEWS}


def assert_nothing_left_of_the_previous_photo(state: dict) -> None:
    assert state["faces"] == [], state  # no thumbnail of the earlier photo is left to click
    assert state["previews"] in ({"canvas": 0, "dom": None}, {"canvas": None, "dom": 0}), state  # nor its preview
    assert state["hint"].startswith("The last run failed here"), state
    assert "no face found" in state["hint"], state


def test_a_failed_run_removes_the_faces_and_the_preview_of_the_previous_photo(browser, input_photos):
    node_id = browser.eval(BUILD_GRAPH, input_photos[PICKER_PHOTO])
    # another detector size than the other tests': this run is not served from ComfyUI's cache
    browser.eval(SET_WIDGET, ["FaceCLIPFaceDetectorLoader", "det_size", 608])
    browser.click('[data-testid="queue-button"]')
    browser.wait_for(PICKER_READY, [node_id, None], timeout=60, what="face thumbnails")
    browser.wait_for(PREVIEW_SHOWN, node_id, timeout=30, what="the annotated preview on the node")
    browser.eval(SET_WIDGET, ["LoadImage", "image", input_photos[NO_FACE_PHOTO]])  # a photo without a face
    state = browser.eval(RUN_TO_FAILURE, node_id, timeout=90)
    browser.screenshot("picker-after-failed-run")
    assert state["error"] == str(node_id), state
    assert_nothing_left_of_the_previous_photo(state)


CONVERT_TO_SUBGRAPH = """async (id) => {
  const app = %(app)s;
  app.canvas.selectNode(app.rootGraph.getNodeById(id));
  await app.extensionManager.command.execute("Comfy.Graph.ConvertToSubgraph");  // as its menu entry does
  const host = app.rootGraph.nodes.find((n) => n.isSubgraphNode?.());
  const inner = host.subgraph.nodes.find((n) => n.type === "FaceCLIPPrepareFaces");
  app.canvas.openSubgraph(host.subgraph, host);  // the user opens it to see the node inside
  return `${host.id}:${inner.id}`;
}""" % {"app": APP}

LEAVE_SUBGRAPH = """() => { const app = %(app)s; app.canvas.setGraph(app.rootGraph); }""" % {"app": APP}


def test_inside_a_subgraph_a_failed_run_removes_the_faces_and_the_preview_of_the_previous_photo(
        browser, input_photos):
    """The server names a node inside a subgraph by its execution id ("13:7"), not by the id it has in its graph."""
    node_id = browser.eval(BUILD_GRAPH, input_photos[PICKER_PHOTO])
    browser.eval(SET_WIDGET, ["FaceCLIPFaceDetectorLoader", "det_size", 512])  # not served from the cache
    execution_id = browser.eval(CONVERT_TO_SUBGRAPH, node_id)
    try:
        assert ":" in execution_id, execution_id
        browser.click('[data-testid="queue-button"]')
        browser.wait_for(PICKER_READY, [execution_id, None], timeout=60, what="face thumbnails in the subgraph")
        browser.wait_for(PREVIEW_SHOWN, execution_id, timeout=30, what="the annotated preview in the subgraph")
        browser.screenshot("picker-in-subgraph")
        browser.eval(SET_WIDGET, ["LoadImage", "image", input_photos[NO_FACE_PHOTO]])
        state = browser.eval(RUN_TO_FAILURE, execution_id, timeout=90)
        browser.screenshot("picker-in-subgraph-after-failed-run")
        assert state["error"] == execution_id, state
        assert_nothing_left_of_the_previous_photo(state)
    finally:
        browser.eval(LEAVE_SUBGRAPH)


def test_a_run_served_from_the_cache_still_shows_the_faces(browser, input_photos):
    for attempt in ("first run", "the same graph again (as after a page reload), served from ComfyUI's cache"):
        node_id = browser.eval(BUILD_GRAPH, input_photos[PICKER_PHOTO])  # new nodes: nothing shown on them yet
        browser.eval(SET_WIDGET, ["FaceCLIPFaceDetectorLoader", "det_size", 576])
        browser.click('[data-testid="queue-button"]')
        browser.wait_for(PICKER_READY, [node_id, None], timeout=60, what=f"face thumbnails after the {attempt}")


def test_picker_script_loaded_twice_registers_once(browser):
    """A second copy of the script (e.g. the pack installed under two folder names) must not break the UI."""
    result = browser.eval("""async () => {
      const app = %(app)s;
      await import("/extensions/comfyui-faceclip/faceclip_picker.js?copy=2");
      return app.extensions.filter((e) => e.name === "faceclip.FacePicker").length;
    }""" % {"app": APP})
    assert result == 1
