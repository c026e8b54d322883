"""Build the native library and the test driver once per session."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

NATIVE = Path(__file__).resolve().parents[2] / "native"
BUILD = NATIVE / "build"


@pytest.fixture(scope="session")
def native_build() -> Path:
    result = subprocess.run(
        ["make", "-C", str(NATIVE), "-s", "all"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    return BUILD
