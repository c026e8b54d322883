#!/usr/bin/env bash
# README's first command: install HAMi (the isolation library is built by the install) and
# start it on this machine in local mode. Arguments go to `hami up` (e.g. --simulate 2xH200).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/python.sh
PY="$(hami_python)"
"$PY" -m pip install --quiet --disable-pip-version-check -e .
bin="$(dirname "$PY")"
[ -x "$bin/hami" ] || bin="$("$PY" -c 'import sysconfig; print(sysconfig.get_path("scripts"))')"
"$bin/hami" up "$@"
if [ "$PY" = .venv/bin/python ]; then
  echo "hami is in .venv: run it as .venv/bin/hami, or first: source .venv/bin/activate"
fi
