// Face picker for "Prepare Faces" (FaceCLIPPrepareFaces).
//
// After the node runs, the faces it found are shown on the node as numbered thumbnails (#j = the number on
// the annotated preview). The face used in that run has a green frame. Clicking face #j sets the node's
// `selection` widget to "index" and its `index` widget to j, so the next queue uses that face.
//
// Plain ES module for the frontend ComfyUI 0.30.0 ships (comfyui-frontend-package 1.47.12); no build step.
// Data: the node's UI output key "faceclip_faces" (nodes/faces.py, PICKER_KEY): one entry per input photo,
// PreparedImage.to_dict() {index, status, chosen, reason, ...} with faces [{index, score, box, thumbnail}].
// When the node fails in a later run, the faces and the annotated preview of the earlier run are removed and the
// failure is shown instead, so the picker never offers faces of a photo that is no longer the input. This holds
// inside a subgraph too: the server names such a node by its execution id ("13:7", node 7 inside subgraph node 13).
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";

const EXTENSION = "faceclip.FacePicker";
const NODE_TYPE = "FaceCLIPPrepareFaces";
const OUTPUT_KEY = "faceclip_faces";
const WIDGET_NAME = "faceclip_picker";
const ROW_HEIGHT = 100; // label + 72 px thumbnail + scrollbar room
const HINT_HEIGHT = 22;
const MARGIN = 10; // the frontend's DOM widget margin, inside the height the widget asks for

const STYLE = `
.faceclip-picker { display: flex; flex-direction: column; gap: 4px; font: 11px sans-serif;
  color: var(--input-text, #ddd); overflow: hidden; box-sizing: border-box; }
.faceclip-picker-row { display: flex; flex-direction: column; height: ${ROW_HEIGHT - 4}px; }
.faceclip-picker-label { height: 16px; line-height: 16px; opacity: 0.8; white-space: nowrap; overflow: hidden;
  text-overflow: ellipsis; }
.faceclip-picker-faces { display: flex; gap: 6px; overflow-x: auto; overflow-y: hidden; padding-bottom: 2px; }
.faceclip-picker-face { position: relative; flex: 0 0 auto; width: 72px; height: 72px; padding: 0;
  border: 3px solid #555; border-radius: 6px; background: #222; cursor: pointer; overflow: hidden; }
.faceclip-picker-face img { width: 100%; height: 100%; object-fit: cover; display: block; }
.faceclip-picker-face:hover { border-color: #9bd; }
.faceclip-picker-face.faceclip-used { border-color: #2ecc40; }
.faceclip-picker-face.faceclip-picked { border-color: #ffd000; border-style: dashed; }
.faceclip-picker-face.faceclip-used.faceclip-picked { border-color: #2ecc40; border-style: solid; }
.faceclip-picker-num { position: absolute; left: 2px; top: 2px; padding: 0 4px; border-radius: 4px;
  background: rgba(0, 0, 0, 0.75); color: #fff; font: bold 12px sans-serif; }
.faceclip-picker-hint { height: ${HINT_HEIGHT - 4}px; line-height: ${HINT_HEIGHT - 4}px; opacity: 0.7;
  white-space: nowrap; overflow: hidden; text-overflow: ellipsis; }
`;

function addStyle() {
  if (document.getElementById("faceclip-picker-style")) return;
  const style = document.createElement("style");
  style.id = "faceclip-picker-style";
  style.textContent = STYLE;
  document.head.appendChild(style);
}

function widget(node, name) {
  return node.widgets?.find((w) => w.name === name);
}

function viewUrl(file) {
  const query = new URLSearchParams({ filename: file.filename, subfolder: file.subfolder ?? "",
                                      type: file.type ?? "temp" });
  return api.apiURL(`/view?${query}`);
}

/** The face the widgets now ask for (-1 when the selection policy is not "index"). */
function pickedIndex(node) {
  return widget(node, "selection")?.value === "index" ? Number(widget(node, "index")?.value) : -1;
}

function setWidget(node, name, value) {
  const w = widget(node, name);
  if (!w || w.value === value) return;
  const old = w.value;
  w.value = value;
  w.callback?.(w.value, app.canvas, node);
  node.onWidgetChanged?.(name, value, old, w);
}

function pick(node, index) {
  setWidget(node, "selection", "index");
  setWidget(node, "index", index);
  node.graph?.setDirtyCanvas?.(true, true);
  // The change tracker records a state on canvas mouse-up and key events; a click on this DOM widget is neither
  // (classic or Nodes 2.0), so record it here: one undo step, kept in the saved and the restored-on-reload
  // workflow. captureCanvasState is the current name; checkState, the older one, logs a deprecation warning.
  const tracker = app.extensionManager?.workflow?.activeWorkflow?.changeTracker;
  if (typeof tracker?.captureCanvasState === "function") tracker.captureCanvasState();
  else tracker?.checkState?.();
  render(node);
}

