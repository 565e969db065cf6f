#!/usr/bin/env bash
# The pack's GPU check in one command, on a CUDA machine with torch but no network and no ComfyUI:
#   bash bench/gpu_check.sh [bench/gpu_check.py options]      (under 9 minutes on one H100/H200)
# Needs the bundle that `bash bench/gpu_bundle.sh` wrote (on a machine with network) into .gpu_bundle/, or
# $GPU_BUNDLE. Installs the bundle's wheels that this Python lacks into $GPU_CHECK_DIR/site (default
# /tmp/faceclip_gpu_check; nothing else on the machine changes), unpacks ComfyUI there, then runs
# bench/gpu_check.py: its JSON goes to stdout and, when $OUT is set, to $OUT/gpu_check.json (logs beside it).
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
BUNDLE=${GPU_BUNDLE:-$REPO/.gpu_bundle}
DEST=${GPU_CHECK_DIR:-/tmp/faceclip_gpu_check}
PY=${PYTHON:-python3}
log() { printf '[gpu_check.sh] %s\n' "$*" >&2; }
[ -f "$BUNDLE/ComfyUI.tar.xz" ] || { log "no bundle at $BUNDLE: run bash bench/gpu_bundle.sh where there is network"; exit 1; }
start=$SECONDS
mkdir -p "$DEST"
rm -rf "$DEST/wheels"
tar -xJf "$BUNDLE/wheels.tar.xz" -C "$DEST"

# Only the distributions this Python does not have already (the machine's own torch stack stays in charge).
mapfile -t missing < <("$PY" - "$DEST/wheels" <<'PYEOF'
import importlib.metadata, pathlib, re, sys
for wheel in sorted(pathlib.Path(sys.argv[1]).glob("*.whl")):
    name = re.sub(r"[-_.]+", "-", wheel.name.split("-")[0]).lower()
    try:
        importlib.metadata.version(name)
        print(f"[gpu_check.sh] already installed: {name}", file=sys.stderr)
    except importlib.metadata.PackageNotFoundError:
        print(wheel)
PYEOF
)
if [ "${#missing[@]}" -gt 0 ]; then
  log "installing ${#missing[@]} wheels into $DEST/site"
  rm -rf "$DEST/site"
  if "$PY" -m pip --version >/dev/null 2>&1; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --disable-pip-version-check --target "$DEST/site" \
        "${missing[@]}" >&2
  else  # no pip: these wheels have no .data folders, so unzipping them is their installation
    "$PY" -c 'import sys, zipfile; [zipfile.ZipFile(w).extractall(sys.argv[1]) for w in sys.argv[2:]]' \
        "$DEST/site" "${missing[@]}"
  fi
fi
export PYTHONPATH="$DEST/site${PYTHONPATH:+:$PYTHONPATH}"
rm -rf "$DEST/ComfyUI"
tar -xJf "$BUNDLE/ComfyUI.tar.xz" -C "$DEST"
export COMFYUI_PATH="$DEST/ComfyUI"
log "setup done in $(( SECONDS - start ))s; running bench/gpu_check.py"
rm -rf "$DEST/work"
exec "$PY" "$REPO/bench/gpu_check.py" --work "$DEST/work" --models "${GPU_CHECK_MODELS:-$DEST/models}" --setup-s "$(( SECONDS - start ))" "$@"
