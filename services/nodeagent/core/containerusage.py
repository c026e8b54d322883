"""Per-container usage on a Kubernetes node, as pure functions: which region belongs to which
running container (the owner records Allocate wrote, checked against the kubelet's PodResources
list), the samples to publish, and which regions to remove once their container is gone."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import msgspec

from services.nodeagent.core.region import RegionReading
from shared.schemas.usage import UsageSample

MIB = 1024 * 1024


class RegionOwner(msgspec.Struct, frozen=True):
    """Written by Allocate next to (not inside) the container's region directory."""

    namespace: str
    pod: str
    pod_uid: str
    container: str
    allocation_id: str
    devices: list[str]
    memory_mib: list[int]

    @property
    def key(self) -> str:
        return f"{self.pod_uid}_{self.container}"

    @property
    def listed_as(self) -> tuple[str, str, str]:
        return (self.namespace, self.pod, self.container)


owner_decoder = msgspec.json.Decoder(RegionOwner)


@dataclass(frozen=True, slots=True)
class Busy:
    """What the last reading of a region said, to measure the next one against."""

    at: float
    busy_ns: tuple[int, ...]
    last_kernel_at: tuple[float | None, ...] = ()


def container_samples(
    owner: RegionOwner,
    reading: RegionReading | None,
    node: str,
    now: float,
    before: Busy | None,
) -> tuple[list[UsageSample], Busy | None]:
    """One sample per device of the container, and what to measure the next reading against.
    No region yet (no CUDA process has started): nothing used. Utilisation is the GPU time
    the region measured since the last sample; the last kernel is when that time last grew."""
    out = []
    last_kernel: list[float | None] = []
    for i, (uuid, limit_mib) in enumerate(zip(owner.devices, owner.memory_mib, strict=False)):
        used = reading.used_bytes[i] if reading is not None and i < len(reading.used_bytes) else 0
        utilization = None
        last = before.last_kernel_at[i] if before and i < len(before.last_kernel_at) else None
        if reading is not None and before is not None and now > before.at:
            busy = reading.busy_ns[i] - before.busy_ns[i]
            utilization = max(0.0, min(100.0, busy / ((now - before.at) * 1e9) * 100))
            if busy > 0:
                last = now
        last_kernel.append(last)
        out.append(
            UsageSample(
                node=node,
                device_uuid=uuid,
                at=now,
                memory_used_bytes=used,
                memory_total_bytes=limit_mib * MIB,
                memory_limit_bytes=limit_mib * MIB,
                utilization_percent=utilization,
                allocation_id=owner.allocation_id,
                pod_namespace=owner.namespace or None,
                pod_name=owner.pod or None,
                pod_uid=owner.pod_uid or None,
                container=owner.container or None,
                processes=reading.processes if reading is not None else 0,
                last_kernel_at=last,
            )
        )
    after = Busy(now, reading.busy_ns, tuple(last_kernel)) if reading is not None else before
    return out, after


def gone(
    owners: Mapping[str, RegionOwner],
    region_ages: Mapping[str, float],
    listed: set[tuple[str, str, str]],
    grace_s: float,
) -> list[str]:
    """Region keys whose container the kubelet no longer lists, past a grace period (Allocate
    prepares the region before the kubelet lists the container). Regions without an owner
    record go the same way."""
    return sorted(
        key
        for key, age in region_ages.items()
        if age > grace_s and (key not in owners or owners[key].listed_as not in listed)
    )


def listed_containers(
    pods: Iterable[tuple[str, str, Iterable[tuple[str, Iterable[str]]]]], resource: str
) -> set[tuple[str, str, str]]:
    """(namespace, pod, container) of every container holding devices of ``resource``, from
    the PodResources list flattened as (namespace, pod, [(container, [resource names])])."""
    return {
        (namespace, pod, container)
        for namespace, pod, containers in pods
        for container, resources in containers
        if resource in resources
    }
