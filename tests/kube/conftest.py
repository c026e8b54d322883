"""A real control plane for the tests in tests/kube (built or taken from the cache by build.sh).

Package scope, not session: etcd, the apiserver and the controllers stop when tests/kube ends,
so they do not share the two cores of a CI machine with the timing-sensitive native tests that
run after (tests/native's compute-share cells ran under the limit in a CI run while they ran)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from tests.e2e.controlplane.cluster import ControlPlane, start_control_plane


@pytest.fixture(scope="package")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    directory = tmp_path_factory.mktemp("controlplane")
    started = time.monotonic()
    plane = start_control_plane(directory)
    for i in range(3):
        plane.add_node(f"gpu-node-{i}", gpus=4, labels={"gpu": "on"})
    print(f"\ncontrol plane ready in {time.monotonic() - started:.1f}s; logs in {directory}")
    yield plane
    plane.stop()
