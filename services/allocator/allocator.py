"""The stateful allocator: it holds the cluster state, changes it only through the pure core
under one lock, and makes every change durable in the allocations bucket before anyone is told
about it. Protocol shells (services/allocator/natsapi.py, extender.py) call its methods."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

import msgspec
from nats.js import JetStreamContext
from nats.js.kv import KeyValue

from services.allocator.core import ledger, waiting, world
from services.allocator.core.placement import FitMemo, Never, SchedulingSettings, Wait
from services.allocator.core.signals import Signals
from services.allocator.core.state import ClusterState
from services.allocator.core.world import World
from services.allocator.fencedkv import FencedBucket
from services.allocator.metrics import AllocatorMetrics
from services.allocator.quarantine import Quarantine
from services.allocator.settings import AllocatorSettings
from shared import kvwatch, tracing
from shared.errors import HamiError, InvalidRequest, Unavailable
from shared.kube.client import KubeClient
from shared.resources import NODE_RELEASED
from shared.schemas.events import AllocationEvent, event_codec, event_subject
from shared.schemas.inventory import NodeInventory, inventory_codec
from shared.schemas.placement import (
    ALLOCATIONS_BUCKET,
    DEFAULT_RESERVATION_TTL_S,
    CommitReply,
    CommitRequest,
    DeviceStatus,
    PlaceReply,
    PlaceRequest,
    ReleaseReply,
    ReleaseRequest,
    RenewReply,
    RenewRequest,
    StatusReply,
    StatusRequest,
    WaitingRequest,
    allocation_codec,
)
from shared.schemas.usage import usage_codec

log = logging.getLogger("hami.allocator")
Clock = Callable[[], float]


class Allocator:
    """Holds the state; every change goes through the core under one lock, and is durable in
    the allocations bucket before anyone is told about it."""

    def __init__(
        self,
        settings: AllocatorSettings,
        js: JetStreamContext,
        allocations: KeyValue,
        clock: Clock = time.time,
        fence: Callable[[], bool] = lambda: True,
        term: Callable[[], int] = lambda: 0,
        metrics: AllocatorMetrics | None = None,
    ) -> None:
        self.settings = settings
        self.scheduling = SchedulingSettings(
            node_policy=settings.node_policy,
            gpu_policy=settings.gpu_policy,
            node_ttl_s=settings.node_ttl_s,
        )
        self.world = World()
        self._js = js
        self._allocations = allocations
        self._writer = FencedBucket(js, ALLOCATIONS_BUCKET)
        """Every write goes here: it fails once another allocator has taken the bucket over."""
        self._clock = clock
        self._lock = asyncio.Lock()
        self.fits = FitMemo()
        """Remembered fits and scores, shared by every decision and the extender's calls."""
        self.quarantine = Quarantine()
        self.metrics = metrics if metrics is not None else AllocatorMetrics()
        self._fence = fence
        self._term = term
        self.freed: set[str] = set()
        """Nodes whose inventory now offers more than before (announce_freed tells of them)."""
        self.freed_event = asyncio.Event()
        """False once this allocator may no longer write (it lost the leader lease)."""

    @property
    def deposed(self) -> asyncio.Event:
        """Set once a write was refused because another allocator wrote since."""
        return self._writer.deposed

    def _check_fence(self) -> None:
        if not self._fence():
            raise Unavailable("this allocator no longer leads; retry (the new leader answers)")

    @property
    def state(self) -> ClusterState:
        """The ledger (what the extender and the status read)."""
        return self.world.ledger

    @state.setter
    def state(self, state: ClusterState) -> None:
        self.world = replace(self.world, ledger=state)

    @property
    def signals(self) -> Signals:
        """What the allocator learnt by watching (heat, the request mix)."""
        return self.world.signals

    async def restore(self) -> int:
        """Take the bucket over (seal it), then read the state back: a write an earlier leader
        still had in flight is either in what is read here or refused."""
        await self._writer.seal()
        records = await kvwatch.snapshot(self._js, ALLOCATIONS_BUCKET)
        now = self._clock()
        for key, value in records.items():
            try:
                record = allocation_codec.decode(value)
            except InvalidRequest as e:
                # Keep it, and what it names out of use: its devices must not be granted twice.
                self.quarantine.add(key, value)
                log.error(
                    "unreadable allocation record: its devices are kept out of use",
                    extra={"key": key, "error": e, "quarantine": self.quarantine.describe()},
                )
                continue
            self.world = world.restored(self.world, record, now)
        return len(records)

    def observe_node(self, key: str, value: bytes | None) -> None:
        if value is None:
            self.world = world.node_left(self.world, key)
            log.info("node left", extra={"node": key})
            return
        try:
            inventory = inventory_codec.decode(value)
        except InvalidRequest as e:
            log.warning("ignoring malformed inventory", extra={"node": key, "error": e})
            return
        known = self.state.nodes.get(inventory.node)
        if known is None:
            log.info(
                "node joined", extra={"node": inventory.node, "devices": len(inventory.devices)}
            )
        elif capacity_grew(known.inventory, inventory):
            self.freed.add(inventory.node)  # kube-scheduler hears of it (announce_freed)
            self.freed_event.set()
        self.world = world.node_seen(self.world, self.quarantine.apply(inventory), self._clock())

    async def announce_freed(self, kube: KubeClient, stop: asyncio.Event) -> None:
        """Tell kube-scheduler when a node can take more than before without a release of
        ours (MIG slices an ended allocation held are free again, a device came back): an
        update of the node makes it retry the pods it found no room for."""
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.freed_event.wait(), 1.0)
            self.freed_event.clear()
            names, self.freed = sorted(self.freed), set()
            for node in names:
                try:
                    await kube.annotate_node(node, {NODE_RELEASED: f"{self._clock():.3f}"})
                except HamiError as e:
                    log.warning("could not mark the node freed", extra={"node": node, "error": e})

    def observe_usage(self, data: bytes) -> None:
        """A usage sample from a node agent (usage feedback: core/heat.py)."""
        try:
            sample = usage_codec.decode(data)
        except InvalidRequest as e:
            log.warning("ignoring malformed usage sample", extra={"error": e})
            return
        self.world = world.usage_seen(self.world, sample, self._clock())

    async def _publish(self, events: list[AllocationEvent]) -> None:
        for event in events:
            msg_id = f"{event.allocation.allocation_id}:{event.kind}"
            try:
                await self._js.publish(
                    event_subject(event.kind),
                    event_codec.encode(event),
                    headers={"Nats-Msg-Id": msg_id},
                )
            except Exception as e:  # the durable record already changed; events are best effort
                log.warning("event not published", extra={"event": msg_id, "error": repr(e)})

    async def place_request(self, request: PlaceRequest) -> PlaceReply:
        """Decide, record durably, then apply: the one path every API (NATS, extender) takes.
        Each is a span (policy, nodes considered, outcome, reason) and counted by outcome."""
        node_policy = request.node_policy or self.scheduling.node_policy
        gpu_policy = request.gpu_policy or self.scheduling.gpu_policy
        started = time.perf_counter()
        attributes = {
            "hami.request_id": request.request_id,
            "hami.policy.node": node_policy,
            "hami.policy.gpu": gpu_policy,
            "hami.nodes.considered": len(request.candidate_nodes)
            if request.candidate_nodes is not None
            else len(self.state.nodes),
        }
        # The decision is told on the span of the call that asked for it (the NATS request,
        # the extender's bind): one span less per placement; a direct call gets its own.
        with tracing.decision_span("allocator decide", attributes) as span:
            outcome = "error"
            try:
                reply = await self._place(request)
                outcome = reply.outcome
                if span.is_recording():
                    span.set_attributes(_told(reply))
                return reply
            finally:
                self.metrics.decided(
                    outcome,
                    node_policy,
                    gpu_policy,
                    time.perf_counter() - started,
                    len(self.world.waiting),
                )

    async def _place(self, request: PlaceRequest) -> PlaceReply:
        asked = time.perf_counter()
        async with self._lock:
            locked = time.perf_counter()
            existing = ledger.retried(self.state, request)
            if existing is not None:
                return PlaceReply(outcome="placed", allocation=existing)
            now = self._clock()
            self.world, decision = world.asked(self.world, request, self.scheduling, now, self.fits)
            if isinstance(decision, Wait):
                return PlaceReply(outcome="wait", reason=decision.reason)
            if isinstance(decision, Never):
                return PlaceReply(outcome="never", reason=decision.reason)
            record = msgspec.structs.replace(
                ledger.record_for(request, decision.fit, uuid.uuid4().hex, now),
                term=self._term(),
                trace_id=tracing.current_trace_id(),
            )
            self._check_fence()
            writing = time.perf_counter()
            try:
                await self._writer.put(record.allocation_id, allocation_codec.encode(record))
            except Unavailable:
                raise
            except Exception as e:
                raise Unavailable("cannot record the allocation durably; retry") from e
            if not self._fence():
                # The lease ran out while the write was on its way: a successor may not have
                # seen it. Take it back rather than let it stand beside the successor's grants.
                with contextlib.suppress(Exception):
                    await self._writer.delete(record.allocation_id)
                raise Unavailable("this allocator no longer leads; retry (the new leader answers)")
            self.state, events = ledger.commit(self.state, record, now)
            done = time.perf_counter()
        log.info(
            "placed",
            extra={
                "wait_ms": round((locked - asked) * 1e3, 2),  # for the placement lock
                "held_ms": round((done - locked) * 1e3, 2),
                "write_ms": round((done - writing) * 1e3, 2),  # the durable record
                "allocation": record.allocation_id,
                "node": record.node,
                "devices": [g.uuid for c in record.containers for g in c],
            },
        )
        await self._publish(events)
        return PlaceReply(outcome="placed", allocation=record)

    async def reserve(self, request: PlaceRequest) -> PlaceReply:
        if request.lease_ttl_s is None:
            request = msgspec.structs.replace(request, lease_ttl_s=DEFAULT_RESERVATION_TTL_S)
        return await self.place_request(request)

    async def commit(self, request: CommitRequest) -> CommitReply:
        """The schema bounds lease_ttl_s."""
        async with self._lock:
            ledger.check_holder(self.state, request.allocation_id, request.holder_secret)
            state, record = ledger.set_lease(
                self.state, request.allocation_id, request.lease_ttl_s, self._clock()
            )
            if record is None:
                return CommitReply(committed=False)
            self._check_fence()
            try:
                await self._writer.put(record.allocation_id, allocation_codec.encode(record))
            except Exception as e:
                raise Unavailable("cannot record the commit durably; retry") from e
            self.state = state
        return CommitReply(committed=True, allocation=record)

    async def release_allocation(self, allocation_id: str, reason: str) -> bool:
        return await self._release(allocation_id, expired=False, reason=reason)

    async def renew(self, request: RenewRequest) -> RenewReply:
        async with self._lock:
            ledger.check_holder(self.state, request.allocation_id, request.holder_secret)
            self.state, left, ok = ledger.renew(self.state, request.allocation_id, self._clock())
        return RenewReply(ok=ok, expires_in_s=left)

    async def _release(self, allocation_id: str, *, expired: bool, reason: str) -> bool:
        async with self._lock:
            if allocation_id not in self.state.allocations:
                return False
            self._check_fence()
            try:
                await self._writer.delete(allocation_id)
            except Exception as e:
                raise Unavailable("cannot delete the allocation record; retry") from e
            self.state, events = ledger.release(
                self.state,
                allocation_id,
                self._clock(),
                kind="expired" if expired else "released",
                reason=reason,
            )
        log.info(
            "expired" if expired else "released",
            extra={"allocation": allocation_id, "reason": reason},
        )
        await self._publish(events)
        return True

    async def release(self, request: ReleaseRequest) -> ReleaseReply:
        ledger.check_holder(self.state, request.allocation_id, request.holder_secret)
        released = await self._release(request.allocation_id, expired=False, reason=request.reason)
        return ReleaseReply(released=released)

    async def reconcile_pods(self, kube: KubeClient) -> None:
        """Release what pods deleted or finished behind our back (or while we were down) still
        hold."""
        listed_at = self._clock()
        pods, _ = await kube.list_pods()
        live = {str(p["metadata"].get("uid", "")) for p in pods if not _finished(p)}
        for allocation_id in ledger.orphaned(self.state, live, listed_at):
            await self._release_pod(kube, allocation_id, "pod gone or finished")

    async def follow_pods(self, kube: KubeClient, stop: asyncio.Event) -> None:
        """Release a pod's devices as soon as it is deleted or has finished (HAMi counts only
        pods that can still run), so kube-scheduler's retry of a waiting pod finds them free;
        the periodic reconcile catches what a broken watch missed."""
        async for event in kube.watch("pods", stop):
            if event.type != "DELETED" and not _finished(event.object):
                continue
            uid = str(event.object.get("metadata", {}).get("uid", ""))
            allocation_id = self.state.by_request.get(f"pod/{uid}")
            if allocation_id is not None:
                reason = "pod deleted" if event.type == "DELETED" else "pod finished"
                await self._release_pod(kube, allocation_id, reason)

    async def _release_pod(self, kube: KubeClient, allocation_id: str, reason: str) -> None:
        held = self.state.allocations.get(allocation_id)
        if held is None or not await self._release(allocation_id, expired=False, reason=reason):
            return
        node = held.record.node
        # kube-scheduler may have retried a waiting pod on the same event, a moment before
        # this release: an update of the node makes it retry again, now that it can fit.
        try:
            await kube.annotate_node(node, {NODE_RELEASED: f"{self._clock():.3f}"})
        except HamiError as e:
            log.warning("could not mark the node released", extra={"node": node, "error": e})

    async def expire_leases(self) -> None:
        for allocation_id in ledger.expired(self.state, self._clock()):
            try:
                await self._release(allocation_id, expired=True, reason="lease not renewed")
            except Unavailable as e:
                log.warning(
                    "lease expiry postponed", extra={"allocation": allocation_id, "error": e}
                )

    async def status(self, request: StatusRequest) -> StatusReply:
        if request.waiting_only:
            return StatusReply(
                nodes=(),
                devices=(),
                allocations=(),
                problems=tuple(self.quarantine.describe()),
                waiting=self._waiting(request),
            )
        state = self.state
        nodes = [
            r.inventory
            for r in state.nodes.values()
            if request.node is None or r.name == request.node
        ]
        partitions: dict[str, list[str]] = {}
        for held in state.allocations.values():
            for grant in (g for c in held.record.containers for g in c if g.profile):
                at = "" if grant.placement is None else f"@{grant.placement}"
                partitions.setdefault(grant.uuid, []).append(f"{grant.profile}{at}")
        devices = []
        for inventory in nodes:
            for d in inventory.devices:
                used = state.device_usage(inventory.node, d.uuid)
                devices.append(
                    DeviceStatus(
                        node=inventory.node,
                        uuid=d.uuid,
                        index=d.index,
                        model=d.model,
                        memory_mib=d.memory_mib,
                        cores=d.cores,
                        split_count=d.split_count,
                        used_memory_mib=used.memory_mib,
                        used_cores=used.cores,
                        used_count=used.count,
                        healthy=d.healthy,
                        kind=d.kind,
                        isolation=d.isolation,
                        partitions=tuple(sorted(partitions.get(d.uuid, ()))),
                    )
                )
        allocations = [
            a.record
            for a in state.allocations.values()
            if request.node is None or a.record.node == request.node
        ]
        allocations.sort(key=lambda r: r.created_at)
        return StatusReply(
            nodes=tuple(sorted(nodes, key=lambda n: n.node)),
            devices=tuple(devices),
            allocations=tuple(allocations),
            problems=tuple(self.quarantine.describe()),
            waiting=self._waiting(request),
        )

    def _waiting(self, request: StatusRequest) -> tuple[WaitingRequest, ...]:
        if request.node is not None:  # a waiting request has no node yet
            return ()
        live = waiting.current(self.world.waiting, self._clock()).values()
        return tuple(sorted(live, key=lambda w: w.since))


def capacity_grew(before: NodeInventory, after: NodeInventory) -> bool:
    """Whether a node can take something it could not before: a device added or healthy
    again, more memory, cores or shares, or held MIG slices freed."""
    old = {d.uuid: d for d in before.devices}
    for device in after.devices:
        was = old.get(device.uuid)
        if was is None:
            return device.healthy
        if device.healthy and not was.healthy:
            return True
        if (
            device.memory_mib > was.memory_mib
            or device.cores > was.cores
            or device.split_count > was.split_count
            or was.slices_held & ~device.slices_held
        ):
            return True
    return False


def _told(reply: PlaceReply) -> dict[str, str]:
    """What a placement's span says of its answer."""
    told: dict[str, str] = {"hami.outcome": reply.outcome}
    if reply.allocation is not None:
        told["hami.node"] = reply.allocation.node
        told["hami.allocation_id"] = reply.allocation.allocation_id
    if reply.reason:
        told["hami.reason"] = reply.reason
    return told


def _finished(pod: Mapping[str, Any]) -> bool:
    return pod.get("status", {}).get("phase") in ("Succeeded", "Failed")
