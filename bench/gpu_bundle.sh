#!/usr/bin/env bash
# What bench/gpu_check.sh needs on a CUDA machine that has torch but no network and no ComfyUI, fetched here:
#   bash bench/gpu_bundle.sh [OUT_DIR]        (default: .gpu_bundle/ in the repo, git-ignored)
# Writes OUT_DIR/ComfyUI.tar.xz (the pinned ComfyUI 0.30.0 of the test environment, or $COMFYUI_PATH, without its
# tests, CI files and blueprints) and OUT_DIR/wheels.tar.xz (CPython 3.12, manylinux x86-64 wheels, versions pinned
# to the test environment's; each rewritten uncompressed (ZIP_STORED, still a valid wheel) so that xz compresses
# their contents: 39 MiB instead of 57 MiB of zips), then prints the total size and fails above
# $GPU_BUNDLE_LIMIT_MIB (54: the working tree travels beside it, and everything together must stay under 64 MiB).
#
# The wheels are what ComfyUI's server, this pack and the checks import and the GPU machine lacks (it has torch,
# torchvision, torchaudio, numpy, scipy, transformers, tokenizers, safetensors, aiohttp, yarl, pillow, pyyaml,
# psutil, einops, sentencepiece, onnx, onnxruntime, opencv-python-headless, requests, ...). Left out on purpose:
# - comfyui-frontend-package, comfyui-workflow-templates, comfyui-embedded-docs: a headless server needs none
#   (gpu_check.py starts it with --front-end-root at an empty folder; the other two only log errors);
# - comfy-kitchen's compiled kernels: its wheel is 45 MB (165 MB unpacked: a CUDA and a HIP extension). ComfyUI
#   imports the package unconditionally (comfy/ldm/joyimage), but uses it only for fp8/fp4 and fused-op models,
#   and the package itself runs without its extension (the cuda backend marks itself unavailable; its PyTorch
#   "eager" and triton backends remain). So the real comfy-kitchen 0.2.26 wheel is repacked here without
#   backends/*/_C*.so, under the build tag 0nokernels; nothing this check runs calls it;
# - kornia, spandrel, PyOpenGL, comfy-angle: only comfy_extras nodes this check never uses import them (a failed
#   extras import is logged and skipped);
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
OUT=${1:-$REPO/.gpu_bundle}
COMFY=${COMFYUI_PATH:-$REPO/.testenv/ComfyUI}
LIMIT_MIB=${GPU_BUNDLE_LIMIT_MIB:-54}
PY=${PYTHON:-python3}

# name==version: ComfyUI 0.30.0's requirements.txt (what its server imports), pydantic's and the pack's own.
WHEELS=(
  av==18.1.0                                   # comfy_api.latest (every V3 node, this pack's too) imports it
  comfy-aimdo==0.4.11                          # comfy.model_management / model_patcher (dynamic VRAM)
  torchsde==0.2.6 trampoline==0.1.2            # comfy.k_diffusion.sampling
  sqlalchemy==2.1.9 alembic==1.20.1 mako==1.4.3  # app.database, app.assets (ComfyUI's job/asset database)
  blake3==1.0.11 simpleeval==1.0.8
  pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5
  pydantic-settings==2.16.3 python-dotenv==1.2.4   # comfy_config, app.assets
  ftfy==6.3.1 wcwidth==0.9.4                   # faceclip_core's tokenizer
  insightface==2.1                             # face detection (stand-in ONNX models in the check)
  scikit-image==0.26.0 lazy-loader==0.6        # insightface's package __init__ imports skimage.transform
)

log() { printf '[gpu_bundle] %s\n' "$*" >&2; }
[ -f "$COMFY/comfyui_version.py" ] || { log "no ComfyUI at $COMFY (run bash tests/run.sh once, or set COMFYUI_PATH)"; exit 1; }
rm -rf "$OUT"
mkdir -p "$OUT"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/zipped" "$tmp/wheels"

log "ComfyUI $(sed -n 's/^__version__ = "\(.*\)"/\1/p' "$COMFY/comfyui_version.py") from $COMFY"
name=$(basename "$COMFY")
tar -C "$(dirname "$COMFY")" -cf - --exclude="$name/.git" --exclude="$name/.github" --exclude="$name/.ci" \
    --exclude="$name/tests" --exclude="$name/tests-unit" --exclude="$name/blueprints" --exclude='__pycache__' \
    --exclude="$name/temp" --exclude="$name/output" --exclude="$name/input" --exclude="$name/user" \
    --transform "s,^$name,ComfyUI," "$name" | xz -6 -T0 > "$OUT/ComfyUI.tar.xz"

log "wheels: ${WHEELS[*]}"
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d "$tmp/zipped" "${WHEELS[@]}"

KITCHEN=comfy-kitchen==0.2.26
log "$KITCHEN without its compiled kernels"
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 -d "$tmp" "$KITCHEN"
"$PY" - "$tmp"/comfy_kitchen-*.whl "$tmp/zipped" <<'PYEOF'
"""Copy a wheel without its compiled extensions (and their RECORD lines), adding a build tag to its name."""
import re, sys, zipfile
from pathlib import Path

src, out = Path(sys.argv[1]), Path(sys.argv[2])
name, version, rest = src.name.split("-", 2)
dst = out / f"{name}-{version}-0nokernels-{rest}"
kernel = re.compile(r"^comfy_kitchen/backends/[^/]+/_C[^/]*\.(so|pyd)$")
with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED) as zout:
    for info in zin.infolist():
        if kernel.match(info.filename):
            continue
        data = zin.read(info)
        if info.filename.endswith(".dist-info/RECORD"):
            data = b"".join(line for line in data.splitlines(keepends=True)
                            if not kernel.match(line.split(b",")[0].decode()))
        zout.writestr(info, data)
print(dst, file=sys.stderr)
PYEOF

log "recompressing $(ls "$tmp/zipped" | wc -l) wheels (uncompressed wheels in one tar.xz)"
"$PY" - "$tmp/zipped" "$tmp/wheels" <<'PYEOF'
import sys, zipfile
from pathlib import Path

for src in sorted(Path(sys.argv[1]).glob("*.whl")):
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(Path(sys.argv[2]) / src.name, "w", zipfile.ZIP_STORED) as zout:
        for info in zin.infolist():
            data = zin.read(info)
            info.compress_type = zipfile.ZIP_STORED
            zout.writestr(info, data)
PYEOF
(cd "$tmp/wheels" && sha256sum ./*.whl > SHA256SUMS)
tar -C "$tmp" -cf - wheels | xz -9 -T0 > "$OUT/wheels.tar.xz"
(cd "$OUT" && sha256sum ComfyUI.tar.xz wheels.tar.xz > SHA256SUMS)
bytes=$(du -cb "$OUT" | tail -1 | cut -f1)
mib=$(( (bytes + 1048575) / 1048576 ))
log "$(ls "$tmp/wheels" | grep -c 'whl$') wheels + ComfyUI: $bytes bytes ($mib MiB; limit $LIMIT_MIB MiB)"
echo "$OUT $bytes"
if [ "$mib" -gt "$LIMIT_MIB" ]; then
  log "bundle too large"
  exit 1
fi
