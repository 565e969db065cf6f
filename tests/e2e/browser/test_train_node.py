"""Train ID Embedding in the real frontend: the picked method's settings only (V3 DynamicCombo), defaults shown as
values, no empty block under Nodes 2.0, workflows saved by release 0.1.0 loading with their values, and the node
saying where a cancelled run was saved (web/faceclip_training.js)."""
from __future__ import annotations

import json

import pytest

from tests.conftest import REPO
from tests.e2e.browser.conftest import APP, PICKER_PHOTO, load_workflow
from tests.harness.browser import NODE_TEXT

RELEASE = REPO / "tests" / "fixtures" / "release_0.1.0"
SEFI_ONLY = {"method.stages", "method.kv_split", "method.attention_weight", "method.attention_tokens",
             "method.attention_layers"}
IDEA_ONLY = {"method.anchor_names", "method.reg_weight", "method.adapter_scale"}

# What the user sees of a Train node: its widgets (name -> value) and, with Nodes 2.0, the labels its DOM element
# shows and the empty space under its last widget; on the classic canvas, its height against what it needs.
NODE_VIEW = """async (id) => {
  const app = %(app)s;
  await new Promise((resolve) => setTimeout(resolve, 800)); // Vue nodes re-render
  const node = app.rootGraph.getNodeById(id);
  const widgets = Object.fromEntries(node.widgets.filter((w) => !w.name.startsWith("$$"))
    .map((w) => [w.name, w.value]));
  const el = document.querySelector(`[data-node-id="${id}"]`);
  let dom = null;
  if (app.extensionManager.setting.get("Comfy.VueNodes.Enabled") && el) {
    // the largest stretch of the node's height that no visible element covers (the pack's badge sits at the
    // bottom, so an empty block shows as a gap above it)
    const box = el.getBoundingClientRect();
    const spans = [...el.querySelectorAll("*")].filter((e) => e.children.length === 0)
      .map((e) => e.getBoundingClientRect()).filter((r) => r.height > 0 && r.width > 0)
      .map((r) => [r.top, r.bottom]).sort((a, b) => a[0] - b[0]);
    let covered = box.top;
    let gap = 0;
    for (const [top, bottom] of spans) {
      gap = Math.max(gap, top - covered);
      covered = Math.max(covered, bottom);
    }
    gap = Math.max(gap, box.bottom - covered);
    dom = { text: el.innerText, height: box.height, emptyGap: gap / app.canvas.ds.scale };
  }
  return { widgets, inputs: node.inputs.map((i) => i.name), dom,
           height: node.size[1], needed: node.computeSize()[1] };
}""" % {"app": APP}

ADD_TRAIN_NODE = """() => {
  const app = %(app)s;
  app.rootGraph.clear();
  const node = window.LiteGraph.createNode("FaceCLIPTrainIDEmbedding");
  node.pos = [100, 100];
  app.rootGraph.add(node);
  app.canvas.ds.scale = 1; app.canvas.ds.offset = [0, 0];
  app.canvas.setDirty(true, true);
  return node.id;
}""" % {"app": APP}

PICK = """([id, method]) => {
  const node = %(app)s.rootGraph.getNodeById(id);
  const widget = node.widgets.find((w) => w.name === "method");
  widget.value = method; // what the combo's menu sets
  widget.callback?.(method);
  return true;
}""" % {"app": APP}


def assert_shows(view: dict, method: str, nodes2: bool) -> None:
    assert (view["dom"] is not None) == nodes2, view  # Nodes 2.0 is looked at in its DOM
    shown = set(view["widgets"])
    own, other = (SEFI_ONLY, IDEA_ONLY) if method == "SeFi-IDE" else (IDEA_ONLY, SEFI_ONLY)
    assert own <= shown and not other & shown, view["widgets"]
    assert not {n for n in shown if n.split(".")[-1] in ("recipe",) or n in ("stages", "anchor_names")}
    if view["dom"] is not None:  # Nodes 2.0: what the DOM shows
        labels = [name.split(".")[1] for name in own | other]
        for label in labels:
            assert (label in view["dom"]["text"]) == (f"method.{label}" in own), (label, view["dom"]["text"])
        assert view["dom"]["emptyGap"] < 40, view["dom"]  # no empty block between or under the widgets
    else:
        assert view["height"] <= view["needed"] + 10, view  # not taller than its widgets


