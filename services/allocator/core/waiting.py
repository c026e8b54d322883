"""Requests the allocator answered "wait" and that have not been placed since: what operators
see as waiting (status, telemetry's page, the waiting-requests gauge). Pure: a map in, a map
out, with the clock passed in."""

from __future__ import annotations

from immutables import Map

from shared.schemas.placement import PlaceRequest, WaitingRequest

WAITING_TTL_S = {"local": 30.0, "external": 60.0, "pod": 330.0}
"""A waiter not heard from for this long gave up: `hami run` asks again every few seconds;
kube-scheduler retries an unschedulable pod at least every 5 minutes (its
podMaxInUnschedulablePodsDuration), so a pod deleted while pending leaves within 5.5."""

Waiting = Map[str, WaitingRequest]


def waited(waiting: Waiting, request: PlaceRequest, reason: str, now: float) -> Waiting:
    """``request`` was told to wait for ``reason``; its first wait is kept as ``since``."""
    before = waiting.get(request.request_id)
    return waiting.set(
        request.request_id,
        WaitingRequest(
            request_id=request.request_id,
            holder=request.holder,
            reason=reason,
            since=before.since if before is not None else now,
            last_asked=now,
        ),
    )


def settled(waiting: Waiting, request_id: str) -> Waiting:
    """Placed, or told it never fits: no longer waiting."""
    return waiting.delete(request_id) if request_id in waiting else waiting


def current(waiting: Waiting, now: float) -> Waiting:
    """Without the waiters that stopped asking."""
    gone = [
        k for k, w in waiting.items() if now - w.last_asked > WAITING_TTL_S.get(w.holder.kind, 60.0)
    ]
    if not gone:
        return waiting
    with waiting.mutate() as m:
        for key in gone:
            del m[key]
        trimmed: Waiting = m.finish()
    return trimmed
