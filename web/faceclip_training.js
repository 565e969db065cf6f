// Train ID Embedding (FaceCLIPTrainIDEmbedding) in the editor.
//
// 1. Workflows saved by the first release (0.1.0) load with the values they were saved with. That release stored
//    the node's 25 widgets in one flat list, with 0 meaning "the recipe's / the method's default" for the learning
//    rate, the batch and the number of tokens. The node now shows the picked method's settings only (a V3
//    DynamicCombo: "method" is followed by its method's widgets, named "method.<setting>") and every default as its
//    value. Before such a node is configured, its saved values are rewritten into today's order, the zeros
//    replaced by the values that release trained with (faceclip_core/identity/node_inputs.py does the same for
//    API graphs on the server).
// (After Cancel the node keeps saying "saved at step N of M — turn on resume to continue": a notice that
// web/faceclip_notices.js keeps on the node after the run.)
//
// Plain ES module, no build step; works on frontend 1.47.12 (ComfyUI 0.30.0's) and the newest.
import { app } from "../../scripts/app.js";

const EXTENSION = "faceclip.TrainIDEmbedding";
const NODE_TYPE = "FaceCLIPTrainIDEmbedding";

// The 0.1.0 widget order (the seed's "control after generate" value follows the seed).
const RELEASE_0_1_0 = ["method", "name", "steps", "learning_rate", "seed", "$control", "resolution", "batch_size",
  "resume", "overwrite", "stages", "kv_split", "attention_weight", "attention_layers", "anchor_names",
  "reg_weight", "gradient_checkpointing", "training_dtype", "framing", "class_word", "num_tokens",
  "attention_tokens", "adapter_scale", "flip", "micro_batch", "recipe"];
// 0.1.0's recipes where they differ from the node's defaults (faceclip_core/identity/recipes.py: "paper").
const RECIPE_0_1_0 = { paper: { "ID-EA": { batch_size: 8, learning_rate: 0.012 } } };

function ordered(section, order) {
  return (order ?? Object.keys(section ?? {})).filter((name) => section && name in section)
    .map((name) => [name, section[name]]);
}

// Today's widgets in the frontend's order for `method`: [name, spec, control?] with the method's own after it.
function widgetLayout(nodeData, method) {
  const input = nodeData.input ?? {};
  const order = nodeData.input_order ?? {};
  const layout = [];
  for (const [name, spec] of [...ordered(input.required, order.required), ...ordered(input.optional,
                                                                                      order.optional)]) {
    const kind = spec[0];
    if (!(Array.isArray(kind) || ["INT", "FLOAT", "STRING", "BOOLEAN", "COMBO",
                                  "COMFY_DYNAMICCOMBO_V3"].includes(kind))) continue;
    layout.push([name, spec]);
    if (spec[1]?.control_after_generate) layout.push(["$control", ["COMBO", { default: "fixed" }]]);
    if (kind === "COMFY_DYNAMICCOMBO_V3") {
      const option = spec[1].options.find((o) => o.key === method);
      for (const [sub, subSpec] of [...ordered(option?.inputs?.required), ...ordered(option?.inputs?.optional)])
        layout.push([`${name}.${sub}`, subSpec]);
    }
  }
  return layout;
}

// A 0.1.0 node's saved values as today's, or null when they are not 0.1.0's.
export function migrateReleaseValues(nodeData, values) {
  if (!Array.isArray(values) || typeof values[1] !== "string") return null; // today: values[1] is num_tokens
  const saved = Object.fromEntries(RELEASE_0_1_0.slice(0, values.length).map((name, i) => [name, values[i]]));
  const method = saved.method;
  const recipe = RECIPE_0_1_0[saved.recipe]?.[method] ?? {};
  const zeroMeans = { learning_rate: recipe.learning_rate, batch_size: recipe.batch_size };
  return widgetLayout(nodeData, method).map(([name, spec]) => {
    const key = name.startsWith("method.") ? name.slice("method.".length) : name;
    const fallback = spec[1]?.default ?? (Array.isArray(spec[0]) ? spec[0][0] : undefined);
    if (name === "method") return method;
    if (!(key in saved)) return fallback; // saved before the input existed
    if (saved[key] === 0 && (key in zeroMeans || key === "num_tokens")) return zeroMeans[key] ?? fallback;
    return saved[key];
  });
}

// The input slots a 0.1.0 node saved for its widgets, renamed or dropped as its widgets were.
function migrateInputs(inputs, nodeData, method) {
  if (!Array.isArray(inputs)) return inputs;
  const names = new Set(widgetLayout(nodeData, method).map(([name]) => name));
  return inputs.flatMap((slot) => {
    if (!slot.widget) return [slot];
    const name = names.has(slot.widget.name) ? slot.widget.name : `method.${slot.widget.name}`;
    if (!names.has(name)) return slot.link == null ? [] : [slot]; // retired, or the other method's
    return [{ ...slot, name, localized_name: name, label: undefined, widget: { name } }];
  });
}

app.registerExtension({
  name: EXTENSION,
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (nodeData.name !== NODE_TYPE) return;
    const configure = nodeType.prototype.configure;
    nodeType.prototype.configure = function (info, ...rest) {
      const values = migrateReleaseValues(nodeData, info?.widgets_values);
      if (values) {
        info = { ...info, widgets_values: values, inputs: migrateInputs(info.inputs, nodeData, values[0]) };
        delete info.widgets_values_named;
        console.info(`[${EXTENSION}] node ${info.id}: converted the settings saved by version 0.1.0`);
      }
      const result = configure.call(this, info, ...rest);
      if (values) this.setSize([this.size[0], this.computeSize()[1]]); // its saved height held 25 widgets
      return result;
    };
  },
});
