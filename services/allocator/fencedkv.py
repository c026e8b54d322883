"""Writes to the allocations bucket that only the current leader can make.

The leader lease (leadership.py) keeps two allocators from deciding at once, but a leader paused
between its last fence check and its write (a stopped process, a long GC pause, a slow network)
could still land that write after its successor began. So every write here names the sequence
the bucket's stream had when this allocator last wrote (JetStream's `Nats-Expected-Last-Sequence`)
and the stream refuses it if anything was written since. A new leader first *seals* the bucket
(a write of its own: the deletion of a key that never exists, which every reader ignores) and
only then reads the state back; from then on a write prepared by an earlier leader can only
fail. The allocator serialises its writes (one lock), so the sequence it expects is its own.

A deleted allocation leaves a marker, and every allocation is deleted in the end: kept for ever,
the markers of every allocation ever made would fill the bucket and a new leader would read
them all back. So a marker carries a time to live (JetStream's per-message TTL, which the
leader turns on for the bucket when it seals it); a message that expires adds nothing to the
stream, so the sequence the fence expects does not move."""

from __future__ import annotations

import asyncio
import dataclasses
import logging

from nats.js import JetStreamContext
from nats.js.errors import APIError

from shared.errors import Unavailable

log = logging.getLogger("hami.allocator.fence")
SEAL_KEY = "_sealed"
"""Deleted (never written) by each new leader: a no-op for every reader of the bucket."""
WRONG_LAST_SEQUENCE = 10071
TOMBSTONE_TTL_S = 24 * 3600
"""How long a deleted allocation's marker stays: long past any watcher's reconnection (a
watcher that missed the deletion and comes back after the marker expired keeps the record)."""


class Deposed(Unavailable):
    """Something wrote to the bucket since this allocator did: another leads now."""


class FencedBucket:
    def __init__(
        self, js: JetStreamContext, bucket: str, *, tombstone_ttl_s: int = TOMBSTONE_TTL_S
    ) -> None:
        self._js = js
        self._tombstone_ttl_s = tombstone_ttl_s
        self._ttl_allowed = False
        self._prefix = f"$KV.{bucket}."
        self._stream = f"KV_{bucket}"
        self._last: int | None = None
        self.deposed = asyncio.Event()
        """Set when a write was refused: this allocator must stop leading (the composition
        root ends its term; a write whose acknowledgement was lost looks the same, and a
        hand-over is the safe answer to both)."""

    async def seal(self, attempts: int = 20) -> None:
        """Make every write an earlier leader still has in flight fail from now on."""
        await self._allow_ttl()
        for _ in range(attempts):
            info = await self._js.stream_info(self._stream)
            try:
                await self._publish(SEAL_KEY, b"", {"KV-Operation": "DEL"}, info.state.last_seq)
                log.info("allocations bucket sealed", extra={"sequence": self._last})
                return
            except Deposed:  # the earlier leader's last write landed meanwhile: read again
                continue
        raise Unavailable("the allocations bucket kept changing; could not take it over")

    async def _allow_ttl(self) -> None:
        """Turn on per-message TTLs for the bucket's stream (a configuration change, not a
        message: the fence does not see it). A server without them (before NATS 2.11) keeps
        the markers, as before."""
        config = (await self._js.stream_info(self._stream)).config
        if not config.allow_msg_ttl:
            try:
                await self._js.update_stream(dataclasses.replace(config, allow_msg_ttl=True))
            except APIError as e:
                log.warning(
                    "deletion markers are kept: the server refused per-message TTLs",
                    extra={"stream": self._stream, "error": repr(e)},
                )
                return
        self._ttl_allowed = True

    async def put(self, key: str, value: bytes) -> None:
        """Create or replace (allocation ids are fresh: the sequence check is the guard)."""
        await self._write(key, value, {})

    async def delete(self, key: str) -> None:
        headers = {"KV-Operation": "DEL"}
        if self._ttl_allowed:
            headers["Nats-TTL"] = f"{self._tombstone_ttl_s}s"
        await self._write(key, b"", headers)

    async def _write(self, key: str, value: bytes, headers: dict[str, str]) -> None:
        if self._last is None or self.deposed.is_set():
            raise Unavailable("this allocator does not hold the allocations bucket; retry")
        try:
            await self._publish(key, value, headers, self._last)
        except Deposed:
            self.deposed.set()
            log.error("a write was refused: another allocator wrote the allocations since")
            raise

    async def _publish(self, key: str, value: bytes, headers: dict[str, str], last: int) -> None:
        try:
            ack = await self._js.publish(
                self._prefix + key,
                value,
                headers={**headers, "Nats-Expected-Last-Sequence": str(last)},
            )
        except APIError as e:
            if e.err_code == WRONG_LAST_SEQUENCE:
                raise Deposed("another allocator wrote the allocations since; it leads") from e
            raise
        self._last = ack.seq
