"""Who shares which GPU, as one JSON document: what the web page and `hami top` draw.

Pure: the telemetry state and the clock in, plain data out. Each device lists its shares
(allocation, holder, memory and cores granted, what the holder really uses), the device's own
reading, and the cluster's waiting requests with the reason they were last given."""

from __future__ import annotations

from typing import Any

from services.telemetry.core import MIB, TelemetryState, live_containers
from shared.schemas.placement import AllocationRecord

Share = dict[str, Any]


def _holder(record: AllocationRecord) -> dict[str, Any]:
    h = record.holder
    if h.kind == "pod":
        return {"kind": "pod", "name": f"{h.namespace}/{h.pod}", "namespace": h.namespace}
    return {"kind": h.kind, "name": h.command or record.allocation_id, "host": h.host, "pid": h.pid}


def view(state: TelemetryState, now: float, trace_link: str | None = None) -> dict[str, Any]:
    used: dict[tuple[str, str], dict[str, Any]] = {}
    for sample, _ in live_containers(state, now):
        used[(sample.allocation_id or "", sample.device_uuid)] = {
            "used_bytes": sample.memory_used_bytes,
            "limit_bytes": sample.memory_limit_bytes,
            "utilization_percent": sample.utilization_percent,
            "container": sample.container,
            "processes": sample.processes,
            "at": sample.at,
        }
    shares: dict[str, list[Share]] = {}
    for record in sorted(state.allocations.values(), key=lambda r: (r.created_at, r.allocation_id)):
        for index, container in enumerate(record.containers):
            for grant in container:
                share: Share = {
                    "allocation_id": record.allocation_id,
                    "holder": _holder(record),
                    "container_index": index,
                    "memory_mib": grant.memory_mib,
                    "cores": grant.cores,
                    "profile": grant.profile or None,
                    "since": record.created_at,
                    "usage": used.get((record.allocation_id, grant.uuid)),
                    "trace_id": record.trace_id or None,
                    "trace_url": trace_link.replace("{trace_id}", record.trace_id)
                    if trace_link and record.trace_id
                    else None,
                }
                shares.setdefault(grant.uuid, []).append(share)
    nodes = []
    for inventory in sorted(state.nodes.values(), key=lambda n: n.node):
        devices = []
        for device in inventory.devices:
            on = shares.get(device.uuid, [])
            reading = state.usage.get(device.uuid)
            devices.append(
                {
                    "uuid": device.uuid,
                    "index": device.index,
                    "model": device.model,
                    "kind": device.kind,
                    "isolation": device.isolation,
                    "memory_mib": device.memory_mib,
                    "cores": device.cores,
                    "split_count": device.split_count,
                    "healthy": device.healthy,
                    "simulated": device.simulated,
                    "allocated_memory_mib": sum(s["memory_mib"] for s in on),
                    "allocated_cores": sum(s["cores"] for s in on),
                    "used_bytes": reading.memory_used_bytes if reading else None,
                    "utilization_percent": reading.utilization_percent if reading else None,
                    "shares": on,
                }
            )
        nodes.append(
            {
                "name": inventory.node,
                "devices": devices,
                "driver_version": inventory.driver_version,
                "unreadable_regions": inventory.unreadable_regions,
            }
        )
    status = state.status
    waiting = [
        {
            "request_id": w.request_id,
            "holder": (w.holder.pod and f"{w.holder.namespace}/{w.holder.pod}") or w.holder.command,
            "reason": w.reason,
            "waiting_s": max(0.0, now - w.since),
        }
        for w in (status.waiting if status is not None else ())
    ]
    return {
        "generated_at": now,
        "nodes": nodes,
        "waiting": waiting,
        "problems": [*sorted(state.unreadable), *(status.problems if status else ())],
        "memory_unit_bytes": MIB,
    }
