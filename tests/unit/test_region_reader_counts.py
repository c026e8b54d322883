"""A region that cannot be read is skipped with one log line while it stays so, and counted
(the node's inventory carries the count; telemetry exports it)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from services.nodeagent.core.region import REGION_BYTES
from services.nodeagent.regionfiles import RegionReader


def test_a_malformed_region_is_skipped_once_loudly_and_counted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    reader = RegionReader()
    missing = tmp_path / "none.cache"
    assert reader.read("none", missing) is None and reader.skipped == 0  # not started yet
    junk = tmp_path / "junk.cache"
    junk.write_bytes(b"\x00" * 64)  # no magic: not a region at all
    with caplog.at_level(logging.WARNING, logger="hami.nodeagent.regionfiles"):
        for _ in range(3):
            assert reader.read("junk", junk) is None
    assert reader.skipped == 3
    assert [r.getMessage() for r in caplog.records] == ["region unreadable"]
    assert junk.read_bytes() == b"\x00" * 64  # read only: left as it is


def test_a_corrupt_region_nobody_holds_is_moved_aside(tmp_path: Path) -> None:
    corrupt = tmp_path / "c.cache"
    header = (0x494D4148).to_bytes(4, "little") + (2).to_bytes(4, "little")
    corrupt.write_bytes(header + (999).to_bytes(4, "little") + bytes(REGION_BYTES))
    reader = RegionReader()
    assert reader.read("c", corrupt) is None
    assert reader.skipped == 1 and not corrupt.exists()  # a fresh one is made by the next process
