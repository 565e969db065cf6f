"""The real ComfyUI frontend in Debian's Chromium, driven by playwright-core (tests/harness/provision_browser.sh).

One Chromium page per test session, on the session's ComfyUI server (tests/e2e/conftest.py). Node runs
bridge.cjs, a line protocol (one JSON request / reply per line) so the tests stay in Python. Screenshots go to a
pytest temporary folder and, when FACECLIP_TEST_ARTIFACTS is set, are copied to $FACECLIP_TEST_ARTIFACTS/browser.
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
from pathlib import Path

import aiohttp
import pytest
from PIL import Image

from faceclip_headless.client import ComfyClient
from tests.conftest import REPO, TEST_ENV
from tests.harness.fake_insightface import MarkerFace, scene

BRIDGE = Path(__file__).with_name("bridge.cjs")
NODE_MODULES = TEST_ENV / "node" / "node_modules"
CHROMIUM = Path(os.environ.get("FACECLIP_CHROMIUM", "/usr/bin/chromium"))
WORKFLOWS = REPO / "workflows"
APP = "window.comfyAPI?.app?.app"  # the frontend's ComfyApp, as scripts/app.js exports it to extensions
# For the face picker: two marker faces the stand-in detector finds; "largest" picks the big one.
PICKER_PHOTO = "picker_two_faces.png"
NO_FACE_PHOTO = "picker_no_face.png"
PICKER_FACES = [MarkerFace((30, 50, 150, 190), 0.8), MarkerFace((200, 40, 250, 100), 0.95)]


class BrowserError(AssertionError):
    pass


class Browser:
    """One headless Chromium page behind bridge.cjs; every call waits for its reply (or fails on timeout)."""

    def __init__(self, user_data_dir: Path, artifacts: Path, log_path: Path):
        self.artifacts = artifacts
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

    def screenshot(self, name: str) -> Path:
        safe = re.sub(r"[^A-Za-z0-9_.-]+", "-", name)
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


def _check_tools() -> None:
    problems = []
    if not (CHROMIUM.is_file() and os.access(CHROMIUM, os.X_OK)):
        problems.append(f"no Chromium at {CHROMIUM} (apt-get install chromium, or set FACECLIP_CHROMIUM)")
    if not (NODE_MODULES / "playwright-core" / "package.json").is_file():
        problems.append(f"no playwright-core in {NODE_MODULES}")
    if shutil.which("node") is None:
        problems.append("no `node` on PATH (Node.js >= 18)")
    if problems:
        pytest.fail("browser tests cannot run: " + "; ".join(problems)
                    + ". `bash tests/harness/provision.sh .testenv` (run by tests/run.sh) installs them.",
                    pytrace=False)


# Booted: node definitions registered (this pack's included), this pack's extension loaded, a workflow open.
APP_READY = """() => {
  const app = %(app)s;
  return !!(app?.vueAppReady && window.LiteGraph?.registered_node_types?.FaceCLIPPrepareFaces
    && app.extensions.some((e) => e.name === "faceclip.FacePicker") && app.extensionManager?.workflow?.activeWorkflow
    && document.querySelector("canvas"));
}""" % {"app": APP}

# Load a UI-format workflow through the frontend's own loader and report what it thought was missing:
# the missing node types the loader hands to extensions (afterConfigureGraph), types without a registered
# node class, and the text of the error overlay the frontend shows for missing nodes, models or media.
LOAD_WORKFLOW = """async (workflow) => {
  const app = %(app)s;
  const probe = "faceclip.test.MissingNodesProbe";
  if (!app.extensions.some((e) => e.name === probe)) {
    app.registerExtension({ name: probe, afterConfigureGraph(missing) {
      window.__faceclipMissing = (missing ?? []).map((m) => (typeof m === "string" ? m : m.type));
    } });
  }
  window.__faceclipMissing = null;
  await app.loadGraphData(workflow);
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
}""" % {"app": APP}


def load_workflow(browser: Browser, workflow: dict) -> dict:
    return browser.eval(LOAD_WORKFLOW, workflow)


@pytest.fixture(scope="session")
def artifacts(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("browser_artifacts")


@pytest.fixture(scope="session")
def input_photos(comfy_server, tmp_path_factory) -> dict[str, str]:
    """Photos in the server's input folder before the page boots (the frontend lists input files once, at start):
    the face picker's two-face photo, and every image a shipped workflow's LoadImage names (one not there yet
    becomes a photo with one marker face)."""
    folder = tmp_path_factory.mktemp("browser_photos")
    client = ComfyClient(comfy_server.url, timeout=120)
    Image.fromarray(scene(256, 288, PICKER_FACES)).save(folder / PICKER_PHOTO)
    names = {PICKER_PHOTO: client.upload_image(folder / PICKER_PHOTO, overwrite=True)}
    Image.fromarray(scene(256, 288, [])).save(folder / NO_FACE_PHOTO)
    names[NO_FACE_PHOTO] = client.upload_image(folder / NO_FACE_PHOTO, overwrite=True)
    for path in sorted(WORKFLOWS.glob("*.json")):
        for node in json.loads(path.read_text()).get("nodes", []):
            if node.get("type") != "LoadImage" or not node.get("widgets_values"):
                continue
            name = node["widgets_values"][0]
            try:
                client.view({"filename": name, "type": "input"})
                continue  # already provided (by another test): leave it as it is
            except aiohttp.ClientResponseError:  # 404: not there
                pass
            file = folder / Path(name).name
            Image.fromarray(scene(512, 448, [MarkerFace((140, 120, 300, 330), 0.9)])).save(file)
            names[name] = client.upload_image(file, name=name)
    return names


@pytest.fixture(scope="session")
def browser(comfy_server, input_photos, artifacts, tmp_path_factory) -> Browser:
    """The ComfyUI frontend, booted, with this pack's extension loaded; shared by the browser tests."""
    _check_tools()
    user_data = tmp_path_factory.mktemp("chromium_profile")
    page = Browser(user_data, artifacts, artifacts / "bridge.log")
    try:
        # Users who finished the first-run tour see the editor, not the templates browser.
        request = urllib.request.Request(f"{comfy_server.url}/api/settings/Comfy.TutorialCompleted", data=b"true",
                                         method="POST", headers={"Content-Type": "application/json"})
        urllib.request.urlopen(request, timeout=30).close()
        page.call("goto", url=comfy_server.url + "/")
        page.wait_for(APP_READY, timeout=90, what="the frontend to boot")
        yield page
    finally:
        page.close()
