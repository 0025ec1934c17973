#!/bin/sh
# The one virtualenv an image runs from, built in a Containerfile's build stage from this
# checkout's wheel: /opt/modeldeploy with modeldeploy[EXTRAS] (e.g. "operator",
# "serve,sklearn"), bytecode precompiled (unchecked: the image never changes), pip removed.
# The final stage copies /opt/modeldeploy whole (same base image: same interpreter path).
# An extra CA bundle for pip may be mounted as the build secret `ca-bundle`.
set -eu
extras="$1"
if [ -f /run/secrets/ca-bundle ]; then export PIP_CERT=/run/secrets/ca-bundle; fi
python3 -m venv /opt/modeldeploy
pip=/opt/modeldeploy/bin/pip
$pip wheel --disable-pip-version-check -q --no-deps --wheel-dir /wheels .
$pip install --disable-pip-version-check -q --no-compile "$(ls /wheels/modeldeploy-*.whl)[$extras]"
$pip uninstall -y -q pip
find /opt/modeldeploy -name __pycache__ -prune -exec rm -rf {} +
/opt/modeldeploy/bin/python -m compileall -q -j 0 --invalidation-mode unchecked-hash \
  /opt/modeldeploy/lib
