// Notices the pack's nodes keep after their run: a prompt cut to the encoder's length, where a cancelled training
// run was saved. The server sends each as the node's progress text (drawn on the node by every frontend) and as
// the event "faceclip.node_notice". Frontend 1.58 clears a job's progress texts when the job ends, which would
// take a notice away the moment it could be read; so once the run has ended (and the frontend has reset it) the
// notices of that run are shown again, until the next run replaces them.
//
// Plain ES module, no build step; works on frontend 1.47.12 (ComfyUI 0.30.0's) and the newest.
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";

const NOTICE_EVENT = "faceclip.node_notice";
const notices = new Map(); // node (execution id) -> text, for the run in progress

function showAgain() {
  // after the frontend's own handler of the same event, which resets the run
  setTimeout(() => {
    for (const [nodeId, text] of notices) api.dispatchCustomEvent("progress_text", { nodeId, text });
    notices.clear();
  }, 0);
}

app.registerExtension({
  name: "faceclip.NodeNotices",
  setup() {
    api.addEventListener(NOTICE_EVENT, ({ detail }) => notices.set(String(detail.node), detail.text));
    api.addEventListener("execution_start", () => notices.clear());
    for (const ended of ["execution_success", "execution_interrupted", "execution_error"])
      api.addEventListener(ended, showAgain);
  },
});
