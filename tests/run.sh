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
