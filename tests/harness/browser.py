"""A real ComfyUI frontend in Debian's Chromium, driven by playwright-core through bridge.cjs: used by the browser
tests (tests/e2e/browser) and by tools/build_workflows.py, which lays the shipped workflows out in the live frontend.

Node runs bridge.cjs, a line protocol (one JSON request / reply per line), so callers stay in Python.
"""
from __future__ import annotations

import json
import os
import re
import selectors
import shutil
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tests.conftest import TEST_ENV

BRIDGE = Path(__file__).with_name("bridge.cjs")
NODE_MODULES = TEST_ENV / "node" / "node_modules"
CHROMIUM = Path(os.environ.get("FACECLIP_CHROMIUM", "/usr/bin/chromium"))
APP = "window.comfyAPI?.app?.app"  # the frontend's ComfyApp, as scripts/app.js exports it to extensions

PINNED_FRONTEND = "1.47.12"  # what ComfyUI 0.30.0's requirements.txt installs
NEWEST_FRONTEND = "1.58.1"  # the newest on PyPI; keep in step with provision_browser.sh


@dataclass(frozen=True)
class UIVariant:
    """One front end the browser tests run on."""
    frontend: str
    nodes2: bool  # the "Modern Node Design (Nodes 2.0)" setting, Comfy.VueNodes.Enabled

    @property
    def static_root(self) -> Path | None:
        return None if self.frontend == PINNED_FRONTEND else TEST_ENV / "frontends" / self.frontend / "static"

    def __str__(self) -> str:
        return f"fe{self.frontend}-{'nodes2' if self.nodes2 else 'classic'}"


UI_VARIANTS = [UIVariant(fe, nodes2) for fe in (PINNED_FRONTEND, NEWEST_FRONTEND) for nodes2 in (False, True)]


class BrowserError(AssertionError):
    pass


class Browser:
    """One headless Chromium page behind bridge.cjs; every call waits for its reply (or fails on timeout)."""

    def __init__(self, user_data_dir: Path, artifacts: Path, log_path: Path, variant: UIVariant, server_url: str):
        self.artifacts = artifacts
        self.variant = variant
        self.server_url = server_url
        self._log = log_path.open("w")
        env = {**os.environ, "NODE_PATH": str(NODE_MODULES), "CHROMIUM": str(CHROMIUM)}
        self._proc = subprocess.Popen(["node", str(BRIDGE), str(user_data_dir)], stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE, stderr=self._log, env=env, text=True, bufsize=1,
                                      start_new_session=True)
        self._sel = selectors.DefaultSelector()
        self._sel.register(self._proc.stdout, selectors.EVENT_READ)
        self._next_id = 0
        self.screenshots: list[Path] = []

    def call(self, op: str, reply_timeout: float = 90.0, **request):
        self._next_id += 1
        request.update(id=self._next_id, op=op)
        self._proc.stdin.write(json.dumps(request) + "\n")
        self._proc.stdin.flush()
        deadline = time.monotonic() + reply_timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not self._sel.select(left):
                raise BrowserError(f"browser op {op!r} got no reply in {reply_timeout:.0f}s")
            line = self._proc.stdout.readline()
            if not line:
                raise BrowserError(f"the browser bridge exited (code {self._proc.poll()}) during {op!r}; "
                                   f"see {self._log.name}")
            reply = json.loads(line)
            if reply["id"] == request["id"]:
                break
        if not reply["ok"]:
            raise BrowserError(f"browser op {op!r} failed: {reply['error']}")
        return reply["value"]

    def eval(self, js: str, arg=None, timeout: float = 90.0):
        """Run a JavaScript function (its source) in the page with one JSON argument; returns its awaited value."""
        return self.call("eval", js=js, arg=arg, reply_timeout=timeout)

    def wait_for(self, js: str, arg=None, timeout: float = 60.0, what: str = ""):
        """Poll a JavaScript function until it returns something truthy; that value is returned."""
        try:
            return self.call("wait", js=js, arg=arg, timeout_ms=timeout * 1000, reply_timeout=timeout + 10)
        except BrowserError as exc:
            shot = self.screenshot(f"timeout-{what or 'wait'}")
            raise BrowserError(f"timed out waiting for {what or js} (screenshot: {shot})\n{exc}") from None

    def click(self, selector: str, timeout: float = 30.0):
        return self.call("click", selector=selector, timeout_ms=timeout * 1000, reply_timeout=timeout + 10)

    def press(self, key: str):
        """A key or chord on the keyboard (playwright names: "Control+z"), sent to the focused element."""
        return self.call("press", key=key)

    def reload(self) -> None:
        """Load the page again, as a user pressing F5 does, and wait for the frontend to boot."""
        self.call("goto", url=self.server_url + "/")
        self.wait_for(APP_READY, timeout=90, what="the frontend to boot after a reload")

    def screenshot(self, name: str) -> Path:
        safe = re.sub(r"[^A-Za-z0-9_.-]+", "-", f"{self.variant}-{name}")
        path = self.artifacts / f"{len(self.screenshots) + 1:02d}-{safe}.png"
        self.call("screenshot", path=str(path))
        self.screenshots.append(path)
        if os.environ.get("FACECLIP_TEST_ARTIFACTS"):
            target = Path(os.environ["FACECLIP_TEST_ARTIFACTS"]) / "browser"
            target.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target / path.name)
        print(f"screenshot: {path}")
        return path

    def events(self) -> list[dict]:
        return self.call("events")

    def close(self) -> None:
        try:
            if self._proc.poll() is None:
                self.call("close", reply_timeout=30)
            self._proc.wait(timeout=30)
        except (BrowserError, OSError, subprocess.TimeoutExpired):
            self._proc.kill()  # only the bridge this fixture started (Chromium dies with its pipe)
            self._proc.wait(timeout=10)
        finally:
            self._sel.close()
            self._log.close()


