"""From hardware readings to the inventory the scheduler sees: scaling and split count applied."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from services.nodeagent.core.hostfigures import HostFigures
from services.nodeagent.core.readings import DeviceReading, DriverInfo
from shared.devicekinds import KindRegistry
from shared.schemas.inventory import DeviceInfo, NodeInventory
from shared.vendorkinds import VENDOR_KINDS

MIB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class SharingPolicy:
    split_count: int = 10
    """How many allocations may share one device (HAMi's deviceSplitCount)."""
    memory_scaling: float = 1.0
    """Over-commit factor for memory (HAMi's deviceMemoryScaling); >1 needs oversubscription."""
    core_scaling: float = 1.0
    """Over-commit factor for compute (HAMi's deviceCoreScaling)."""

    def __post_init__(self) -> None:
        if self.split_count < 1:
            raise ValueError(f"split count {self.split_count} must be at least 1")
        if self.memory_scaling <= 0 or self.core_scaling <= 0:
            raise ValueError("memory and core scaling must be positive")


def device_info(
    reading: DeviceReading, policy: SharingPolicy, kinds: KindRegistry = VENDOR_KINDS
) -> DeviceInfo:
    """How the scheduler sees a device: its kind's isolation model decides what sharing means
    (scaling and split count apply to interception only; a partition device offers its
    model's profiles; a whole device is never split)."""
    physical = reading.memory_total_bytes // MIB
    kind = kinds.named(reading.kind) if reading.kind != "nvidia" else None
    isolation = reading.isolation or (kind.isolation if kind is not None else "interception")
    shared = isolation == "interception"
    if reading.slices:  # a MIG GPU: its own geometry, at most one instance per 1g placement
        return DeviceInfo(
            uuid=reading.uuid,
            index=reading.index,
            model=reading.model,
            kind=reading.kind,
            memory_mib=physical,
            physical_memory_mib=physical,
            split_count=max((len(p.placements) for p in reading.profiles), default=1),
            pci_bus_id=reading.pci_bus_id,
            numa_node=reading.numa_node,
            healthy=reading.healthy,
            simulated=reading.simulated,
            isolation="partition",
            profiles=reading.profiles,
            slices=reading.slices,
            slices_held=reading.slices_held,
        )
    return DeviceInfo(
        uuid=reading.uuid,
        index=reading.index,
        model=reading.model,
        kind=reading.kind,
        memory_mib=int(physical * policy.memory_scaling) if shared else physical,
        physical_memory_mib=physical,
        cores=int(100 * policy.core_scaling) if shared else 100,
        split_count=1 if isolation == "whole" else policy.split_count,
        pci_bus_id=reading.pci_bus_id,
        numa_node=reading.numa_node,
        healthy=reading.healthy,
        simulated=reading.simulated,
        isolation=isolation,
        profiles=kind.profiles_of(reading.model) if kind is not None else (),
    )


def build_inventory(
    node: str,
    agent_id: str,
    readings: Sequence[DeviceReading],
    policy: SharingPolicy,
    driver: DriverInfo,
    *,
    seq: int,
    now: float,
    heartbeat_interval_s: float,
    unreadable_regions: int = 0,
    host: HostFigures | None = None,
) -> NodeInventory:
    """``host``: the node's host CPU and memory (core/hostfigures.py); None: not known."""
    host = host or HostFigures(None, None)
    return NodeInventory(
        node=node,
        agent_id=agent_id,
        devices=tuple(device_info(r, policy) for r in sorted(readings, key=lambda r: r.index)),
        heartbeat_seq=seq,
        sent_at=now,
        heartbeat_interval_s=heartbeat_interval_s,
        driver_version=driver.driver_version,
        cuda_driver_version=driver.cuda_driver_version,
        unreadable_regions=unreadable_regions,
        mig_instances=tuple(i for r in readings for i in r.mig_instances),
        cpu_milli=host.cpu_milli,
        memory_mib=host.memory_mib,
        others_cpu_milli=host.others_cpu_milli,
        others_memory_mib=host.others_memory_mib,
    )


def device_set_changed(before: NodeInventory | None, after: NodeInventory) -> bool:
    """Whether watchers should hear about it: the devices or their health changed."""
    return before is None or before.devices != after.devices
