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

PICKER_STATE = """(id) => {
  const node = %(app)s.rootGraph.getNodeById(id);
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
}""" % {"app": APP}

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

RECORD_NOW = """() => %(app)s.extensionManager.workflow.activeWorkflow.changeTracker.checkState()""" % {"app": APP}

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

    browser.click(f'.faceclip-picker-face[data-index="{other}"]')
    assert browser.eval(RECORDED, node_id) == ["index", other, "raise"]  # recorded by the click itself

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

PICKER_FAILED = """(id) => {
  const state = (%(state)s)(id);
  const hint = document.querySelector(".faceclip-picker-hint")?.textContent ?? "";
  const previews = %(app)s.rootGraph.getNodeById(id).imgs?.length ?? 0;
  return hint.startsWith("The last run failed here") ? { ...state, hint, previews } : null;
}""" % {"state": PICKER_STATE, "app": APP}


def test_a_failed_run_removes_the_faces_of_the_previous_photo(browser, input_photos):
    node_id = browser.eval(BUILD_GRAPH, input_photos[PICKER_PHOTO])
    # another detector size than the other tests': this run is not served from ComfyUI's cache
    browser.eval(SET_WIDGET, ["FaceCLIPFaceDetectorLoader", "det_size", 608])
    browser.click('[data-testid="queue-button"]')
    browser.wait_for(PICKER_READY, [node_id, None], timeout=60, what="face thumbnails")
    browser.eval(SET_WIDGET, ["LoadImage", "image", input_photos[NO_FACE_PHOTO]])  # a photo without a face
    browser.click('[data-testid="queue-button"]')
    state = browser.wait_for(PICKER_FAILED, node_id, timeout=60, what="the picker to show the failure")
    browser.screenshot("picker-after-failed-run")
    assert state["faces"] == [], state  # no thumbnail of the earlier photo is left to click
    assert state["previews"] == 0, state  # nor its annotated preview on the node
    assert "no face found" in state["hint"], state


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
