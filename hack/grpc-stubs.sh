#!/usr/bin/env bash
# Regenerates the checked-in Python stubs of the V2 gRPC protocol
# (operator/modeldeploy/serving/v2grpc/grpc_predict_v2.proto) with a pinned grpcio-tools, in
# a virtualenv of its own under ~/.cache/modeldeploy: the stubs are checked in so that neither
# the wheel's build nor a model image needs grpcio-tools (protoc, ~10 MB of native code).
# The generator's versions are the floors of the `grpc` extra (the stubs check them at import).
# The messages get a descriptor pool of their own rather than protobuf's default one, so that
# they coexist in one process with other copies of the same protocol (tritonclient's
# grpc_service.proto, KServe's), which define the same `inference.*` names.
#   hack/grpc-stubs.sh
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
CACHE="${MODELDEPLOY_CACHE:-$HOME/.cache/modeldeploy}"
GRPCIO_TOOLS_VERSION="1.81.1"  # the newest whose protobuf (6.x) tritonclient accepts
VENV="$CACHE/grpcio-tools-$GRPCIO_TOOLS_VERSION"
say() { printf '[grpc-stubs] %s\n' "$*" >&2; }
UV="$("$ROOT/hack/pyenv.sh" uv)"
if [[ ! -f "$VENV/.stamp" ]]; then
  say "installing grpcio-tools $GRPCIO_TOOLS_VERSION (once)"
  "$UV" venv -q "$VENV"
  "$UV" pip install -q --python "$VENV/bin/python" "grpcio-tools==$GRPCIO_TOOLS_VERSION"
  touch "$VENV/.stamp"
fi
PACKAGE="modeldeploy/serving/v2grpc"
cd "$ROOT/operator"
say "generating $PACKAGE/grpc_predict_v2_pb2{,_grpc}.py{,i}"
"$VENV/bin/python" -m grpc_tools.protoc -I . --python_out=. --pyi_out=. --grpc_python_out=. \
  "$PACKAGE/grpc_predict_v2.proto"
sed -i 's/_descriptor_pool\.Default()/_descriptor_pool.DescriptorPool()/' \
  "$PACKAGE/grpc_predict_v2_pb2.py"
grep -q '_descriptor_pool.DescriptorPool()' "$PACKAGE/grpc_predict_v2_pb2.py"
say "done"
