#!/usr/bin/env bash
# The whole suite: lint, types, unit and integration tests, then the dependency floors
# (hack/lowest-deps.sh). Expects `hack/testenv.sh install` and `hack/pyenv.sh` to have run
# (make test does both). Arguments go to pytest and pick a subset: the floors are not run then.
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
# Whole files on MODELDEPLOY_TEST_WORKERS pytest-xdist workers (default 2; 0: serial), each a
# session of its own (its own cluster, Prometheus and registry: devenv/testruns): the tests
# mostly wait on the cluster, so two nearly halve the suite on 2 cores. The 40 slowest are
# printed for the suite-time budget.
workers="${MODELDEPLOY_TEST_WORKERS:-2}"
distribute=()
[[ "$workers" == 0 ]] || distribute=(-n "$workers" --dist loadfile)
python -m pytest "${distribute[@]}" --durations=40 "$@"
rc=$?
set -e
if [[ $rc -eq 5 ]]; then
  echo "[test] pytest collected no tests" >&2
  rc=0
fi
if [[ $rc -ne 0 || $# -gt 0 ]]; then exit $rc; fi
echo "[test] lowest direct dependency versions (hack/lowest-deps.sh)" >&2
hack/lowest-deps.sh
