"""The node's host CPU and memory in the inventory: its allocatable, and the requests of its
pods that hold no HAMi allocation (the allocator counts those from its ledger)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from services.nodeagent.core.hostfigures import HostFigures, node_figures
from services.nodeagent.core.inventory import SharingPolicy, build_inventory
from services.nodeagent.core.readings import DriverInfo
from services.nodeagent.hostresources import NodeHostReader, machine_figures
from services.nodeagent.nodeobject import READ_EVERY_S, NodeObject
from shared.errors import Unavailable
from shared.vendorkinds import VENDOR_KINDS

KINDS = [k.resources for k in VENDOR_KINDS.kinds]


def pod(cpu: str, memory: str, phase: str = "Running", **extra: str) -> dict[str, Any]:
    return {
        "metadata": {"name": f"p-{cpu}"},
        "spec": {
            "containers": [{"resources": {"requests": {"cpu": cpu, "memory": memory, **extra}}}]
        },
        "status": {"phase": phase},
    }


NODE = {"status": {"allocatable": {"cpu": "63500m", "memory": "257690Mi", "pods": "110"}}}


def test_other_pods_requests_count_and_hami_pods_and_finished_pods_do_not() -> None:
    pods = [
        pod("2", "4Gi"),
        pod("500m", "512Mi", phase="Pending"),
        pod("8", "16Gi", phase="Succeeded"),  # done: holds nothing
        pod("4", "8Gi", **{"nvidia.com/gpu": "1"}),  # HAMi's: the allocator counts it
        pod("4", "8Gi", **{"huawei.com/Ascend910B3": "1"}),  # a vendor kind's, likewise
        {"spec": {"containers": [{"resources": {"requests": {"cpu": "lots"}}}]}},  # unreadable
    ]
    figures = node_figures(NODE, pods, KINDS)
    assert figures == HostFigures(63500, 257690, 2500, 4608)
    assert node_figures({}, [], KINDS) == HostFigures(None, None)
    broken = {"status": {"allocatable": {"cpu": "many", "memory": "1e999999999"}}}
    assert node_figures(broken, [], KINDS) == HostFigures(None, None)


def test_the_inventory_carries_the_figures(tmp_path: Path) -> None:
    inventory = build_inventory(
        "n1",
        "a",
        [],
        SharingPolicy(),
        DriverInfo("", 0),
        seq=1,
        now=0.0,
        heartbeat_interval_s=5.0,
        host=HostFigures(64000, 262144, 2000, 4096),
    )
    assert (inventory.cpu_milli, inventory.memory_mib) == (64000, 262144)
    assert (inventory.others_cpu_milli, inventory.others_memory_mib) == (2000, 4096)
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       16384000 kB\nMemFree:  1 kB\n")
    machine = machine_figures(meminfo)
    assert machine.memory_mib == 16000 and machine.cpu_milli and machine.cpu_milli >= 1000
    assert machine_figures(tmp_path / "missing").memory_mib is None


class Kube:
    def __init__(self) -> None:
        self.calls = 0
        self.fail = False

    async def get_node(self, name: str) -> dict[str, Any]:
        self.calls += 1
        if self.fail:
            raise Unavailable("API server away")
        return NODE

    async def list_pods(self, *, field_selector: str = "") -> tuple[list[Any], str]:
        assert field_selector == "spec.nodeName=n1"
        return [pod("1", "1Gi")], "1"


def test_the_reader_reads_at_most_every_so_often_and_keeps_the_last_figures() -> None:
    kube, now = Kube(), [0.0]
    node = NodeObject(kube, "n1", clock=lambda: now[0])  # type: ignore[arg-type]
    reader = NodeHostReader(node, KINDS)
    first = asyncio.run(reader.read())
    assert first == HostFigures(63500, 257690, 1000, 1024) and kube.calls == 1
    now[0] += READ_EVERY_S / 2
    assert asyncio.run(reader.read()) == first and kube.calls == 1
    now[0] += READ_EVERY_S
    kube.fail = True
    assert asyncio.run(reader.read()) == first and kube.calls == 2  # away: the last figures
