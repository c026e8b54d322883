#!/usr/bin/env bash
# The whole test suite: install, lint, type-check, test. README's second command and .ci/run.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install --quiet --disable-pip-version-check -e '.[test]'
python3 -m ruff check .
python3 -m mypy
python3 -m pytest "$@"
