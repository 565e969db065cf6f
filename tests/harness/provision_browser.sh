#!/usr/bin/env bash
# Browser-test tools (tests/e2e/browser), called by provision.sh:  provision_browser.sh ENV_DIR
#   Chromium         Debian's `chromium` package (apt-get, needs root), unless /usr/bin/chromium exists or
#                    FACECLIP_CHROMIUM names another Chromium/Chrome binary.
#   <env>/node       playwright-core, pinned, installed with npm (Node >= 18 must be on PATH).
#   <env>/frontends/<version>/static
#                    the newest ComfyUI frontend on PyPI when this was written (comfyui-frontend-package, pinned
#                    below), unpacked beside the one ComfyUI's requirements pin; the browser tests run on both,
#                    serving this one with ComfyUI's --front-end-root.
# Own stamp, so the Python environment and this part are re-provisioned independently.
# FACECLIP_BROWSER=0 skips this step; the browser tests then fail and say what is missing.
set -euo pipefail

ENV_DIR=${1:?usage: provision_browser.sh ENV_DIR}
PLAYWRIGHT_CORE_VERSION=1.65.1
NEWEST_FRONTEND_VERSION=1.58.1  # keep in step with tests/e2e/browser/conftest.py NEWEST_FRONTEND
PYTHON=${FACECLIP_TEST_BASE_PYTHON:-python3}
CHROMIUM=${FACECLIP_CHROMIUM:-/usr/bin/chromium}
NODE_DIR="$ENV_DIR/node"

log() { printf '[provision:browser] %s\n' "$*" >&2; }
timed() { local s=$SECONDS; "$@"; log "$(( SECONDS - s ))s: $*"; }

if [ "${FACECLIP_BROWSER:-1}" = "0" ]; then
  log "skipped (FACECLIP_BROWSER=0): the browser tests will fail"
  exit 0
fi

if [ ! -x "$CHROMIUM" ]; then
  if [ -n "${FACECLIP_CHROMIUM:-}" ]; then
    echo "FACECLIP_CHROMIUM=$CHROMIUM is not an executable" >&2; exit 2
  fi
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null; then
    timed apt-get update -qq
    timed env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    log "WARNING: no $CHROMIUM and not root with apt-get: install Debian's chromium (apt-get install chromium)" \
        "or set FACECLIP_CHROMIUM; the browser tests fail until then"
  fi
fi

# The newest frontend: the wheel's static/ folder is all ComfyUI serves, so it is unpacked rather than
# installed (the venv keeps the pinned one ComfyUI asks for).
FRONTEND_DIR="$ENV_DIR/frontends/$NEWEST_FRONTEND_VERSION"
if [ ! -f "$FRONTEND_DIR/static/index.html" ]; then
  rm -rf "$FRONTEND_DIR" "$FRONTEND_DIR.tmp"
  mkdir -p "$FRONTEND_DIR.tmp"
  timed "$PYTHON" -m pip download -q --no-deps --only-binary=:all: -d "$FRONTEND_DIR.tmp" \
    "comfyui-frontend-package==$NEWEST_FRONTEND_VERSION"
  "$PYTHON" -m zipfile -e "$FRONTEND_DIR.tmp"/comfyui_frontend_package-*.whl "$FRONTEND_DIR.tmp/unpacked"
  mkdir -p "$FRONTEND_DIR"
  mv "$FRONTEND_DIR.tmp/unpacked/comfyui_frontend_package/static" "$FRONTEND_DIR/static"
  rm -rf "$FRONTEND_DIR.tmp"
  log "ComfyUI frontend $NEWEST_FRONTEND_VERSION in $FRONTEND_DIR/static"
fi

STAMP="$NODE_DIR/provisioned.stamp"
want="playwright-core@$PLAYWRIGHT_CORE_VERSION"
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ] && [ -f "$NODE_DIR/node_modules/playwright-core/package.json" ]; then
  exit 0
fi
command -v npm >/dev/null || { echo "npm not found: the browser tests need Node.js >= 18 and npm" >&2; exit 2; }
mkdir -p "$NODE_DIR"
rm -f "$STAMP"
printf '{\n  "name": "faceclip-browser-tests",\n  "private": true\n}\n' > "$NODE_DIR/package.json"
timed npm install --prefix "$NODE_DIR" --save-exact --no-audit --no-fund --loglevel=error \
  "playwright-core@$PLAYWRIGHT_CORE_VERSION"
echo "$want" > "$STAMP"
log "playwright-core $PLAYWRIGHT_CORE_VERSION in $NODE_DIR; chromium: $("$CHROMIUM" --version 2>/dev/null || echo missing)"
