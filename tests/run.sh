#!/usr/bin/env bash
# The whole test suite, provisioning what it needs on the first run:
#   bash tests/run.sh [pytest arguments...]
# Test environment: $FACECLIP_TESTENV (default .testenv/ in the repo, git-ignored). Set COMFYUI_PATH to test
# against an existing ComfyUI checkout instead of the pinned ComfyUI 0.30.0.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
export FACECLIP_TESTENV=${FACECLIP_TESTENV:-$REPO/.testenv}
start=$SECONDS
bash "$REPO/tests/harness/provision.sh" "$FACECLIP_TESTENV"
echo "[tests] environment ready in $(( SECONDS - start ))s" >&2
PY="$FACECLIP_TESTENV/venv/bin/python"

# Registry security rules (comfy node validate) plus the project's own lint settings.
"$PY" -m ruff check "$REPO"

cd "$REPO"
# The end-to-end tests write about 4 GB of random models and outputs under the temporary folder: say so up front
# rather than fail midway on "No space left on device".
tmp_root=${TMPDIR:-/tmp}
free_kib=$(df -Pk "$tmp_root" | awk 'NR==2 {print $4}')
echo "[tests] $(( free_kib / 1048576 )) GiB free in $tmp_root" >&2
if [ "$free_kib" -lt $(( 6 * 1048576 )) ]; then
  echo "[tests] warning: less than 6 GiB free in $tmp_root; the end-to-end tests may run out of disk" >&2
fi
set +e
"$PY" -m pytest -c tests/pytest.ini tests "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
  echo "[tests] pytest collected no tests" >&2
  exit 1
fi
echo "[tests] finished in $(( SECONDS - start ))s (exit $rc)" >&2
exit "$rc"