def missing_tools(variant: UIVariant) -> list[str]:
    """What is missing to run a browser on this variant (empty when all is there)."""
    problems = []
    if variant.static_root is not None and not (variant.static_root / "index.html").is_file():
        problems.append(f"no ComfyUI frontend {variant.frontend} in {variant.static_root}")
    if not (CHROMIUM.is_file() and os.access(CHROMIUM, os.X_OK)):
        problems.append(f"no Chromium at {CHROMIUM} (apt-get install chromium, or set FACECLIP_CHROMIUM)")
    if not (NODE_MODULES / "playwright-core" / "package.json").is_file():
        problems.append(f"no playwright-core in {NODE_MODULES}")
    if shutil.which("node") is None:
        problems.append("no `node` on PATH (Node.js >= 18)")
    return problems


# Booted: node definitions registered (this pack's included), this pack's extension loaded, a workflow open.
APP_READY = """() => {
  const app = %(app)s;
  return !!(app?.vueAppReady && window.LiteGraph?.registered_node_types?.FaceCLIPPrepareFaces
    && app.extensions.some((e) => e.name === "faceclip.FacePicker") && app.extensionManager?.workflow?.activeWorkflow
    && document.querySelector("canvas"));
}""" % {"app": APP}

# Records in window.__faceclipMissing the missing node types the frontend's loader hands to extensions
# (afterConfigureGraph) on the next graph it opens: a statement inside a function where `app` is the ComfyApp.
MISSING_NODES_PROBE = """  const probe = "faceclip.test.MissingNodesProbe";
  if (!app.extensions.some((e) => e.name === probe)) {
    app.registerExtension({ name: probe, afterConfigureGraph(missing) {
      window.__faceclipMissing = (missing ?? []).map((m) => (typeof m === "string" ? m : m.type));
    } });
  }
  window.__faceclipMissing = null;
"""

# Load a UI-format workflow through the frontend's own loader and report what it thought was missing:
# the missing node types (MISSING_NODES_PROBE), types without a registered
# node class, and the text of the error overlay the frontend shows for missing nodes, models or media.
LOAD_WORKFLOW = """async (workflow) => {
  const app = %(app)s;
%(probe)s  await app.loadGraphData(workflow);
  await new Promise((resolve) => setTimeout(resolve, 600)); // the overlay fades in
  const nodes = [...(workflow.nodes ?? []), ...(workflow.definitions?.subgraphs ?? []).flatMap((g) => g.nodes ?? [])];
  const registered = window.LiteGraph.registered_node_types;
  const overlay = document.querySelector('[data-testid="error-overlay"]');
  return {
    missing: window.__faceclipMissing,
    unregistered: nodes.map((n) => n.type).filter((t) => !(t in registered)),
    overlay: overlay ? overlay.innerText : null,
    loaded: app.rootGraph.nodes.map((n) => n.type),
  };
}""" % {"app": APP, "probe": MISSING_NODES_PROBE}


def load_workflow(browser: Browser, workflow: dict) -> dict:
    return browser.eval(LOAD_WORKFLOW, workflow)


def post_setting(server_url: str, name: str, value) -> None:
    """Store a frontend setting on the server, as the settings dialog does (read by the page when it boots)."""
    request = urllib.request.Request(f"{server_url}/api/settings/{name}", data=json.dumps(value).encode(),
                                     method="POST", headers={"Content-Type": "application/json"})
    urllib.request.urlopen(request, timeout=30).close()  # noqa: S310 - loopback test server



def boot(page: Browser) -> dict:
    """Open the page's frontend the way a returning user sees it (first-run tour done, the variant's Nodes 2.0
    setting) and wait until it has booted; returns the frontend's own {version, nodes2}."""
    post_setting(page.server_url, "Comfy.TutorialCompleted", True)
    post_setting(page.server_url, "Comfy.VueNodes.Enabled", page.variant.nodes2)
    page.call("goto", url=page.server_url + "/")
    page.wait_for(APP_READY, timeout=90, what="the frontend to boot")
    return page.eval("() => ({ version: window.__COMFYUI_FRONTEND_VERSION__, nodes2: %s.extensionManager"
                     ".setting.get('Comfy.VueNodes.Enabled') })" % APP)


# The text a node shows under its widgets (ComfyUI's progress text, drawn by the frontend's text-preview widget).
NODE_TEXT = """(id) => {
  const node = %(app)s.rootGraph.getNodeById(id);
  return node?.widgets?.find((w) => w.name === "$$node-text-preview")?.value ?? null;
}""" % {"app": APP}
