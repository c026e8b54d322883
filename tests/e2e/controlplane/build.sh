#!/usr/bin/env bash
# Build the Kubernetes binaries the e2e tests run against (kube-apiserver, kube-scheduler,
# kube-controller-manager, kubelet, kubectl, etcd, kwok; containerd with its shim and ctr) from the Go module proxy, into a cache outside the
# repository keyed by version, and install the Debian packages the kubelet tests need (runc, CNI
# plugins, a static busybox). Later runs find everything there and build nothing.
set -euo pipefail

K8S_VERSION="${HAMI_K8S_VERSION:-1.36.3}"
ETCD_VERSION="${HAMI_ETCD_VERSION:-3.6.16}"
KWOK_VERSION="${HAMI_KWOK_VERSION:-0.7.0}"
CONTAINERD_VERSION="${HAMI_CONTAINERD_VERSION:-2.2.9}"
CACHE_ROOT="${HAMI_K8S_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/hami-controlplane}"
OUT="$CACHE_ROOT/k8s-$K8S_VERSION-etcd-$ETCD_VERSION-kwok-$KWOK_VERSION"
CTR_OUT="$CACHE_ROOT/containerd-$CONTAINERD_VERSION"
K8S_BINARIES=(kube-apiserver kube-scheduler kube-controller-manager kubelet kubectl)
BINARIES=("${K8S_BINARIES[@]}" etcd kwok)
CTR_BINARIES=(containerd containerd-shim-runc-v2 ctr)
DEBIAN_PACKAGES=(runc containernetworking-plugins busybox-static)

have_all() {
  for b in "${BINARIES[@]}"; do [ -x "$OUT/$b" ] || return 1; done
}
have_containerd() {
  for b in "${CTR_BINARIES[@]}"; do [ -x "$CTR_OUT/$b" ] || return 1; done
}
have_packages() {
  [ -x /usr/sbin/runc ] && [ -x /usr/lib/cni/bridge ] && [ -x /bin/busybox ]
}

# Debian's runc (runc needs cgo and libseccomp to build), CNI plugins and busybox for test images.
if ! have_packages; then
  command -v apt-get >/dev/null || { echo "build.sh: apt-get is needed for ${DEBIAN_PACKAGES[*]}" >&2; exit 1; }
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    "${DEBIAN_PACKAGES[@]}" >/dev/null
fi

# containerd (with CDI, unlike Debian's 1.6) and its runc shim.
if ! have_containerd; then
  command -v go >/dev/null || { echo "build.sh: go is needed to build containerd" >&2; exit 1; }
  mkdir -p "$CTR_OUT"
  for cmd in "${CTR_BINARIES[@]}"; do
    GOBIN="$CTR_OUT" CGO_ENABLED=0 GOFLAGS=-mod=mod go install -trimpath -tags no_btrfs \
      -ldflags "-s -w -X github.com/containerd/containerd/v2/version.Version=v$CONTAINERD_VERSION" \
      "github.com/containerd/containerd/v2/cmd/$cmd@v$CONTAINERD_VERSION"
  done
  have_containerd
fi

# The kubelet tests find containerd through the control plane's directory.
finish() {
  ln -sfn "$CTR_OUT" "$OUT/containerd"
  echo "$OUT"
  exit 0
}
if have_all; then
  finish
fi

command -v go >/dev/null || { echo "build.sh: go is needed to build the control plane" >&2; exit 1; }
mkdir -p "$OUT"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
start=$(date +%s)
staging="0.${K8S_VERSION#1.}"

# k8s.io/kubernetes points its staging modules at ./staging; pin each to the matching v0.x.y.
# Only the binaries not in the cache yet are built (a binary added here costs one build, not all).
missing=()
for b in "${K8S_BINARIES[@]}"; do [ -x "$OUT/$b" ] || missing+=("$b"); done
if [ "${#missing[@]}" -gt 0 ]; then
  go mod download -json "k8s.io/kubernetes@v$K8S_VERSION" > "$work/k8s.json"
  modfile="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["GoMod"])' "$work/k8s.json")"
  replaces="$(sed -n 's#^[[:space:]]*\(k8s.io/[a-z0-9-]*\) => ./staging/.*#\1#p' "$modfile" | sort -u)"

  mkdir -p "$work/k8s" && cd "$work/k8s"
  {
    echo "module hami.local/controlplane"
    echo
    echo "go $(go env GOVERSION | sed 's/^go//; s/\.[0-9]*$//')"
    echo
    echo "require k8s.io/kubernetes v$K8S_VERSION"
    echo
    for m in $replaces; do echo "replace $m => $m v$staging"; done
  } > go.mod
  {
    echo "//go:build tools"
    echo
    echo "package tools"
    echo
    echo "import ("
    for cmd in "${missing[@]}"; do echo "	_ \"k8s.io/kubernetes/cmd/$cmd\""; done
    echo ")"
  } > tools.go
  go mod tidy -e >/dev/null 2>&1 || true
  targets=()
  for cmd in "${missing[@]}"; do targets+=("k8s.io/kubernetes/cmd/$cmd@v$K8S_VERSION"); done
  go get "${targets[@]}"
  for cmd in "${missing[@]}"; do
    CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X k8s.io/component-base/version.gitVersion=v$K8S_VERSION" \
      -o "$OUT/$cmd" "k8s.io/kubernetes/cmd/$cmd"
  done
fi

# etcd: a two-line main over the server module (the etcd repository root module cannot be
# `go install`ed: it uses replace directives).
if [ ! -x "$OUT/etcd" ]; then
mkdir -p "$work/etcd" && cd "$work/etcd"
cat > go.mod <<MOD
module hami.local/etcd

go $(go env GOVERSION | sed 's/^go//; s/\.[0-9]*$//')
MOD
cat > main.go <<'GO'
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
GO
go get "go.etcd.io/etcd/server/v3@v$ETCD_VERSION"
go mod tidy
CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$OUT/etcd" .
fi

# kwok: simulated nodes and pods.
if [ ! -x "$OUT/kwok" ]; then
  mkdir -p "$work/kwok" && cd "$work/kwok"
  GOBIN="$OUT" CGO_ENABLED=0 go install "sigs.k8s.io/kwok/cmd/kwok@v$KWOK_VERSION"
fi

have_all
echo "built in $(( $(date +%s) - start ))s" >> "$OUT/BUILD_INFO"
finish
