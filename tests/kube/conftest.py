"""A real control plane for the whole session (built or taken from the cache by build.sh)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from tests.e2e.controlplane.cluster import ControlPlane, start_control_plane


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    directory = tmp_path_factory.mktemp("controlplane")
    started = time.monotonic()
    plane = start_control_plane(directory)
    for i in range(3):
        plane.add_node(f"gpu-node-{i}", gpus=4, labels={"gpu": "on"})
    print(f"\ncontrol plane ready in {time.monotonic() - started:.1f}s; logs in {directory}")
    yield plane
    plane.stop()
