"""kube-scheduler's extender calls, forwarded over NATS from an allocator that stands by to the
one that leads (services/allocator/extenderhttp.py): kube-scheduler runs beside each allocator
and may lead while its allocator does not."""

from __future__ import annotations

from typing import Literal

from shared.schemas.base import PREFIX, Endpoint, WireStruct

Verb = Literal["filter", "prioritize", "bind"]


class ExtenderCall(WireStruct, frozen=True, kw_only=True):
    verb: Verb
    body: bytes
    """kube-scheduler's request body as it came (ExtenderArgs or ExtenderBindingArgs JSON)."""


class ExtenderAnswer(WireStruct, frozen=True, kw_only=True):
    status: int
    """The HTTP status the leader's extender answered with."""
    body: bytes
    """Its response body (kube-scheduler's JSON)."""


EXTENDER_CALL = Endpoint(
    subject=f"{PREFIX}.extender.call",
    request=ExtenderCall,
    reply=ExtenderAnswer,
    publisher="allocator (standing by)",
    consumers="allocator (the leader)",
    doc="An extender call kube-scheduler made to an allocator that does not lead, answered "
    "by the leader exactly as its own HTTP extender would. No reply within 8 s (no leader "
    "yet): the standby answers 503 and kube-scheduler retries the pod.",
)
SUBJECTS = (EXTENDER_CALL.spec,)
