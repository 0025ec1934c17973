#!/usr/bin/env bash
# The dependency floors of pyproject.toml, tested: a virtualenv of this checkout's `.[dev]`
# with every direct dependency at its lowest allowed version (uv --resolution lowest-direct),
# then the unit suite and a few integration tests (the operator's kubernetes, kopf and
# Prometheus clients against the real control plane; the OpenTelemetry SDK against the real
# collector) on it. hack/run-tests.sh runs it after the main suite. Idempotent: the venv is
# kept beside the checkout's own under ~/.cache/modeldeploy/venvs/ and rebuilt only when
# pyproject.toml changes.
#   hack/lowest-deps.sh          build (if needed) and test
#   hack/lowest-deps.sh path     print the venv's directory
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
PYTHON="${PYTHON:-python3.11}"  # the lowest Python that requires-python allows
VENV="$(hack/pyenv.sh path)-lowest"  # hack/pyenv.sh removes it with its checkout's
[[ "${1:-}" == path ]] && { echo "$VENV"; exit 0; }
# One operator test: kopf and the raw kubernetes client end to end (create -> Ready: reads,
# lists, server-side applies, status writes, events; ~20 s with the cluster's start). The
# file's other tests are left to the main suite: its idle watch waits 30 s on the operator's
# own logic, and its deletion waits on the cluster's garbage collector (up to 20 s here).
INTEGRATION_TEST="tests/integration/test_operator_basic.py"
# And the otel extra's floors: the operator's spans, exported to the real collector (~10 s on
# the same cluster). Not the inference's: the example model is built (and cached) by the dev
# environment's scikit-learn, which the lowest one cannot unpickle.
TRACING_TEST="tests/integration/test_tracing.py"
INTEGRATION_CASES=(
  "$INTEGRATION_TEST::test_create_becomes_ready_with_min_warm_pods"
  "$INTEGRATION_TEST::test_services_hpa_and_pdb"
  "$INTEGRATION_TEST::test_kubectl_wait_for_ready"
  "$TRACING_TEST::test_reconciles_and_analysis_rounds_are_spans"
)

START=$(date +%s)
say() { printf '[lowest-deps %3ss] %s\n' "$(( $(date +%s) - START ))" "$*" >&2; }
UV="$(hack/pyenv.sh uv)"
eval "$(hack/testenv.sh env)"  # kubectl, kwokctl, helm... as for the main suite

want="$(sha256sum < pyproject.toml | cut -c1-16)-bytecode"
if [[ ! -f "$VENV/.stamp" || "$(cat "$VENV/.stamp")" != "$want" ]]; then
  say "creating $VENV: .[dev] at the lowest direct versions"
  rm -rf "$VENV"  # from scratch: nothing left over from other floors
  "$UV" venv -q --python "$PYTHON" "$VENV"
  echo "$ROOT" > "$VENV/.root"
  "$UV" pip install -q --python "$VENV/bin/python" --resolution lowest-direct -e ".[dev]"
  "$VENV/bin/python" -m compileall -q -j 0 "$VENV/lib" >/dev/null 2>&1 || true  # see pyenv.sh
  echo "$want" > "$VENV/.stamp"
fi
say "installed: $("$VENV/bin/python" - <<'PY'
import re, tomllib
from importlib.metadata import PackageNotFoundError, version

project = tomllib.load(open("pyproject.toml", "rb"))["project"]
wanted = [*project["dependencies"], *sum(project["optional-dependencies"].values(), [])]
names = {re.match(r"[A-Za-z0-9._-]+", r).group() for r in wanted} - {project["name"]}


def installed(name):
    try:
        return f"{name}=={version(name)}"
    except PackageNotFoundError:  # an extra that .[dev] leaves out (bench)
        return None


print(" ".join(filter(None, (installed(n) for n in sorted(names, key=str.lower)))))
PY
)"

# The lowest venv's programs first: the operator under test is its `modeldeploy`.
export PATH="$VENV/bin:$PATH"
say "unit suite"
"$VENV/bin/python" -m pytest -m unit -q -p no:cacheprovider tests/unit
say "integration tests: $INTEGRATION_TEST, $TRACING_TEST"
"$VENV/bin/python" -m pytest -q -p no:cacheprovider "${INTEGRATION_CASES[@]}"
say "passed on the lowest direct versions in $(( $(date +%s) - START ))s"
