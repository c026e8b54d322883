"""This node's allocations as the allocator recorded them (the `hami_allocations` bucket),
followed live, so Allocate can check a pod's annotations against the durable record."""

from __future__ import annotations

import asyncio
import logging

import msgspec
from nats.js.kv import KeyValue

from shared.kvwatch import follow
from shared.schemas.placement import AllocationRecord, allocation_codec

log = logging.getLogger("hami.nodeagent.allocations")


class NodeAllocations:
    def __init__(self, node: str) -> None:
        self.node = node
        self._by_key: dict[str, AllocationRecord] = {}
        self._by_pod: dict[str, AllocationRecord] = {}
        self._changed = asyncio.Condition()

    def local_jobs(self) -> list[AllocationRecord]:
        """This node's `hami run` jobs (their regions are read for per-job usage)."""
        return [r for r in self._by_key.values() if r.holder.kind == "local"]

    def holds(self, allocation_id: str) -> bool:
        """Whether this node's allocation is live (its record is in the bucket)."""
        return allocation_id in self._by_key

    def for_pod(self, pod_uid: str) -> AllocationRecord | None:
        return self._by_pod.get(pod_uid)

    async def wait_for_pod(self, pod_uid: str, timeout_s: float) -> AllocationRecord | None:
        """The pod's record, waiting a little for the watch: bind writes the record before it
        annotates and binds the pod, so it is normally here before the kubelet asks."""
        async with self._changed:
            try:
                await asyncio.wait_for(
                    self._changed.wait_for(lambda: pod_uid in self._by_pod), timeout_s
                )
            except TimeoutError:
                return None
        return self._by_pod.get(pod_uid)

    async def observe(self, key: str, value: bytes | None) -> None:
        old = self._by_key.pop(key, None)
        if old is not None and self._by_pod.get(old.holder.pod_uid) is old:
            del self._by_pod[old.holder.pod_uid]
        if value is not None:
            try:
                record = allocation_codec.decode(value)
            except msgspec.DecodeError as e:
                # Unreadable: its pod fails closed at Allocate (no record), it is not guessed.
                log.warning("unreadable allocation record", extra={"key": key, "error": str(e)})
                return
            if record.node == self.node:
                self._by_key[key] = record
                if record.holder.kind == "pod":
                    self._by_pod[record.holder.pod_uid] = record
        async with self._changed:
            self._changed.notify_all()

    async def follow(self, kv: KeyValue, stop: asyncio.Event) -> None:
        async for key, value in follow(kv, stop):
            await self.observe(key, value)