def test_picking_a_method_shows_only_its_settings_with_defaults_as_values(browser, ui_variant):
    node_id = browser.eval(ADD_TRAIN_NODE)
    view = browser.eval(NODE_VIEW, node_id)
    assert view["widgets"]["method"] == "ID-EA", view
    assert_shows(view, "ID-EA", ui_variant.nodes2)
    w = view["widgets"]
    assert (w["learning_rate"], w["batch_size"], w["method.num_tokens"]) == (0.005, 1, 2), w
    for method in ("SeFi-IDE", "ID-EA", "SeFi-IDE"):
        browser.eval(PICK, [node_id, method])
        view = browser.eval(NODE_VIEW, node_id)
        browser.screenshot(f"train-node-{method}")
        assert view["widgets"]["method"] == method
        assert_shows(view, method, ui_variant.nodes2)
    w = view["widgets"]
    assert (w["method.num_tokens"], w["method.stages"], w["method.attention_weight"]) == (1, 5, 0.003), w
    # every shown setting has its input socket under the same name (links and API names follow it)
    assert {n for n in w if n.startswith("method.")} <= set(view["inputs"]), view


PROMPT_OF = """async (id) => {
  const { output } = await %(app)s.graphToPrompt();
  return output[String(id)]?.inputs ?? null;
}""" % {"app": APP}


@pytest.mark.parametrize("method", ["ID-EA", "SeFi-IDE"])
def test_a_workflow_saved_by_release_0_1_0_opens_with_its_values(browser, ui_variant, method):
    (path,) = RELEASE.glob(f"* ({method}).json")
    workflow = json.loads(path.read_text())
    (saved,) = [n for n in workflow["nodes"] if n["type"] == "FaceCLIPTrainIDEmbedding"]
    report = load_workflow(browser, workflow)
    assert report["missing"] == [] and report["unregistered"] == [], report
    view = browser.eval(NODE_VIEW, saved["id"])
    browser.screenshot(f"release-0.1.0-{method}")
    w = view["widgets"]
    assert w["method"] == method and w["name"] == saved["widgets_values"][1], w
    assert w["steps"] == saved["widgets_values"][2] and w["resolution"] == 1024, w
    # 0.1.0's zeros ("the recipe's", "the method's") as the values it trained with
    assert (w["learning_rate"], w["batch_size"]) == (0.005, 1), w
    assert w["method.num_tokens"] == (2 if method == "ID-EA" else 1), w
    assert (w["training_dtype"], w["framing"], w["class_word"], w["flip"], w["micro_batch"]) == (
        "auto", "head_and_shoulders", "person", True, 0), w
    if method == "SeFi-IDE":
        assert (w["method.stages"], w["method.kv_split"], w["method.attention_weight"]) == (5, True, 0.003), w
    assert_shows(view, method, ui_variant.nodes2)
    assert not {"stages", "anchor_names", "recipe", "num_tokens"} & set(view["inputs"]), view["inputs"]
    # and what it queues is the current node's form
    inputs = browser.eval(PROMPT_OF, saved["id"])
    assert inputs["method"] == method and inputs["learning_rate"] == 0.005 and inputs["batch_size"] == 1, inputs
    assert "recipe" not in inputs and "stages" not in inputs and inputs["method.num_tokens"] == w["method.num_tokens"]


