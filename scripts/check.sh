#!/usr/bin/env bash
# The whole test suite: install, lint, type-check, test. README's second command and .ci/run.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/python.sh
PY="$(hami_python)"
"$PY" -m pip install --quiet --disable-pip-version-check -e '.[test]'
"$PY" -m ruff check .
"$PY" -m mypy
# The isolation library and its test driver, then its tests once under ASan and UBSan.
make -C native -s PYTHON="$PY" all
make -C native -s PYTHON="$PY" sanitize
# The Kubernetes control plane for tests/kube: built once into a cache, reused after.
bash tests/e2e/controlplane/build.sh >/dev/null
# Jaeger (built once into the same cache), Debian's prometheus and chromium: the observability
# tests' collaborators.
bash tests/e2e/observability/build.sh >/dev/null
"$PY" -m pytest "$@"
