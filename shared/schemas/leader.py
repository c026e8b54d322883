"""The allocator's leader lease: which allocator instance decides (allocator/leadership.py)."""

from __future__ import annotations

from shared.schemas.base import Codec, SubjectSpec, WireStruct


class LeaderLease(WireStruct, frozen=True, kw_only=True):
    holder: str
    """The leading allocator's random instance id; empty: resigned, free to take."""
    term: int
    """Raised by one at every takeover."""


LEADER_BUCKET = "hami_leader"
LEADER_KEY = "allocator"

lease_codec = Codec(LeaderLease)

SUBJECTS = (
    SubjectSpec(
        subject=f"$KV.{LEADER_BUCKET}.{LEADER_KEY}",
        pattern="jetstream kv",
        publisher="allocator (the leader renews; a standby takes over by compare-and-set)",
        consumers="allocators",
        message=LeaderLease,
        doc="The leader renews every TTL/4 with a revision check; a standby that sees the "
        "revision unchanged for a whole TTL (--leader-ttl, 10 s; local mode 3 s) takes over with "
        "a compare-and-set on that revision. The leader stops writing TTL/5 before its lease "
        "could run out, counted from before its last renewal, so two never write at once.",
    ),
)