def test_the_shipped_training_workflows_have_no_empty_block(browser, ui_variant):
    for path in sorted((REPO / "workflows").glob("[56] - *.json")):
        workflow = json.loads(path.read_text())
        (node,) = [n for n in workflow["nodes"] if n["type"] == "FaceCLIPTrainIDEmbedding"]
        load_workflow(browser, workflow)
        view = browser.eval(NODE_VIEW, node["id"])
        assert_shows(view, view["widgets"]["method"], ui_variant.nodes2)
    # the check can fail: the same node made 300 px taller than its widgets has an empty block
    browser.eval("(id) => { const n = %s.rootGraph.getNodeById(id); n.setSize([n.size[0], n.size[1] + 300]); "
                 "n.setDirtyCanvas(true, true); return true; }" % APP, node["id"])
    with pytest.raises(AssertionError):
        assert_shows(browser.eval(NODE_VIEW, node["id"]), view["widgets"]["method"], ui_variant.nodes2)


TRAIN_GRAPH = """async ([image, name]) => {
  const app = %(app)s;
  app.rootGraph.clear();
  const add = (type, pos) => {
    const node = window.LiteGraph.createNode(type);
    node.pos = pos;
    app.rootGraph.add(node);
    return node;
  };
  const parts = add("FaceCLIPTest_SDXLParts", [40, 40]);
  const load = add("LoadImage", [40, 240]);
  load.widgets.find((w) => w.name === "image").value = image;
  const detector = add("FaceCLIPFaceDetectorLoader", [40, 640]);
  const faces = add("FaceCLIPPrepareFaces", [420, 240]);
  for (const [w, v] of [["selection", "largest"], ["index", 0], ["on_no_face", "raise"]])
    faces.widgets.find((x) => x.name === w).value = v;
  load.connect(0, faces, faces.findInputSlot("images"));
  detector.connect(0, faces, faces.findInputSlot("face_models"));
  const train = add("FaceCLIPTrainIDEmbedding", [800, 40]);
  for (const [w, v] of [["name", name], ["steps", 3], ["resolution", 64], ["overwrite", true], ["resume", false],
                        ["gradient_checkpointing", false], ["training_dtype", "fp32"]])
    train.widgets.find((x) => x.name === w).value = v;
  parts.connect(0, train, train.findInputSlot("model"));
  parts.connect(1, train, train.findInputSlot("clip"));
  parts.connect(2, train, train.findInputSlot("vae"));
  faces.connect(0, train, train.findInputSlot("faces"));
  app.canvas.setDirty(true, true);
  return train.id;
}""" % {"app": APP}

AFTER_STEP_1 = """(id) => {
  const text = (%(text)s)(id);
  return text && text.startsWith("step 1/") ? text : null;
}""" % {"text": NODE_TEXT}

RUN_ENDED = """(id) => {
  const text = (%(text)s)(id);
  return text && text.startsWith("saved at") ? text : null;
}""" % {"text": NODE_TEXT}


def test_after_cancel_the_node_says_where_the_run_was_saved(browser, input_photos, ui_variant):
    node_id = browser.eval(TRAIN_GRAPH, [input_photos[PICKER_PHOTO], f"cancelled_{ui_variant}".replace(".", "_")])
    browser.click('[data-testid="queue-button"]')
    browser.wait_for(AFTER_STEP_1, node_id, timeout=300, what="the first training step")
    browser.eval("""async () => { // what the Cancel button asks the server
      const r = await fetch("/interrupt", { method: "POST", headers: { "Content-Type": "application/json" },
                                            body: "{}" });
      return r.ok; }""")
    text = browser.wait_for(RUN_ENDED, node_id, timeout=120, what="the text after Cancel")
    # the frontend's own reset of the run comes after the interrupt: the text must still be there after it
    browser.eval("() => new Promise((resolve) => setTimeout(() => resolve(true), 2000))")
    text = browser.eval(NODE_TEXT, node_id)
    browser.screenshot("train-node-cancelled")
    assert text is not None and text.startswith("saved at step ") and text.endswith(
        " of 3 \u2014 turn on resume to continue"), text
    if ui_variant.nodes2:
        shown = browser.eval("(id) => document.querySelector(`[data-node-id=\"${id}\"]`)?.innerText ?? ''",
                             node_id)
        assert "turn on resume to continue" in shown, shown
