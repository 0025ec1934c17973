#!/usr/bin/env bash
# MLServer (Seldon's V2 server, from PyPI) in a virtualenv of its own, kept outside the repo:
# a real server no one here wrote, for `modeldeploy proxy` to stand in front of
# (devenv/mlserver.py, tests/integration/test_proxy_mlserver.py, bench/bench_proxy.py).
# Apart from the project's venv because it pins its own dependencies (pandas < 3 among them);
# its scikit-learn is the project venv's version, so that it loads the churn model's joblib
# file exactly as `modeldeploy serve` does.
#   hack/mlserver-env.sh        ensure the venv is current (idempotent)
#   hack/mlserver-env.sh path   print its directory
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
CACHE="${MODELDEPLOY_CACHE:-$HOME/.cache/modeldeploy}"
PYTHON="${PYTHON:-python3}"
MLSERVER_VERSION="1.7.1"  # with mlserver-sklearn of the same version
PY_TAG="$("$PYTHON" -c 'import sys; print(f"py{sys.version_info[0]}{sys.version_info[1]}")')"
VENV="$CACHE/mlserver-$MLSERVER_VERSION-$PY_TAG"
[[ "${1:-}" == path ]] && { echo "$VENV"; exit 0; }

say() { printf '[mlserver-env] %s\n' "$*" >&2; }
"$ROOT/hack/pyenv.sh"
PROJECT_PYTHON="$("$ROOT/hack/pyenv.sh" path)/bin/python"
UV="$("$ROOT/hack/pyenv.sh" uv)"
SKLEARN_VERSION="$("$PROJECT_PYTHON" -c 'import sklearn; print(sklearn.__version__)')"
want="mlserver-$MLSERVER_VERSION-scikit-learn-$SKLEARN_VERSION"
if [[ -f "$VENV/.stamp" && "$(cat "$VENV/.stamp")" == "$want" ]]; then exit 0; fi
if [[ ! -x "$VENV/bin/python" ]]; then
  say "creating virtualenv $VENV"
  "$UV" venv -q --python "$PYTHON" "$VENV"
fi
say "installing mlserver==$MLSERVER_VERSION, mlserver-sklearn==$MLSERVER_VERSION, scikit-learn==$SKLEARN_VERSION"
"$UV" pip install -q --python "$VENV/bin/python" \
  "mlserver==$MLSERVER_VERSION" "mlserver-sklearn==$MLSERVER_VERSION" "scikit-learn==$SKLEARN_VERSION"
say "checking it starts: mlserver --version"
"$VENV/bin/mlserver" --version >&2
echo "$want" > "$VENV/.stamp"
say "ready: $VENV"
