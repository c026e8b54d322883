"""The node agent's MIG code (services/nodeagent/mig.py) on the simulated MIG NVML over the
recorded H200: the geometry it reads is NVIDIA's documented one, the instances it makes are
where it asked, and NVML's rules hold (taken slices refused, nothing half-made left, nothing
in use taken down)."""

from __future__ import annotations

from pathlib import Path

import pynvml
import pytest

from services.nodeagent.core.inventory import SharingPolicy, device_info
from services.nodeagent.core.simulate import simulated_devices
from services.nodeagent.devices import NvmlDeviceManager, SimulatedDeviceManager
from services.nodeagent.mig import MigManager
from services.nodeagent.recorded_nvml import RecordedNvml
from services.nodeagent.simmig import SimulatedMigNvml
from shared.errors import InvalidRequest
from shared.mig import H200_PROFILES


def recorded(shared_dir: Path) -> RecordedNvml:
    return RecordedNvml.from_file(shared_dir / "fixtures" / "nvml-h200.json")


@pytest.fixture
def nvml(shared_dir: Path) -> SimulatedMigNvml:
    fake = SimulatedMigNvml(recorded(shared_dir))
    fake.nvmlInit()
    return fake


def test_the_geometry_read_is_the_documented_one(nvml: SimulatedMigNvml) -> None:
    manager = MigManager(nvml)
    handle = nvml.nvmlDeviceGetHandleByIndex(0)
    assert manager.enabled(handle)
    read = [p.partition for p in manager.profiles(handle)]
    assert [(p.name, p.slices, p.placements, p.cores) for p in read] == [
        (p.name, p.slices, p.placements, p.cores) for p in H200_PROFILES
    ]


def test_instances_are_made_where_asked_and_taken_down_only_when_idle(
    nvml: SimulatedMigNvml,
) -> None:
    manager = MigManager(nvml)
    handle = nvml.nvmlDeviceGetHandleByIndex(0)
    by_name = {p.name: p for p in manager.profiles(handle)}
    small = manager.create(handle, by_name["1g.18gb"], 6)
    large = manager.create(handle, by_name["4g.71gb"], 0)
    assert (small.start, small.slices, large.start, large.slices) == (6, 1, 0, 4)
    assert small.uuid.startswith("MIG-") and small.uuid != large.uuid
    assert {i.gpu_instance for i in manager.instances(handle)} == {
        small.gpu_instance,
        large.gpu_instance,
    }
    with pytest.raises(pynvml.NVMLError) as taken:  # slices 4-7 hold the 1g at 6
        manager.create(handle, by_name["3g.71gb"], 4)
    assert taken.value.value == pynvml.NVML_ERROR_INSUFFICIENT_RESOURCES
    assert len(manager.instances(handle)) == 2  # nothing half-made left behind
    nvml.run_process(small.uuid, pid=4242)
    assert not manager.destroy(handle, small.gpu_instance)  # in use: kept
    assert any(i.in_use for i in manager.instances(handle))
    nvml.end_process(small.uuid, pid=4242)
    assert manager.destroy(handle, small.gpu_instance)
    assert manager.destroy(handle, small.gpu_instance)  # gone already: still fine
    assert [i.gpu_instance for i in manager.instances(handle)] == [large.gpu_instance]


def test_nvml_refuses_what_the_rules_forbid(nvml: SimulatedMigNvml) -> None:
    handle = nvml.nvmlDeviceGetHandleByIndex(0)
    manager = MigManager(nvml)
    seven = next(p for p in manager.profiles(handle) if p.name == "7g.141gb")
    placement = pynvml.c_nvmlGpuInstancePlacement_t()
    placement.start, placement.size = 4, 8  # not one of its placements
    with pytest.raises(pynvml.NVMLError):
        nvml.nvmlDeviceCreateGpuInstanceWithPlacement(handle, seven.gpu_instance_profile, placement)
    made = manager.create(handle, seven, 0)
    gi = nvml.nvmlDeviceGetGpuInstanceById(handle, made.gpu_instance)
    with pytest.raises(pynvml.NVMLError) as busy:  # compute instances still on it
        nvml.nvmlGpuInstanceDestroy(gi)
    assert busy.value.value == pynvml.NVML_ERROR_IN_USE


def test_a_gpu_without_mig_mode_offers_no_geometry(shared_dir: Path) -> None:
    nvml = SimulatedMigNvml(recorded(shared_dir), enabled=set())
    nvml.nvmlInit()
    manager = MigManager(nvml)
    handle = nvml.nvmlDeviceGetHandleByIndex(0)
    assert not manager.enabled(handle) and manager.profiles(handle) == ()


def test_a_mig_node_offers_the_geometry_with_hand_made_instances_held(
    nvml: SimulatedMigNvml,
) -> None:
    manager = NvmlDeviceManager(nvml, gpu_mode="mig")
    (gpu,) = manager.devices()
    assert (gpu.slices, gpu.slices_held, gpu.isolation) == (8, 0, "partition")
    info = device_info(gpu, SharingPolicy())
    assert info.isolation == "partition" and info.split_count == 7
    assert [p.name for p in info.profiles] == [p.name for p in H200_PROFILES]
    assert manager.mig is not None
    made = manager.mig.create(gpu.uuid, "3g.71gb", 4)  # by hand, say
    (gpu,) = manager.devices()
    assert gpu.slices_held == made.mask == 0xF0


def test_a_hami_core_node_offers_hand_made_instances_whole(nvml: SimulatedMigNvml) -> None:
    manager = NvmlDeviceManager(nvml)
    assert manager.devices() == []  # MIG on, no instance: nothing to share
    assert manager.mig is not None
    parent = nvml.nvmlDeviceGetUUID(nvml.nvmlDeviceGetHandleByIndex(0))
    made = manager.mig.create(parent, "1g.18gb", 0)
    (instance,) = manager.devices()
    assert (instance.uuid, instance.parent_uuid, instance.isolation) == (made.uuid, parent, "whole")
    assert instance.model.endswith("MIG 1g.18gb")
    info = device_info(instance, SharingPolicy())
    assert info.isolation == "whole" and info.split_count == 1


def test_simulated_mig_gpus_run_the_same_code() -> None:
    readings, mig = simulated_devices("1xmig:H200,1xH200", "n1")
    manager = SimulatedDeviceManager(readings, mig, gpu_mode="mig")
    first, second = manager.devices()
    assert first.slices == 8 and second.slices == 0
    assert manager.mig is not None
    made = manager.mig.create(first.uuid, "7g.141gb", 0)
    assert made.uuid.startswith("MIG-") and manager.devices()[0].slices_held == 0xFF
    with pytest.raises(InvalidRequest):
        simulated_devices("1xmig:T4", "n1")
