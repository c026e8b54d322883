#!/usr/bin/env bash
# Regenerate the committed Python stubs of the kubelet's gRPC APIs (device plugin v1beta1,
# pod resources v1, DRA v1, plugin registration v1) from the protos in k8s.io/kubelet, fetched through the Go module proxy.
# Needs go and grpcio-tools (pip install grpcio-tools); the stubs need only protobuf and grpcio.
set -euo pipefail
KUBELET_API_VERSION="${KUBELET_API_VERSION:-v0.36.3}"
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../../.." && pwd)"
src="$(go mod download -json "k8s.io/kubelet@$KUBELET_API_VERSION" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
# Each proto is called api.proto: compile from one root with distinct paths, or protobuf's
# descriptor pool refuses the second (duplicate file name).
for api in deviceplugin/v1beta1 podresources/v1 dra/v1 pluginregistration/v1; do
  mkdir -p "$work/services/nodeagent/kubeletapi/$api"
  cp "$src/pkg/apis/$api/api.proto" "$work/services/nodeagent/kubeletapi/$api/api.proto"
  "${PYTHON:-python3}" -m grpc_tools.protoc -I "$work" --python_out="$repo" --pyi_out="$repo" \
    --grpc_python_out="$repo" "$work/services/nodeagent/kubeletapi/$api/api.proto"
  touch "$here/$api/__init__.py" "$here/${api%%/*}/__init__.py"
done
echo "k8s.io/kubelet $KUBELET_API_VERSION" > "$here/VERSION"
