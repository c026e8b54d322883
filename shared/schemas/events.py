"""Allocation events: what happened to an allocation, for anyone who watches."""

from __future__ import annotations

from typing import Literal

from shared.schemas.base import PREFIX, Codec, SubjectSpec, WireStruct
from shared.schemas.placement import AllocationRecord

EventKind = Literal["allocated", "released", "expired"]


class AllocationEvent(WireStruct, frozen=True, kw_only=True):
    kind: EventKind
    allocation: AllocationRecord
    at: float
    reason: str = ""


EVENTS = f"{PREFIX}.alloc.events"
EVENTS_STREAM = "HAMI_ALLOC_EVENTS"


def event_subject(kind: EventKind) -> str:
    return f"{EVENTS}.{kind}"


event_codec = Codec(AllocationEvent)

SUBJECTS = (
    SubjectSpec(
        subject=f"{EVENTS}.<allocated|released|expired>",
        pattern="jetstream stream",
        publisher="allocator",
        consumers="hami run (waiting jobs retry on release), telemetry, audit",
        message=AllocationEvent,
        doc=f"Stored in stream `{EVENTS_STREAM}` (file storage, 24 h). Published after the "
        "durable record changed.",
    ),
)
