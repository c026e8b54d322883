"""Pure telemetry: from the inventory, allocation records and usage samples to metric samples.

The state changes only through the functions here (a bucket entry seen, a usage sample
heard), each returning a new state; `samples` renders it at scrape time with HAMi's names and
labels (the scheduler's and the vGPU monitor's, with their constant `zone="vGPU"`)."""

from __future__ import annotations

import platform
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Literal

from immutables import Map

from shared.schemas.inventory import NodeInventory
from shared.schemas.placement import AllocationRecord, StatusReply
from shared.schemas.usage import UsageSample

MIB = 1024 * 1024
VERSION = "0.1.0"
ZONE = {"zone": "vGPU"}
"""HAMi's constant label on every series it names."""
USAGE_TTL_S = 30.0
"""A container's sample older than this is not shown (its agent stopped sending it)."""


@dataclass(frozen=True, slots=True)
class TelemetryState:
    nodes: Map[str, NodeInventory] = field(default_factory=Map)
    allocations: Map[str, AllocationRecord] = field(default_factory=Map)
    usage: Map[str, UsageSample] = field(default_factory=Map)
    """Latest whole-device sample per device uuid."""
    containers: Map[str, UsageSample] = field(default_factory=Map)
    """Latest per-allocation sample per (allocation, device): `container_key`."""
    unreadable: Map[str, str] = field(default_factory=Map)
    """Bucket entries that could not be decoded ("bucket/key" -> error): each keeps capacity
    out of use (allocator's quarantine) until an operator repairs it."""
    status: StatusReply | None = None
    """The allocator's last status answer (waiting requests and their reasons)."""


def container_key(sample: UsageSample) -> str:
    return f"{sample.allocation_id}/{sample.device_uuid}"


def usage_heard(state: TelemetryState, sample: UsageSample) -> TelemetryState:
    if sample.allocation_id is None:
        return replace(state, usage=state.usage.set(sample.device_uuid, sample))
    if sample.allocation_id not in state.allocations and not is_claim(sample.allocation_id):
        return state  # released already (or not seen yet): no series for it
    return replace(state, containers=state.containers.set(container_key(sample), sample))


CLAIM_PREFIX = "claim/"
"""DRA claims' usage samples (services/nodeagent/draplugin.py): no allocation record in the
bucket (kube-scheduler allocated them); they live while their samples keep coming."""


def is_claim(allocation_id: str | None) -> bool:
    return allocation_id is not None and allocation_id.startswith(CLAIM_PREFIX)


def _without(containers: Map[str, UsageSample], gone: Iterable[str]) -> Map[str, UsageSample]:
    keys = list(gone)
    if not keys:
        return containers
    with containers.mutate() as m:
        for key in keys:
            del m[key]
        trimmed: Map[str, UsageSample] = m.finish()
    return trimmed


def node_seen(state: TelemetryState, key: str, inventory: NodeInventory | None) -> TelemetryState:
    """A node's inventory put or deleted. A new agent (restarted) forgets the old one's
    per-container samples: the containers still running are sent again by the new agent
    within one usage interval, the dead ones never come back."""
    before = state.nodes.get(key)
    restarted = before is not None and (inventory is None or inventory.agent_id != before.agent_id)
    containers = state.containers
    if restarted:
        containers = _without(containers, (k for k, s in containers.items() if s.node == key))
    if inventory is None:
        nodes = state.nodes.delete(key) if key in state.nodes else state.nodes
        usage = _without(state.usage, (u for u, s in state.usage.items() if s.node == key))
        return replace(state, nodes=nodes, usage=usage, containers=containers)
    return replace(state, nodes=state.nodes.set(key, inventory), containers=containers)


def allocation_seen(
    state: TelemetryState, key: str, record: AllocationRecord | None
) -> TelemetryState:
    """An allocation put or deleted; a deleted one's per-container series go with it."""
    if record is not None:
        return replace(state, allocations=state.allocations.set(key, record))
    allocations = state.allocations.delete(key) if key in state.allocations else state.allocations
    containers = _without(
        state.containers, (k for k in state.containers if k.startswith(f"{key}/"))
    )
    return replace(state, allocations=allocations, containers=containers)


