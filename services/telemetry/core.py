"""Pure telemetry: from the inventory, allocation records and usage samples to metric samples."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from immutables import Map

from shared.schemas.inventory import NodeInventory
from shared.schemas.placement import AllocationRecord
from shared.schemas.usage import UsageSample

MIB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class TelemetryState:
    nodes: Map[str, NodeInventory] = field(default_factory=Map)
    allocations: Map[str, AllocationRecord] = field(default_factory=Map)
    usage: Map[str, UsageSample] = field(default_factory=Map)
    """Latest whole-device sample per device uuid."""
    unreadable: Map[str, str] = field(default_factory=Map)
    """Bucket entries that could not be decoded ("bucket/key" -> error): each keeps capacity
    out of use (allocator's quarantine) until an operator repairs it."""


@dataclass(frozen=True, slots=True)
class Sample:
    name: str
    labels: Mapping[str, str]
    value: float


DESCRIPTIONS = {
    "hami_gpu_memory_limit_bytes": "Allocatable device memory (after memory scaling).",
    "hami_gpu_core_limit_ratio": "Allocatable device compute in percent (HAMi's 0-100 scale).",
    "hami_gpu_memory_allocated_bytes": "Device memory promised to allocations.",
    "hami_gpu_core_allocated_ratio": "Device compute promised to allocations, percent.",
    "hami_gpu_shared_count": "Allocations sharing the device.",
    "hami_gpu_split_count": "How many allocations may share the device.",
    "hami_vgpu_memory_allocated_bytes": "Memory granted to one allocation on one device.",
    "hami_vgpu_core_allocated_ratio": "Compute granted to one allocation on one device, percent.",
    "hami_host_gpu_memory_used_bytes": "Device memory in use, as the node agent last read it.",
    "hami_host_gpu_utilization_ratio": "Device utilisation in percent (0-100, as HAMi reports it).",
    "hami_allocations": "Allocations held.",
    "hami_nodes": "Nodes with a published inventory.",
    "hami_unreadable_records": "Bucket entries that cannot be read (fix or delete them).",
}


def samples(state: TelemetryState) -> Iterable[Sample]:
    allocated: dict[str, tuple[int, int, int]] = {}
    for record in state.allocations.values():
        for container in record.containers:
            for grant in container:
                mem, cores, count = allocated.get(grant.uuid, (0, 0, 0))
                allocated[grant.uuid] = (mem + grant.memory_mib, cores + grant.cores, count + 1)
                yield Sample(
                    "hami_vgpu_memory_allocated_bytes",
                    {
                        "node": record.node,
                        "allocation": record.allocation_id,
                        "device_uuid": grant.uuid,
                        "namespace": record.holder.namespace,
                        "pod": record.holder.pod,
                    },
                    grant.memory_mib * MIB,
                )
                yield Sample(
                    "hami_vgpu_core_allocated_ratio",
                    {
                        "node": record.node,
                        "allocation": record.allocation_id,
                        "device_uuid": grant.uuid,
                        "namespace": record.holder.namespace,
                        "pod": record.holder.pod,
                    },
                    grant.cores,
                )
    for inventory in state.nodes.values():
        for device in inventory.devices:
            labels = {
                "node": inventory.node,
                "device_uuid": device.uuid,
                "device_index": str(device.index),
                "device_type": device.model,
            }
            mem, cores, count = allocated.get(device.uuid, (0, 0, 0))
            yield Sample("hami_gpu_memory_limit_bytes", labels, device.memory_mib * MIB)
            yield Sample("hami_gpu_core_limit_ratio", labels, device.cores)
            yield Sample("hami_gpu_memory_allocated_bytes", labels, mem * MIB)
            yield Sample("hami_gpu_core_allocated_ratio", labels, cores)
            yield Sample("hami_gpu_shared_count", labels, count)
            yield Sample("hami_gpu_split_count", labels, device.split_count)
            usage = state.usage.get(device.uuid)
            if usage is not None:
                yield Sample("hami_host_gpu_memory_used_bytes", labels, usage.memory_used_bytes)
                if usage.utilization_percent is not None:
                    yield Sample(
                        "hami_host_gpu_utilization_ratio", labels, usage.utilization_percent
                    )
    yield Sample("hami_allocations", {}, len(state.allocations))
    yield Sample("hami_nodes", {}, len(state.nodes))
    for bucket in ("allocations", "nodes"):
        count = sum(1 for key in state.unreadable if key.startswith(f"{bucket}/"))
        yield Sample("hami_unreadable_records", {"bucket": bucket}, count)
