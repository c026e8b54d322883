#!/usr/bin/env bash
# What the observability tests run against: Jaeger (v2, the all-in-one binary, OTLP in and
# its HTTP query API out) built from the Go module proxy into a cache keyed by version, and
# Debian's prometheus and chromium (headless, for the web page). Later runs build nothing.
set -euo pipefail

JAEGER_VERSION="${HAMI_JAEGER_VERSION:-1.76.0}"
CACHE_ROOT="${HAMI_K8S_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/hami-controlplane}"
OUT="$CACHE_ROOT/jaeger-$JAEGER_VERSION"
DEBIAN_PACKAGES=(prometheus chromium)

if ! { [ -x /usr/bin/prometheus ] && [ -x /usr/bin/chromium ]; }; then
  command -v apt-get >/dev/null || { echo "build.sh: apt-get is needed for ${DEBIAN_PACKAGES[*]}" >&2; exit 1; }
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    "${DEBIAN_PACKAGES[@]}" >/dev/null
  # Debian starts the packaged Prometheus as a service; the tests run their own.
  if command -v systemctl >/dev/null && systemctl is-active --quiet prometheus 2>/dev/null; then
    systemctl stop prometheus || true
  fi
fi

if [ ! -x "$OUT/jaeger" ]; then
  command -v go >/dev/null || { echo "build.sh: go is needed to build jaeger" >&2; exit 1; }
  work="$(mktemp -d)"
  trap 'rm -rf "$work"' EXIT
  cd "$work"
  # Jaeger's go.mod pins sarama by a replace directive, which `go install` refuses: build it
  # from a module of ours that carries the same directive.
  modfile="$(go mod download -json "github.com/jaegertracing/jaeger@v$JAEGER_VERSION" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')"
  {
    echo "module hami.local/jaeger"
    echo
    echo "go $(go env GOVERSION | sed 's/^go//; s/\.[0-9]*$//')"
    echo
    grep '^replace ' "$modfile" || true
  } > go.mod
  go get -tool "github.com/jaegertracing/jaeger/cmd/jaeger@v$JAEGER_VERSION" >/dev/null 2>&1
  mkdir -p "$OUT"
  CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$OUT/jaeger.new" \
    github.com/jaegertracing/jaeger/cmd/jaeger
  mv "$OUT/jaeger.new" "$OUT/jaeger"
fi
echo "$OUT"
