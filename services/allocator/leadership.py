"""One allocator decides at a time: a lease in the `hami_leader` bucket, taken and renewed by
compare-and-set on the key's revision.

A standby that sees the lease's revision unchanged for a whole TTL (timed on its own clock,
from when it saw that revision) takes over with a CAS on that revision, so of several standbys
exactly one wins. The leader counts its lease from *before* each renewal it sent, and stops
writing (`holds()` is false) a margin before that lease could run out. Whatever a standby saw
was written after that moment, so the leader always stops before any standby starts: a
deposed leader (paused, partitioned) cannot write after its successor begins, with no clock
shared between them. Each takeover raises the term, which the records carry."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from shared.runloop import sleep_or_stop
from shared.schemas.leader import LEADER_KEY, LeaderLease, lease_codec

log = logging.getLogger("hami.allocator.leadership")
KEY = LEADER_KEY


class Leadership:
    def __init__(
        self,
        kv: KeyValue,
        holder: str,
        *,
        ttl_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if ttl_s <= 0:
            raise ValueError("the leader lease must last a positive time")
        self.kv = kv
        self.holder = holder
        self.ttl_s = ttl_s
        self.margin_s = ttl_s / 5
        self.clock = clock
        self.term = 0
        self._revision = 0
        self._held_until = 0.0

    def holds(self) -> bool:
        """Whether this allocator may write now (checked before every write)."""
        return self.clock() < self._held_until

    def _won(self, revision: int, term: int, sent_at: float) -> None:
        self._revision, self.term = revision, term
        self._held_until = sent_at + self.ttl_s - self.margin_s

    async def acquire(self, stop: asyncio.Event) -> bool:
        """Wait until this allocator leads (True), or until stopped (False)."""
        seen: tuple[int, float] | None = None  # (revision, when first seen on our clock)
        announced = False
        while not stop.is_set():
            sent_at = self.clock()
            try:
                entry = await self.kv.get(KEY)
            except KeyNotFoundError:
                entry = None
            except Exception as e:  # NATS away: keep waiting
                log.warning("leader lease unreadable", extra={"error": repr(e)})
                await sleep_or_stop(stop, 1.0)
                continue
            try:
                if entry is None:
                    lease = lease_codec.encode(LeaderLease(holder=self.holder, term=1))
                    self._won(await self.kv.create(KEY, lease), 1, sent_at)
                    return True
                current = lease_codec.decode(entry.value or b"")
                if not current.holder:  # resigned: free to take at once
                    term = current.term + 1
                    lease = lease_codec.encode(LeaderLease(holder=self.holder, term=term))
                    revision = await self.kv.update(KEY, lease, last=entry.revision)
                    self._won(revision, term, sent_at)
                    return True
                if seen is None or seen[0] != entry.revision:
                    seen = (entry.revision or 0, self.clock())
                    if not announced:
                        log.info("standing by", extra={"leader": current.holder})
                        announced = True
                elif self.clock() - seen[1] >= self.ttl_s:
                    lease = lease_codec.encode(
                        LeaderLease(holder=self.holder, term=current.term + 1)
                    )
                    revision = await self.kv.update(KEY, lease, last=entry.revision)
                    log.info("took over", extra={"from": current.holder, "term": current.term + 1})
                    self._won(revision, current.term + 1, sent_at)
                    return True
            except KeyWrongLastSequenceError:
                seen = None  # someone else moved first: watch the new lease
            except Exception as e:
                log.warning("leader lease not taken", extra={"error": repr(e)})
            await sleep_or_stop(stop, min(1.0, self.ttl_s / 10))
        return False

    async def keep(self, stop: asyncio.Event) -> None:
        """Renew until stopped; return when the lease is lost (the caller stops serving)."""
        while not stop.is_set() and self.holds():
            await sleep_or_stop(stop, self.ttl_s / 4)
            if stop.is_set():
                return
            sent_at = self.clock()
            lease = lease_codec.encode(LeaderLease(holder=self.holder, term=self.term))
            try:
                revision = await self.kv.update(KEY, lease, last=self._revision)
            except KeyWrongLastSequenceError:
                log.error("leader lease taken by another allocator")
                self._held_until = 0.0
                return
            except Exception as e:  # NATS away: the lease runs out unless it comes back
                log.warning("leader lease not renewed", extra={"error": repr(e)})
                continue
            self._won(revision, self.term, sent_at)
        if not stop.is_set():
            log.error("leader lease ran out")

    async def resign(self) -> None:
        """Hand over at once on a clean stop (the standby need not wait out the TTL)."""
        if self._held_until == 0.0:
            return
        self._held_until = 0.0
        vacant = lease_codec.encode(LeaderLease(holder="", term=self.term))
        with contextlib.suppress(Exception):
            await self.kv.update(KEY, vacant, last=self._revision)