function render(node) {
  const state = node.faceclipPicker;
  const images = state.images;
  const picked = pickedIndex(node);
  const root = state.element;
  root.replaceChildren();
  for (const image of images) {
    const row = document.createElement("div");
    row.className = "faceclip-picker-row";
    const label = document.createElement("div");
    label.className = "faceclip-picker-label";
    const n = image.faces?.length ?? 0;
    label.textContent = `Photo ${image.index + 1}: ` + (image.status === "ok"
      ? `${n} face${n === 1 ? "" : "s"}, using #${image.chosen}`
      : `${image.status}${image.reason ? ` (${image.reason})` : ""}`);
    label.title = label.textContent;
    const faces = document.createElement("div");
    faces.className = "faceclip-picker-faces";
    for (const face of image.faces ?? []) {
      const button = document.createElement("button");
      button.type = "button";
      button.className = "faceclip-picker-face";
      button.classList.toggle("faceclip-used", face.index === image.chosen);
      button.classList.toggle("faceclip-picked", face.index === picked);
      button.dataset.image = String(image.index);
      button.dataset.index = String(face.index);
      button.title = `Face #${face.index}, score ${Number(face.score).toFixed(2)}: click to use it`;
      if (face.thumbnail) {
        const img = document.createElement("img");
        img.src = viewUrl(face.thumbnail);
        img.alt = `face #${face.index}`;
        img.draggable = false;
        button.appendChild(img);
      }
      const num = document.createElement("span");
      num.className = "faceclip-picker-num";
      num.textContent = `#${face.index}`;
      button.appendChild(num);
      button.addEventListener("click", (e) => {
        e.stopPropagation();
        pick(node, face.index);
      });
      faces.appendChild(button);
    }
    row.append(label, faces);
    root.appendChild(row);
  }
  const hint = document.createElement("div");
  hint.className = "faceclip-picker-hint";
  hint.textContent = state.failed ? `The last run failed here: ${state.failed}`
    : picked >= 0 ? `Next run uses face #${picked} (selection: index)`
    : "Click a face to use it (sets selection to index)";
  hint.title = hint.textContent;
  root.appendChild(hint);
}

function show(node, images) {
  if (!Array.isArray(images)) return;
  if (!node.faceclipPicker) {
    addStyle();
    const element = document.createElement("div");
    element.className = "faceclip-picker";
    const state = { element, images: [] };
    const height = () => state.images.length * ROW_HEIGHT + HINT_HEIGHT + 2 * MARGIN;
    // serialize: false keeps it out of the saved widgets_values and out of the prompt.
    state.widget = node.addDOMWidget(WIDGET_NAME, "faceclip_picker", element, {
      serialize: false, hideOnZoom: false, margin: MARGIN, getMinHeight: height, getMaxHeight: height,
    });
    state.widget.serialize = false;
    node.faceclipPicker = state;
  }
  node.faceclipPicker.images = images;
  node.faceclipPicker.failed = null;
  render(node);
  const [w, h] = node.computeSize();
  node.setSize([Math.max(node.size[0], w), Math.max(node.size[1], h)]);
  node.graph?.setDirtyCanvas?.(true, true);
}

/** The graph node a server message or an output key names, as the frontend resolves them (getNodeByExecutionId
 * and getNodeByLocatorId in its utils/graphTraversalUtil.ts, which extensions cannot import):
 * - an execution id "13:7" (what the server's events carry): node 7 inside the subgraph of node 13, nested to
 *   any depth;
 * - a locator id "<subgraph uuid>:7" (the keys of app.nodeOutputs): node 7 of that subgraph definition;
 * - a plain id: a node of the root graph (the only kind on a frontend or a graph without subgraphs). */
function nodeById(id) {
  const root = app.rootGraph ?? app.graph;
  if (!root || id == null) return null;
  const text = String(id);
  const parts = text.split(":");
  if (parts.length === 1) return root.getNodeById(text) ?? null;
  const definition = parts.length === 2 ? root.subgraphs?.get?.(parts[0]) : undefined;
  if (definition) return definition.getNodeById(parts[1]) ?? null;
  let graph = root;
  for (const hostId of parts.slice(0, -1)) {
    const host = graph.getNodeById(hostId);
    graph = host?.isSubgraphNode?.() ? host.subgraph : null;
    if (!graph) return null;
  }
  return graph.getNodeById(parts.at(-1)) ?? null;
}

/** Forget the annotated preview of the node's last successful run, wherever the frontend draws it from. */
function forgetPreview(node, executionId, promptId) {
  node.imgs = undefined; // what the classic canvas draws
  // Nodes 2.0 draws the preview from the frontend's node output store. Extensions reach that store only through the
  // "executed" message that fills it (on 1.47.12 app.nodeOutputs is a plain copy of it), so send the node the
  // output of a run that showed nothing: the store, app.nodeOutputs and the workflow's copy of the outputs (put
  // back when its tab is opened again) all drop the earlier photo's preview.
  api.dispatchCustomEvent("executed", {
    node: executionId, display_node: executionId, output: {}, prompt_id: promptId,
  });
}

function register() {
  if (window.__faceclipPickerRegistered || app.extensions?.some?.((e) => e.name === EXTENSION)) return;
  window.__faceclipPickerRegistered = true;
  app.registerExtension({
    name: EXTENSION,
    async beforeRegisterNodeDef(nodeType, nodeData) {
      if (nodeData?.name !== NODE_TYPE) return;
      const onExecuted = nodeType.prototype.onExecuted;
      nodeType.prototype.onExecuted = function (output) {
        onExecuted?.apply(this, arguments);
        show(this, output?.[OUTPUT_KEY]);
      };
    },
    setup() {
      api.addEventListener("execution_error", ({ detail }) => {
        const node = nodeById(detail?.node_id);
        if (node?.type !== NODE_TYPE || !node.faceclipPicker) return;
        node.faceclipPicker.images = [];
        node.faceclipPicker.failed = String(detail.exception_message ?? "error").split("\n")[0];
        forgetPreview(node, String(detail.node_id), detail.prompt_id); // it showed the earlier photo too
        render(node);
        node.graph?.setDirtyCanvas?.(true, true);
      });
    },
    // Outputs restored by the frontend (opening a finished job from the queue) rather than sent live.
    onNodeOutputsUpdated(outputs) {
      for (const [id, output] of Object.entries(outputs ?? {})) {
        const node = nodeById(id);
        if (node?.type === NODE_TYPE && output?.[OUTPUT_KEY]) show(node, output[OUTPUT_KEY]);
      }
    },
  });
}

register();
