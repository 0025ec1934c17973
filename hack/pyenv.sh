#!/usr/bin/env bash
# The project's virtualenv, one per checkout (an editable install points at its checkout, so
# two clones must never share one), kept outside the repo. uv makes a fresh one take seconds
# from its download cache; pip installs uv itself once.
#   hack/pyenv.sh          ensure this checkout's venv is current (re-installs when pyproject.toml changes)
#   hack/pyenv.sh path     print its directory
#   hack/pyenv.sh uv       print the uv it uses (installed once), e.g. for hack/lowest-deps.sh
#   hack/pyenv.sh bench [path]  the same for a second venv with the `bench` extra instead of
#                          `dev` (Evidently for bench/bench_detection.py; it needs pandas < 3),
#                          kept apart so that the dev venv and CI never install it
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
CACHE="${MODELDEPLOY_CACHE:-$HOME/.cache/modeldeploy}"
PYTHON="${PYTHON:-python3}"
UV_VERSION="0.13.9"
PY_TAG="$("$PYTHON" -c 'import sys; print(f"py{sys.version_info[0]}{sys.version_info[1]}")')"
VENV="$CACHE/venvs/$PY_TAG-$(printf '%s' "$ROOT" | sha256sum | cut -c1-10)"
EXTRAS="dev"
if [[ "${1:-}" == bench ]]; then
  VENV="$VENV-bench"
  EXTRAS="operator,bench"
  shift
fi
[[ "${1:-}" == path ]] && { echo "$VENV"; exit 0; }

say() { printf '[pyenv] %s\n' "$*" >&2; }
UV_HOME="$CACHE/uv-$UV_VERSION"
if [[ ! -f "$UV_HOME/.stamp" ]]; then
  say "installing uv $UV_VERSION (once)"
  "$PYTHON" -m venv "$UV_HOME"
  "$UV_HOME/bin/pip" install -q --disable-pip-version-check "uv==$UV_VERSION"
  touch "$UV_HOME/.stamp"
fi
UV="$UV_HOME/bin/uv"
[[ "${1:-}" == uv ]] && { echo "$UV"; exit 0; }

# Venvs of checkouts that no longer exist (e.g. CI's clones) are removed.
for other in "$CACHE"/venvs/*/; do
  if [[ -f "$other/.root" && ! -d "$(cat "$other/.root")" ]]; then rm -rf "$other"; fi
done

# The layout counts too: bytecode is compiled at install time because PYTHONDONTWRITEBYTECODE
# may be set (it is on these machines), and then every process compiled scikit-learn and
# scipy anew (~4 s per model server start).
want="$(sha256sum < "$ROOT/pyproject.toml" | cut -c1-16)-bytecode-$EXTRAS"
if [[ -f "$VENV/.stamp" && "$(cat "$VENV/.stamp")" == "$want" ]]; then exit 0; fi
if [[ ! -x "$VENV/bin/python" ]]; then
  say "creating virtualenv $VENV"
  "$UV" venv -q --python "$PYTHON" "$VENV"
  echo "$ROOT" > "$VENV/.root"
fi
say "installing modeldeploy[$EXTRAS] (editable) and its dependencies"
"$UV" pip install -q --python "$VENV/bin/python" -e "$ROOT[$EXTRAS]"
say "compiling bytecode"
"$VENV/bin/python" -m compileall -q -j 0 "$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_path("purelib"))')" \
  >/dev/null 2>&1 || true  # a few packages ship files for other Python versions
echo "$want" > "$VENV/.stamp"
say "ready: $VENV"
