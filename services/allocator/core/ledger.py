"""State transitions of the allocator: each takes the state and the time, and returns the new
state with the events to publish. No I/O here; the service persists and publishes."""

from __future__ import annotations

from dataclasses import replace

import msgspec

from services.allocator.core.fit import NodeFit
from services.allocator.core.state import NO_NODE_USAGE, Allocation, ClusterState, NodeRecord
from shared.errors import InvalidRequest
from shared.schemas.events import AllocationEvent, EventKind
from shared.schemas.inventory import NodeInventory
from shared.schemas.placement import (
    AllocationRecord,
    PlaceRequest,
    holds,
    request_digest,
    secret_digest,
)

Events = list[AllocationEvent]


def host_said(inventory: NodeInventory) -> tuple[int | None, int | None, int, int]:
    return (
        inventory.cpu_milli,
        inventory.memory_mib,
        inventory.others_cpu_milli,
        inventory.others_memory_mib,
    )


def observe_inventory(state: ClusterState, inventory: NodeInventory, now: float) -> ClusterState:
    known = state.nodes.get(inventory.node)
    state = replace(state, nodes=state.nodes.set(inventory.node, NodeRecord(inventory, now)))
    if known is not None and known.inventory.devices == inventory.devices:
        if host_said(known.inventory) != host_said(inventory):
            return state.touched(inventory.node)  # the measure reads the host's room
        return state  # a plain heartbeat: nothing a decision reads changed
    models = state.recounted(known.devices if known else (), inventory.devices)
    usage = state.node_usage(inventory.node)
    free = state.refreed(known.devices if known else (), usage, inventory.devices, usage)
    state = replace(state, models=models, free=free).touched(inventory.node)
    return state.indexed(inventory.node, known.kinds if known else frozenset())


def forget_node(state: ClusterState, node: str) -> ClusterState:
    """The node's agent left on purpose. Its allocations stay: their holders still run."""
    record = state.nodes.get(node)
    if record is None:
        return state
    state = replace(
        state,
        nodes=state.nodes.delete(node),
        models=state.recounted(record.devices, ()),
        free=state.refreed(record.devices, state.node_usage(node), (), NO_NODE_USAGE),
    )
    return state.indexed(node, record.kinds)


def record_for(
    request: PlaceRequest, fit: NodeFit, allocation_id: str, now: float
) -> AllocationRecord:
    return AllocationRecord(
        allocation_id=allocation_id,
        request_id=request.request_id,
        node=fit.node,
        containers=fit.containers,
        holder=request.holder,
        priority=request.priority,
        created_at=now,
        lease_ttl_s=request.lease_ttl_s,
        request_digest=request_digest(request),
        cpu_milli=request.cpu_milli,
        memory_mib=request.memory_mib,
        holder_digest=secret_digest(request.holder_secret),
    )


def retried(state: ClusterState, request: PlaceRequest) -> AllocationRecord | None:
    """The allocation an earlier request with this request_id got, or None. A request_id used
    again for another request is an error: answering with the old allocation would hand the
    caller devices it did not ask for."""
    existing = state.by_request.get(request.request_id)
    if existing is None:
        return None
    record = state.allocations[existing].record
    if not holds(record, request.holder_secret):
        raise InvalidRequest(f"request_id {request.request_id!r} belongs to another holder")
    if record.request_digest and record.request_digest != request_digest(request):
        raise InvalidRequest(
            f"request_id {request.request_id!r} was used for a different request; "
            "use a new request_id"
        )
    return record


def _deadline(record: AllocationRecord, now: float) -> float | None:
    return None if record.lease_ttl_s is None else now + record.lease_ttl_s


def commit(
    state: ClusterState, record: AllocationRecord, now: float
) -> tuple[ClusterState, Events]:
    """Apply an allocation that is already durable."""
    if record.allocation_id in state.allocations:
        raise InvalidRequest(f"allocation {record.allocation_id} exists already")
    state = state.with_allocation(Allocation(record, _deadline(record, now)))
    return state, [AllocationEvent(kind="allocated", allocation=record, at=now)]


def restore(state: ClusterState, record: AllocationRecord, now: float) -> ClusterState:
    """Load a durable record at start-up. Its lease restarts from now: holders had no allocator
    to renew with while it was down, and must not lose their devices for that."""
    if record.allocation_id in state.allocations:
        return state
    return state.with_allocation(Allocation(record, _deadline(record, now)))


def renew(
    state: ClusterState, allocation_id: str, now: float
) -> tuple[ClusterState, float | None, bool]:
    """Extend a lease; returns (state, seconds left, whether the allocation exists)."""
    allocation = state.allocations.get(allocation_id)
    if allocation is None:
        return state, None, False
    deadline = _deadline(allocation.record, now)
    renewed = replace(allocation, expires_at=deadline)
    state = replace(state, allocations=state.allocations.set(allocation_id, renewed))
    return state, (None if deadline is None else deadline - now), True


def release(
    state: ClusterState,
    allocation_id: str,
    now: float,
    *,
    kind: EventKind = "released",
    reason: str = "",
) -> tuple[ClusterState, Events]:
    allocation = state.allocations.get(allocation_id)
    if allocation is None:
        return state, []
    event = AllocationEvent(kind=kind, allocation=allocation.record, at=now, reason=reason)
    return state.without_allocation(allocation_id), [event]


def expired(state: ClusterState, now: float) -> list[str]:
    """Allocations whose lease ran out: the service deletes their records, then releases them."""
    return [
        a.allocation_id
        for a in state.allocations.values()
        if a.expires_at is not None and a.expires_at < now
    ]


def set_lease(
    state: ClusterState, allocation_id: str, lease_ttl_s: float | None, now: float
) -> tuple[ClusterState, AllocationRecord | None]:
    """Give an allocation a new lease (None: no expiry); the record to persist, or None when it
    is gone."""
    allocation = state.allocations.get(allocation_id)
    if allocation is None:
        return state, None
    record = msgspec.structs.replace(allocation.record, lease_ttl_s=lease_ttl_s)
    updated = Allocation(record, _deadline(record, now))
    return replace(state, allocations=state.allocations.set(allocation_id, updated)), record


def orphaned(state: ClusterState, live_pod_uids: set[str], listed_at: float) -> list[str]:
    """Allocations held for pods that no longer exist. Only allocations made before the pod list
    was taken are judged: a pod bound since may simply be missing from that list."""
    return [
        a.allocation_id
        for a in state.allocations.values()
        if a.record.holder.kind == "pod"
        and a.record.created_at < listed_at
        and a.record.holder.pod_uid not in live_pod_uids
    ]


def check_holder(state: ClusterState, allocation_id: str, secret: str | None) -> None:
    """Renew, release and commit over the API come from the holder only: the one who gave a
    secret when placing it. A pod's devices are the allocator's to release (the pod is gone or
    has finished), never the API's. An unknown id passes: the operation answers it is gone."""
    held = state.allocations.get(allocation_id)
    if held is None:
        return
    if held.record.holder.kind == "pod":
        raise InvalidRequest(
            f"allocation {allocation_id} belongs to pod {held.record.holder.namespace}/"
            f"{held.record.holder.pod}; it is released when the pod is deleted or finishes"
        )
    if not holds(held.record, secret):
        raise InvalidRequest(f"allocation {allocation_id} is held by someone else")
