#!/usr/bin/env bash
# The whole suite: lint, types, unit and integration tests. Expects `hack/testenv.sh install`
# and `hack/pyenv.sh` to have run (make test does both).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
eval "$(hack/testenv.sh env)"
VENV="$(hack/pyenv.sh path)"
export PATH="$VENV/bin:$PATH"
echo "[test] ruff check" >&2
ruff check .
echo "[test] ruff format --check" >&2
ruff format --check .
echo "[test] mypy" >&2
mypy
echo "[test] pytest" >&2
set +e
python -m pytest "$@"
rc=$?
set -e
if [[ $rc -eq 5 ]]; then
  echo "[test] pytest collected no tests" >&2
  exit 0
fi
exit $rc
