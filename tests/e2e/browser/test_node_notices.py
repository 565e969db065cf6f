"""Notices the pack's nodes say on the node stay there after the run (web/faceclip_notices.js): a prompt cut to
FaceCLIP's 77 tokens is still readable on FaceCLIP Text Encode once the run has ended, on every frontend variant
(1.58 clears a job's progress texts when the job ends)."""
from __future__ import annotations

from tests.e2e.browser.conftest import APP
from tests.harness.browser import NODE_TEXT
from tests.harness.server_env import TINY_FACECLIP

LONG_TEXT = "A woman in a red coat, " + ", ".join(f"detail {i}" for i in range(40))  # about 120 CLIP tokens

# Load FaceCLIP -> FaceCLIP Text Encode (a text longer than 77 tokens) -> a test output node; a flag set when the
# server says the run succeeded.
CUT_GRAPH = """([encoder, text]) => {
  const app = %(app)s;
  app.rootGraph.clear();
  const add = (type, pos) => {
    const node = window.LiteGraph.createNode(type);
    node.pos = pos;
    app.rootGraph.add(node);
    return node;
  };
  const load = add("FaceCLIPLoader", [40, 40]);
  for (const [w, v] of [["encoder_name", encoder], ["weight_dtype", "fp32"]])
    load.widgets.find((x) => x.name === w).value = v;
  const encode = add("FaceCLIPTextEncode", [420, 40]);
  encode.widgets.find((x) => x.name === "text").value = text;
  load.connect(0, encode, encode.findInputSlot("faceclip"));
  const probe = add("FaceCLIPTest_ConditioningShapes", [820, 40]);
  encode.connect(0, probe, probe.findInputSlot("conditioning"));
  window.__faceclipRunEnded = false;
  const api = window.comfyAPI.api.api;
  const ended = () => { window.__faceclipRunEnded = true; api.removeEventListener("execution_success", ended); };
  api.addEventListener("execution_success", ended);
  app.canvas.setDirty(true, true);
  return encode.id;
}""" % {"app": APP}


def test_a_cut_prompt_is_still_said_on_the_node_after_the_run(browser, ui_variant):
    node_id = browser.eval(CUT_GRAPH, [TINY_FACECLIP, LONG_TEXT])
    browser.click('[data-testid="queue-button"]')
    browser.wait_for("() => window.__faceclipRunEnded || null", timeout=180, what="the run to succeed")
    # the frontend resets the finished job right after the event: the notice must outlast that
    browser.eval("() => new Promise((resolve) => setTimeout(() => resolve(true), 2000))")
    text = browser.eval(NODE_TEXT, node_id)
    browser.screenshot("text-encode-cut-notice")
    assert text is not None and text.startswith("Shorten the text: it is ") and "only the first 77" in text, text
    if ui_variant.nodes2:
        shown = browser.eval("(id) => document.querySelector(`[data-node-id=\"${id}\"]`)?.innerText ?? ''", node_id)
        assert "Shorten the text" in shown, shown