Kind = Literal["gauge", "counter"]


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
    "hami_node_gpu_overview": "Device memory promised to allocations, with the device's "
    "allocated cores and memory limit as labels (HAMi's overview).",
    "hami_node_gpu_memory_allocated_ratio": "Share of the device's memory promised (0-1).",
    "hami_vgpu_memory_allocated_bytes": "Memory granted to one container on one device.",
    "hami_vgpu_core_allocated_ratio": "Compute granted to one container on one device, percent.",
    "hami_host_gpu_memory_used_bytes": "Device memory in use, as the node agent last read it.",
    "hami_host_gpu_utilization_ratio": "Device utilisation in percent (0-100, as HAMi reports it).",
    "hami_vgpu_memory_used_bytes": "Device memory one container uses (its region).",
    "hami_vgpu_memory_limit_bytes": "Device memory one container may use (its hard limit).",
    "hami_container_device_memory_bytes": "Device memory one container holds (its region).",
    "hami_container_device_utilization_ratio": "GPU time one container used since the last "
    "sample, percent of the device (0-100).",
    "hami_container_last_kernel_elapsed_seconds": "Seconds since the container last ran on "
    "the device (to within one usage interval).",
    "hami_node_gpu_mig_instance_info": "A MIG instance on a node's GPU: its identity and "
    "placement as labels (HAMi's name), 1 while it exists.",
    "hami_build_info": "The build that serves these metrics.",
    "hami_allocations": "Allocations held.",
    "hami_nodes": "Nodes with a published inventory.",
    "hami_unreadable_records": "Bucket entries that cannot be read (fix or delete them).",
    "hami_node_unreadable_regions": "Reads of containers' regions a node agent skipped "
    "since it started (malformed, or another layout): their usage is not known.",
}
KINDS: dict[str, Kind] = {"hami_node_unreadable_regions": "counter"}
"""Series that are not gauges."""


def _holder_labels(record: AllocationRecord) -> tuple[str, str]:
    """Namespace and pod of an allocation; a local job is its allocation id, unnamespaced."""
    holder = record.holder
    if holder.kind == "pod":
        return holder.namespace, holder.pod
    return "", record.allocation_id


