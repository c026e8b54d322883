"""The node's host CPU and memory as the inventory says them (pure): its allocatable, and what
its pods that hold no HAMi allocation request (the allocator counts its own allocations').
The fragmentation policy counts devices a node has no CPU or memory left for as stranded."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from shared.errors import InvalidRequest
from shared.podspec import host_requests, requests_managed
from shared.quantity import parse_k8s_quantity
from shared.resources import ResourceNames
from shared.schemas.inventory import HOST_MAX

log = logging.getLogger("hami.nodeagent")


@dataclass(frozen=True, slots=True)
class HostFigures:
    cpu_milli: int | None
    memory_mib: int | None
    others_cpu_milli: int = 0
    others_memory_mib: int = 0


def _allocatable(status: Mapping[str, Any], name: str) -> int | None:
    """The node's allocatable CPU in milli-cores or memory in MiB; None: not said or not
    readable."""
    allocatable = status.get("allocatable")
    value = allocatable.get(name) if isinstance(allocatable, Mapping) else None
    if value is None:
        return None
    try:
        amount = parse_k8s_quantity(str(value))
    except ValueError:
        return None
    scaled = amount * 1000 if name == "cpu" else amount / 2**20
    return max(0, min(HOST_MAX, int(scaled)))


def node_figures(
    node: Mapping[str, Any], pods: Iterable[Mapping[str, Any]], kinds: Iterable[ResourceNames]
) -> HostFigures:
    """The node's allocatable CPU and memory, and the requests of its pods that are not done
    and ask for none of HAMi's resources (those hold allocations the allocator counts). A pod
    whose requests cannot be read counts nothing, and is logged."""
    status = node.get("status")
    status = status if isinstance(status, Mapping) else {}
    names = list(kinds)
    cpu = memory = 0
    for pod in pods:
        phase = (pod.get("status") or {}).get("phase")
        if phase in ("Succeeded", "Failed") or any(requests_managed(pod, n) for n in names):
            continue
        try:
            pod_cpu, pod_memory = host_requests(pod)
        except InvalidRequest as e:
            log.warning("pod's requests not counted", extra={"error": str(e)})
            continue
        cpu, memory = cpu + pod_cpu, memory + pod_memory
    return HostFigures(
        cpu_milli=_allocatable(status, "cpu"),
        memory_mib=_allocatable(status, "memory"),
        others_cpu_milli=min(cpu, HOST_MAX),
        others_memory_mib=min(memory, HOST_MAX),
    )
