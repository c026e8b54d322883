# Sourced by scripts/up.sh and scripts/check.sh: `hami_python` prints the Python to install HAMi
# with. This machine's python3 where it may install packages; where it may not (PEP 668: Debian
# 12, Ubuntu 24.04 mark the system Python externally managed) a virtual environment in .venv,
# made here, with pip bootstrapped from PyPI when the system leaves ensurepip out.
hami_python() {
  local py="${PYTHON:-python3}"
  if ! "$py" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    echo "HAMi needs Python 3.11 or newer ($py is $("$py" -V 2>&1))" >&2
    return 1
  fi
  if "$py" - <<'PY' 2>/dev/null && "$py" -m pip --version >/dev/null 2>&1; then
import os, sys, sysconfig
managed = os.path.exists(os.path.join(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED"))
sys.exit(0 if sys.prefix != sys.base_prefix or not managed else 1)
PY
    echo "$py"
    return 0
  fi
  if [ ! -x .venv/bin/python ]; then
    echo "system Python is externally managed: installing into .venv" >&2
    "$py" -m venv .venv >/dev/null 2>&1 || { rm -rf .venv; "$py" -m venv --without-pip .venv >&2; } || return 1
  fi
  if ! .venv/bin/python -m pip --version >/dev/null 2>&1; then
    .venv/bin/python - <<'PY' >&2 || { echo "no pip for .venv: install python3-venv" >&2; return 1; }
# No ensurepip here: fetch pip's wheel from PyPI and let it install itself.
import json, os, subprocess, sys, tempfile, urllib.request
meta = json.load(urllib.request.urlopen("https://pypi.org/pypi/pip/json", timeout=60))
url = next(f["url"] for f in meta["urls"] if f["packagetype"] == "bdist_wheel")
wheel = os.path.join(tempfile.mkdtemp(), url.rsplit("/", 1)[1])
urllib.request.urlretrieve(url, wheel)
subprocess.check_call([sys.executable, os.path.join(wheel, "pip"), "install", "-q", wheel])
PY
  fi
  echo .venv/bin/python
}
