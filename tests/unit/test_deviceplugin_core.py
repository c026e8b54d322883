"""What the kubelet is told: virtual devices, preferred ids, and each container's spec."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.nodeagent.core.containerspec import (
    HostLayout,
    container_spec,
    limits_text,
    preload_text,
)
from services.nodeagent.core.containerusage import RegionOwner, container_samples, gone
from services.nodeagent.core.handshake import Assignment
from services.nodeagent.core.readings import DeviceReading
from services.nodeagent.core.region import RegionReading
from services.nodeagent.core.virtual import physical_of, preferred, virtual_devices, virtual_id
from shared.errors import InvalidRequest
from shared.schemas.placement import DeviceGrant

UUID = "GPU-0fc3a1b2-1111-2222-3333-444455556666"


def reading(uuid: str, index: int, **kw: object) -> DeviceReading:
    return DeviceReading(
        uuid=uuid,
        index=index,
        model="NVIDIA H200",
        memory_total_bytes=1 << 37,
        **kw,  # type: ignore[arg-type]
    )


def test_each_device_is_split_count_virtual_devices_with_its_numa_node() -> None:
    devices = virtual_devices(
        [reading("GPU-b", 1, numa_node=1, healthy=False), reading("GPU-a", 0, numa_node=0)], 3
    )
    assert [d.id for d in devices] == [f"GPU-a-{i}" for i in range(3)] + [
        f"GPU-b-{i}" for i in range(3)
    ]
    assert {(d.physical, d.healthy, d.numa_node) for d in devices} == {
        ("GPU-a", True, 0),
        ("GPU-b", False, 1),
    }
    assert physical_of(virtual_id(UUID, 9)) == UUID and len(virtual_id(UUID, 9)) <= 63


def test_preferred_ids_come_from_distinct_cards_honouring_must_include() -> None:
    available = [f"GPU-{c}-{i}" for c in "abc" for i in range(3)] + ["GPU-d-0"]
    chosen = preferred(available, ["GPU-b-2"], 3)
    assert chosen[0] == "GPU-b-2" and len({physical_of(v) for v in chosen}) == 3
    assert preferred(["GPU-a-0", "GPU-a-1"], [], 2) == ["GPU-a-0", "GPU-a-1"]


def assignment(*grants: DeviceGrant, priority: int = 1) -> Assignment:
    return Assignment(
        namespace="default",
        pod="p",
        pod_uid="uid-1",
        container_index=0,
        container="main",
        grants=grants,
        priority=priority,
        allocation_id="alloc-1",
        entry=(),
    )


def grant(uuid: str, mem: int, cores: int) -> DeviceGrant:
    return DeviceGrant(uuid=uuid, index=0, model="H200", memory_mib=mem, cores=cores)


LAYOUT = HostLayout(root=Path("/usr/local/vgpu"), library=Path("/opt/hami/libvgpu.so"))


def test_container_spec_carries_hamis_environment_mounts_and_device_nodes() -> None:
    readings = {
        "GPU-a": reading("GPU-a", 0, minor_number=4),
        "GPU-b": reading("GPU-b", 1, minor_number=7),
    }
    spec = container_spec(
        assignment(grant("GPU-a", 3000, 30), grant("GPU-b", 4000, 30), priority=0),
        readings,
        HostLayout(LAYOUT.root, LAYOUT.library, core_policy="force", oversubscribe=True),
        ["/dev/nvidiactl", "/dev/nvidia-uvm"],
    )
    assert spec.envs == {
        "NVIDIA_VISIBLE_DEVICES": "GPU-a,GPU-b",
        "CUDA_DEVICE_MEMORY_LIMIT_0": "3000m",
        "CUDA_DEVICE_MEMORY_LIMIT_1": "4000m",
        "CUDA_DEVICE_SM_LIMIT": "30",
        "CUDA_DEVICE_MEMORY_SHARED_CACHE": "/usr/local/vgpu/region/vgpu.cache",
        "CUDA_TASK_PRIORITY": "0",
        "CUDA_OVERSUBSCRIBE": "true",
        "GPU_CORE_UTILIZATION_POLICY": "force",
        "HAMI_ALLOCATION_ID": "alloc-1",
        "HAMI_LIMITS_FILE": "/usr/local/vgpu/limits",
    }
    assert {(m.container_path, m.host_path, m.read_only) for m in spec.mounts} == {
        ("/usr/local/vgpu/libvgpu.so", "/opt/hami/libvgpu.so", True),
        ("/etc/ld.so.preload", "/usr/local/vgpu/ld.so.preload", True),
        ("/usr/local/vgpu/region", "/usr/local/vgpu/containers/uid-1_main", False),
        ("/usr/local/vgpu/limits", "/usr/local/vgpu/limits/uid-1_main", True),
    }
    # The limits file repeats the limits, not the bookkeeping: the library reads these names.
    assert limits_text(spec).splitlines()[1:] == [
        "CUDA_DEVICE_MEMORY_LIMIT_0=3000m",
        "CUDA_DEVICE_MEMORY_LIMIT_1=4000m",
        "CUDA_DEVICE_MEMORY_SHARED_CACHE=/usr/local/vgpu/region/vgpu.cache",
        "CUDA_DEVICE_SM_LIMIT=30",
        "CUDA_OVERSUBSCRIBE=true",
        "CUDA_TASK_PRIORITY=0",
        "GPU_CORE_UTILIZATION_POLICY=force",
    ]
    assert [(d.container_path, d.host_path) for d in spec.devices] == [
        ("/dev/nvidia4", "/dev/nvidia4"),
        ("/dev/nvidia7", "/dev/nvidia7"),
        ("/dev/nvidiactl", "/dev/nvidiactl"),
        ("/dev/nvidia-uvm", "/dev/nvidia-uvm"),
    ]
    assert preload_text() == "/usr/local/vgpu/libvgpu.so\n"


def test_simulated_devices_get_stand_in_device_nodes() -> None:
    spec = container_spec(
        assignment(grant("GPU-s", 1000, 0)),
        {"GPU-s": reading("GPU-s", 2, simulated=True)},
        LAYOUT,
        ["/dev/nvidiactl"],
    )
    assert [(d.container_path, d.host_path) for d in spec.devices] == [
        ("/dev/nvidia2", "/dev/null"),
        ("/dev/nvidiactl", "/dev/null"),
    ]
    assert "CUDA_OVERSUBSCRIBE" not in spec.envs
    assert spec.envs["GPU_CORE_UTILIZATION_POLICY"] == "default"


def test_an_unhealthy_or_vanished_device_is_refused() -> None:
    with pytest.raises(InvalidRequest, match="unhealthy"):
        container_spec(
            assignment(grant("GPU-a", 1, 0)), {"GPU-a": reading("GPU-a", 0, healthy=False)}, LAYOUT
        )
    with pytest.raises(InvalidRequest, match="not on this node"):
        container_spec(assignment(grant("GPU-a", 1, 0)), {}, LAYOUT)


OWNER = RegionOwner(
    namespace="ns",
    pod="p",
    pod_uid="u",
    container="c",
    allocation_id="a",
    devices=["GPU-a", "GPU-b"],
    memory_mib=[3000, 1000],
)


def region(used: tuple[int, ...], busy: tuple[int, ...]) -> RegionReading:
    pad = (0,) * 14
    return RegionReading(
        limit_bytes=(0,) * 16,
        used_bytes=used + pad,
        oversub_bytes=(0,) * 16,
        busy_ns=busy + pad,
        sm_limit=30,
        processes=2,
    )


def test_container_samples_name_the_pod_and_measure_utilisation_between_readings() -> None:
    from services.nodeagent.core.containerusage import Busy

    before = Busy(at=10.0, busy_ns=(0,) * 16)
    samples, after = container_samples(
        OWNER, region((5 << 20, 0), (500_000_000, 0)), "vm", 11.0, before
    )
    assert [(s.device_uuid, s.memory_used_bytes, s.memory_limit_bytes) for s in samples] == [
        ("GPU-a", 5 << 20, 3000 << 20),
        ("GPU-b", 0, 1000 << 20),
    ]
    assert samples[0].utilization_percent == pytest.approx(50.0)
    assert {(s.pod_namespace, s.pod_name, s.pod_uid, s.container) for s in samples} == {
        ("ns", "p", "u", "c")
    }
    assert all(s.allocation_id == "a" and s.processes == 2 for s in samples)
    # The last kernel: when the device's GPU time last grew; the idle one has not run yet.
    assert [s.last_kernel_at for s in samples] == [11.0, None]
    later, _ = container_samples(OWNER, region((5 << 20, 0), (500_000_000, 0)), "vm", 15.0, after)
    assert [s.last_kernel_at for s in later] == [11.0, None] and later[0].utilization_percent == 0
    idle, kept = container_samples(OWNER, None, "vm", 11.0, None)
    assert [s.memory_used_bytes for s in idle] == [0, 0] and idle[0].processes == 0
    assert kept is None


def test_regions_of_gone_containers_are_removed_after_the_grace_period() -> None:
    owners = {"u_c": OWNER}
    listed = {("ns", "p", "c")}
    assert gone(owners, {"u_c": 999.0, "x_y": 999.0, "new_z": 1.0}, listed, 60) == ["x_y"]
    assert gone(owners, {"u_c": 999.0}, set(), 60) == ["u_c"]
    assert gone(owners, {"u_c": 5.0}, set(), 60) == []
