"""What a device manager reads from hardware, before any scheduling policy is applied."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class DeviceReading:
    uuid: str
    index: int
    model: str
    memory_total_bytes: int
    pci_bus_id: str = ""
    numa_node: int | None = None
    healthy: bool = True
    kind: str = "nvidia"
    simulated: bool = False
    minor_number: int | None = None
    """The device node's minor (`/dev/nvidia<minor>`); None where NVML does not say."""


@dataclass(frozen=True, slots=True)
class UsageReading:
    uuid: str
    memory_used_bytes: int
    memory_total_bytes: int
    utilization_percent: float | None


@dataclass(frozen=True, slots=True)
class DriverInfo:
    driver_version: str = ""
    cuda_driver_version: int = 0
