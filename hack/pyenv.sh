#!/usr/bin/env bash
# Creates (once) the project's virtualenv outside the repo and installs modeldeploy with all
# extras in editable mode. Skips pip when pyproject.toml and the checkout path are unchanged.
#   hack/pyenv.sh          ensure the venv; prints nothing but progress
#   hack/pyenv.sh path     print the venv's directory
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
CACHE="${MODELDEPLOY_CACHE:-$HOME/.cache/modeldeploy}"
PYTHON="${PYTHON:-python3}"
VENV="$CACHE/venv-$("$PYTHON" -c 'import sys; print(f"py{sys.version_info[0]}{sys.version_info[1]}")')"
[[ "${1:-}" == path ]] && { echo "$VENV"; exit 0; }

say() { printf '[pyenv] %s\n' "$*" >&2; }
want="$(cat "$ROOT/pyproject.toml" | sha256sum | cut -c1-16)-$(echo "$ROOT" | sha256sum | cut -c1-8)"
if [[ -f "$VENV/.stamp" && "$(cat "$VENV/.stamp")" == "$want" ]]; then exit 0; fi
if [[ ! -x "$VENV/bin/python" ]]; then
  say "creating virtualenv $VENV"
  "$PYTHON" -m venv "$VENV"
  "$VENV/bin/pip" install -q --upgrade pip
fi
say "installing modeldeploy[dev] (editable) and its dependencies"
"$VENV/bin/pip" install -q --disable-pip-version-check -e "$ROOT[dev]"
echo "$want" > "$VENV/.stamp"
say "ready: $VENV"
