"""The node agent's region reader against regions the real library wrote (contract test)."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.nodeagent.core.region import REGION_BYTES, RegionUnreadable, read_region
from tests.native.test_isolation import MB, spawn


def test_the_reader_sees_what_the_library_accounts(native_build: Path, tmp_path: Path) -> None:
    cache = tmp_path / "vgpu.cache"
    env = {
        "CUDA_DEVICE_MEMORY_LIMIT_0": "64m",
        "CUDA_DEVICE_SM_LIMIT": "30",
        "CUDA_DEVICE_MEMORY_SHARED_CACHE": str(cache),
    }
    holder = spawn(native_build, "grab", str(8 * MB), "3", **env)
    assert holder.stdout is not None
    assert holder.stdout.readline().strip() == "got 3"
    reading = read_region(cache.read_bytes())
    holder.kill()
    holder.communicate()
    assert cache.stat().st_size == REGION_BYTES
    assert reading.limit_bytes[0] == 64 * MB and reading.used_bytes[0] == 24 * MB
    assert reading.used_bytes[1:] == (0,) * 15
    assert reading.sm_limit == 30 and reading.processes == 1


def test_anything_else_is_unreadable(tmp_path: Path) -> None:
    good = bytearray(REGION_BYTES)
    good[0:16] = (
        (0x494D4148).to_bytes(4, "little")
        + (2).to_bytes(4, "little")
        + (768).to_bytes(4, "little")
        + (1024).to_bytes(4, "little")
    )
    read_region(bytes(good))
    for bad in (
        b"",
        bytes(REGION_BYTES),
        bytes(good[:-1]),
        bytes(good[:4]) + b"\x03" + bytes(good[5:]),
    ):
        with pytest.raises(RegionUnreadable):
            read_region(bad)


def test_a_corrupt_region_is_recreated_only_when_nobody_holds_it(
    native_build: Path, tmp_path: Path
) -> None:
    from services.nodeagent.core.region import RegionCorrupt
    from services.nodeagent.regionfiles import live_holders, recreate_if_unheld

    cache = tmp_path / "vgpu.cache"
    env = {"CUDA_DEVICE_MEMORY_LIMIT_0": "64m", "CUDA_DEVICE_MEMORY_SHARED_CACHE": str(cache)}
    holder = spawn(native_build, "grab", str(8 * MB), "2", **env)
    assert holder.stdout is not None and holder.stdout.readline().strip() == "got 2"
    assert live_holders(cache) == 1
    data = bytearray(cache.read_bytes())
    data[12:16] = (9).to_bytes(4, "little")  # scribbled over while its holder lives
    cache.write_bytes(bytes(data))
    with pytest.raises(RegionCorrupt):
        read_region(cache.read_bytes())
    assert not recreate_if_unheld(cache)  # a second region would double the container's limit
    holder.kill()
    holder.communicate()
    assert live_holders(cache) == 0
    assert recreate_if_unheld(cache)
    assert not cache.exists() and len(list(tmp_path.glob("vgpu.cache.corrupt-*"))) == 1
