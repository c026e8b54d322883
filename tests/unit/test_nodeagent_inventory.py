from __future__ import annotations

from pathlib import Path

import pynvml
import pytest

from services.nodeagent.core.inventory import SharingPolicy, build_inventory, device_set_changed
from services.nodeagent.core.readings import DriverInfo
from services.nodeagent.core.simulate import parse_simulation
from services.nodeagent.devices import NvmlDeviceManager, sysfs_numa_node
from services.nodeagent.recorded_nvml import RecordedNvml
from shared.errors import InvalidRequest


def test_simulation_spec() -> None:
    readings = parse_simulation("2xH200,1xT4", "node-a")
    assert [r.model for r in readings] == ["NVIDIA H200", "NVIDIA H200", "Tesla T4"]
    assert [r.index for r in readings] == [0, 1, 2]
    assert len({r.uuid for r in readings}) == 3
    assert parse_simulation("2xH200,1xT4", "node-a") == readings  # stable across restarts
    assert parse_simulation("2xH200", "node-b")[0].uuid != readings[0].uuid


@pytest.mark.parametrize("spec", ["2H200", "0xH200", "2xB9000", "", "2xH200,", "99xT4"])
def test_simulation_spec_refused(spec: str) -> None:
    with pytest.raises(InvalidRequest, match="--simulate"):
        parse_simulation(spec, "n")


def test_nvml_path_against_the_recorded_h200(shared_dir: Path) -> None:
    nvml = RecordedNvml.from_file(shared_dir / "fixtures" / "nvml-h200.json")
    manager = NvmlDeviceManager(nvml)
    [reading] = manager.devices()
    assert reading.uuid == "GPU-9ca492be-5395-ecc8-f79b-bf4102e7c2b2"
    assert reading.model == "NVIDIA H200"
    assert reading.memory_total_bytes == 150754820096
    assert reading.pci_bus_id == "00000000:00:06.0"
    assert reading.healthy
    # NVML said NotSupported for the NUMA id; the sysfs fallback decides (absent here -> None,
    # or the machine's real value, never an exception).
    assert reading.numa_node is None or reading.numa_node >= 0
    assert manager.driver() == DriverInfo(driver_version="580.159.04", cuda_driver_version=13000)
    [usage] = manager.usage()
    assert usage.memory_used_bytes == 644939776 and usage.utilization_percent == 0.0
    inventory = build_inventory(
        "h200-box",
        "agent",
        [reading],
        SharingPolicy(split_count=4),
        manager.driver(),
        seq=1,
        now=0.0,
        heartbeat_interval_s=5.0,
    )
    [device] = inventory.devices
    assert device.memory_mib == 150754820096 // (1024 * 1024) == 143771
    assert device.split_count == 4 and device.cores == 100
    manager.close()


def test_recorded_errors_are_pynvml_errors(shared_dir: Path) -> None:
    nvml = RecordedNvml.from_file(shared_dir / "fixtures" / "nvml-h200.json")
    with pytest.raises(pynvml.NVMLError_Uninitialized):
        nvml.nvmlDeviceGetCount()
    nvml.nvmlInit()
    with pytest.raises(pynvml.NVMLError_NotSupported):
        nvml.nvmlDeviceGetNumaNodeId(0)


def test_unhealthy_when_memory_query_fails(shared_dir: Path) -> None:
    import json

    recording = json.loads((shared_dir / "fixtures" / "nvml-h200.json").read_text())
    recording["devices"][0]["memory"] = "ERR NVMLError_GpuIsLost: GPU is lost"
    [reading] = NvmlDeviceManager(RecordedNvml(recording)).devices()
    assert not reading.healthy and reading.memory_total_bytes == 0


def test_sysfs_numa(tmp_path: Path) -> None:
    (tmp_path / "0000:00:06.0").mkdir()
    (tmp_path / "0000:00:06.0" / "numa_node").write_text("1\n")
    assert sysfs_numa_node("00000000:00:06.0", tmp_path) == 1
    (tmp_path / "0000:00:06.0" / "numa_node").write_text("-1\n")
    assert sysfs_numa_node("00000000:00:06.0", tmp_path) is None
    assert sysfs_numa_node("00000000:00:07.0", tmp_path) is None


def test_scaling_and_change_detection() -> None:
    readings = parse_simulation("1xT4", "n")
    policy = SharingPolicy(split_count=3, memory_scaling=2.0, core_scaling=1.5)
    one = build_inventory(
        "n", "a", readings, policy, DriverInfo(), seq=1, now=0, heartbeat_interval_s=5
    )
    two = build_inventory(
        "n", "a", readings, policy, DriverInfo(), seq=2, now=5, heartbeat_interval_s=5
    )
    [d] = one.devices
    assert d.memory_mib == 2 * d.physical_memory_mib and d.cores == 150
    assert device_set_changed(None, one) and not device_set_changed(one, two)
    with pytest.raises(ValueError):
        SharingPolicy(split_count=0)
