"""What a device manager reads from hardware, before any scheduling policy is applied."""

from __future__ import annotations

from dataclasses import dataclass

from shared.schemas.inventory import Isolation, MigInstanceInfo, PartitionProfile


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
    isolation: Isolation | None = None
    """How it is shared where the hardware decides, not its kind: "partition" for a GPU in
    MIG mode on a node in `mig` mode (its geometry below), "whole" for a MIG instance made by
    hand on a node in `hami-core` mode; None: its kind's."""
    profiles: tuple[PartitionProfile, ...] = ()
    """A MIG GPU's profiles as NVML reports them, smallest first."""
    slices: int = 0
    """A MIG GPU's memory slices (8)."""
    slices_held: int = 0
    """Slices held by instances no live allocation of this node owns (made by hand, or
    waiting to be taken down)."""
    parent_uuid: str = ""
    """A MIG instance's GPU."""
    mig_instances: tuple[MigInstanceInfo, ...] = ()
    """The MIG instances on this GPU (or, for a MIG instance offered whole, itself)."""
    compute_units: int = 0
    """An AMD GPU's compute units (compute shares are CU masks); 0: not known."""


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
