"""The GPU checks, run only where a real NVIDIA GPU answers NVML; skipped elsewhere."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.gpu


def _has_gpu() -> bool:
    try:
        import pynvml

        pynvml.nvmlInit()
        count = int(pynvml.nvmlDeviceGetCount())
        pynvml.nvmlShutdown()
        return count > 0
    except Exception:
        return False


@pytest.mark.skipif(not _has_gpu(), reason="needs an NVIDIA GPU (NVML found none)")
def test_gpu_checks(tmp_path: Path) -> None:
    script = Path(__file__).with_name("run.sh")
    result = subprocess.run(
        ["bash", str(script)],
        env={**os.environ, "OUT": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    table = (tmp_path / "results.md").read_text()
    assert "refused_past_limit=False" not in table
    for broken in (
        "all_ours=False",
        "charged_while_mapped=False",
        "retained_charged=False",
        "charged_while_held=False",
        "within_limit=False",
    ):
        assert broken not in table, table