def samples(state: TelemetryState, now: float) -> Iterable[Sample]:
    allocated: dict[str, tuple[int, int, int]] = {}
    for record in state.allocations.values():
        namespace, pod = _holder_labels(record)
        for index, container in enumerate(record.containers):
            for grant in container:
                mem, cores, count = allocated.get(grant.uuid, (0, 0, 0))
                allocated[grant.uuid] = (mem + grant.memory_mib, cores + grant.cores, count + 1)
                labels = {
                    "namespace": namespace,
                    "node": record.node,
                    "pod": pod,
                    "container_index": str(index),
                    "device_uuid": grant.uuid,
                    **ZONE,
                }
                yield Sample("hami_vgpu_memory_allocated_bytes", labels, grant.memory_mib * MIB)
                yield Sample("hami_vgpu_core_allocated_ratio", labels, grant.cores)
    for inventory in state.nodes.values():
        for device in inventory.devices:
            labels = {
                "node": inventory.node,
                "device_uuid": device.uuid,
                "device_index": str(device.index),
                "device_type": device.model,
                **ZONE,
            }
            mem, cores, count = allocated.get(device.uuid, (0, 0, 0))
            limit = device.memory_mib * MIB
            yield Sample("hami_gpu_memory_limit_bytes", labels, limit)
            yield Sample("hami_gpu_core_limit_ratio", labels, device.cores)
            yield Sample(
                "hami_gpu_memory_allocated_bytes", {**labels, "device_cores": str(cores)}, mem * MIB
            )
            yield Sample("hami_gpu_core_allocated_ratio", labels, cores)
            yield Sample("hami_gpu_shared_count", labels, count)
            yield Sample("hami_gpu_split_count", labels, device.split_count)
            yield Sample(
                "hami_node_gpu_overview",
                {**labels, "device_cores": str(cores), "device_memory_limit": str(limit)},
                mem * MIB,
            )
            yield Sample(
                "hami_node_gpu_memory_allocated_ratio", labels, mem * MIB / limit if limit else 0.0
            )
            usage = state.usage.get(device.uuid)
            if usage is not None:
                yield Sample("hami_host_gpu_memory_used_bytes", labels, usage.memory_used_bytes)
                if usage.utilization_percent is not None:
                    yield Sample(
                        "hami_host_gpu_utilization_ratio", labels, usage.utilization_percent
                    )
        yield Sample(
            "hami_node_unreadable_regions", {"node": inventory.node}, inventory.unreadable_regions
        )
        index_of = {d.uuid: d.index for d in inventory.devices}
        for instance in inventory.mig_instances:
            yield Sample(
                "hami_node_gpu_mig_instance_info",
                {
                    "node": inventory.node,
                    "device_uuid": instance.gpu_uuid,
                    "device_index": str(index_of.get(instance.gpu_uuid, "")),
                    "mig_uuid": instance.uuid,
                    "profile": instance.profile,
                    "gpu_instance_id": str(instance.gpu_instance),
                    "compute_instance_id": ""
                    if instance.compute_instance is None
                    else str(instance.compute_instance),
                    "placement_start": str(instance.start),
                    "placement_size": str(instance.slices),
                    **ZONE,
                },
                1,
            )
    yield from container_series(state, now)
    yield Sample("hami_allocations", {}, len(state.allocations))
    yield Sample("hami_nodes", {}, len(state.nodes))
    for bucket in ("allocations", "nodes"):
        count = sum(1 for key in state.unreadable if key.startswith(f"{bucket}/"))
        yield Sample("hami_unreadable_records", {"bucket": bucket}, count)
    yield Sample(
        "hami_build_info",
        {"version": VERSION, "python_version": platform.python_version(), **ZONE},
        1,
    )


def live_containers(state: TelemetryState, now: float) -> Iterable[tuple[UsageSample, int]]:
    """Each fresh per-container sample of an allocation still held, with its device's index
    within the container (HAMi's vdevice_index)."""
    for sample in state.containers.values():
        if now - sample.at > USAGE_TTL_S:
            continue
        record = state.allocations.get(sample.allocation_id or "")
        if record is None:
            if is_claim(sample.allocation_id):  # a DRA claim: its devices in sample order
                yield sample, 0
            continue
        index = next(
            (
                i
                for container in record.containers
                for i, g in enumerate(container)
                if g.uuid == sample.device_uuid
            ),
            0,
        )
        yield sample, index


def container_series(state: TelemetryState, now: float) -> Iterable[Sample]:
    for sample, index in live_containers(state, now):
        record = state.allocations.get(sample.allocation_id or "")
        namespace, pod = _holder_labels(record) if record is not None else ("", "")
        labels = {
            "namespace": sample.pod_namespace or namespace,
            "pod": sample.pod_name or pod,
            "container": sample.container or "",
            "vdevice_index": str(index),
            "device_uuid": sample.device_uuid,
            **ZONE,
        }
        yield Sample("hami_vgpu_memory_used_bytes", labels, sample.memory_used_bytes)
        yield Sample("hami_container_device_memory_bytes", labels, sample.memory_used_bytes)
        if sample.memory_limit_bytes is not None:
            yield Sample("hami_vgpu_memory_limit_bytes", labels, sample.memory_limit_bytes)
        if sample.utilization_percent is not None:
            yield Sample(
                "hami_container_device_utilization_ratio", labels, sample.utilization_percent
            )
        if sample.last_kernel_at is not None:
            yield Sample(
                "hami_container_last_kernel_elapsed_seconds",
                labels,
                max(0.0, now - sample.last_kernel_at),
            )
