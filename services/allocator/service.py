"""The allocator's I/O shell: NATS in, decisions from the pure core, durable records out."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

import msgspec
from aiohttp import web
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.errors import KeyWrongLastSequenceError
from nats.js.kv import KeyValue
from nats.micro import add_service
from nats.micro.request import Request

from services.allocator.core import fragmentation, heat, ledger
from services.allocator.core.placement import FitMemo, Never, SchedulingSettings, Wait, decide
from services.allocator.core.state import ClusterState
from services.allocator.extender import Extender
from services.allocator.extenderhttp import ExtenderRouter, answer_forwarded, application
from services.allocator.leadership import Leadership
from services.allocator.quarantine import Quarantine
from services.allocator.settings import AllocatorSettings, kinds_of
from shared import kvwatch
from shared.errors import HamiError, InvalidRequest, Unavailable
from shared.kube.client import KubeClient
from shared.natsauth import credentials_of
from shared.natsutil import (
    allocations_bucket,
    connect,
    ensure_event_stream,
    ensure_kv,
    nodes_bucket,
)
from shared.resources import NODE_RELEASED
from shared.runloop import every, sleep_or_stop
from shared.schemas.base import Endpoint, Rep, Req
from shared.schemas.events import AllocationEvent, event_codec, event_subject
from shared.schemas.inventory import inventory_codec
from shared.schemas.leader import LEADER_BUCKET
from shared.schemas.placement import (
    COMMIT,
    DEFAULT_RESERVATION_TTL_S,
    ENDPOINTS,
    PLACE,
    RELEASE,
    RENEW,
    RESERVE,
    STATUS,
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
    allocation_codec,
)
from shared.schemas.usage import USAGE, usage_codec

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
    ) -> None:
        self.settings = settings
        self.scheduling = SchedulingSettings(
            node_policy=settings.node_policy,
            gpu_policy=settings.gpu_policy,
            node_ttl_s=settings.node_ttl_s,
        )
        self.state = ClusterState()
        self._js = js
        self._allocations = allocations
        self._clock = clock
        self._lock = asyncio.Lock()
        self.fits = FitMemo()
        """Remembered fits and scores, shared by every decision and the extender's calls."""
        self.quarantine = Quarantine()
        self._fence = fence
        self._term = term
        """False once this allocator may no longer write (it lost the leader lease)."""

    def _check_fence(self) -> None:
        if not self._fence():
            raise Unavailable("this allocator no longer leads; retry (the new leader answers)")

    async def restore(self) -> int:
        records = await kvwatch.snapshot(self._allocations)
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
            self.state = ledger.restore(self.state, record, now)
            self.state = fragmentation.observe_request(
                self.state, fragmentation.shape_of_record(record), record.created_at
            )
        return len(records)

    def observe_node(self, key: str, value: bytes | None) -> None:
        if value is None:
            self.state = ledger.forget_node(heat.forget_heat(self.state, key), key)
            log.info("node left", extra={"node": key})
            return
        try:
            inventory = inventory_codec.decode(value)
        except InvalidRequest as e:
            log.warning("ignoring malformed inventory", extra={"node": key, "error": e})
            return
        if inventory.node not in self.state.nodes:
            log.info(
                "node joined", extra={"node": inventory.node, "devices": len(inventory.devices)}
            )
        self.state = ledger.observe_inventory(
            self.state, self.quarantine.apply(inventory), self._clock()
        )

    def observe_usage(self, data: bytes) -> None:
        """A usage sample from a node agent (usage feedback: core/heat.py)."""
        try:
            sample = usage_codec.decode(data)
        except InvalidRequest as e:
            log.warning("ignoring malformed usage sample", extra={"error": e})
            return
        self.state = heat.observe_usage(self.state, sample, self._clock())

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
        """Decide, record durably, then apply: the one path every API (NATS, extender) takes."""
        async with self._lock:
            existing = ledger.retried(self.state, request)
            if existing is not None:
                return PlaceReply(outcome="placed", allocation=existing)
            now = self._clock()
            self.state = fragmentation.observe_request(self.state, request.containers, now)
            decision = decide(self.state, request, self.scheduling, now, self.fits)
            if isinstance(decision, Wait):
                return PlaceReply(outcome="wait", reason=decision.reason)
            if isinstance(decision, Never):
                return PlaceReply(outcome="never", reason=decision.reason)
            record = msgspec.structs.replace(
                ledger.record_for(request, decision.fit, uuid.uuid4().hex, now), term=self._term()
            )
            self._check_fence()
            try:
                await self._allocations.create(
                    record.allocation_id, allocation_codec.encode(record)
                )
            except KeyWrongLastSequenceError as e:
                raise HamiError("allocation id collision", id=record.allocation_id) from e
            except Exception as e:
                raise Unavailable("cannot record the allocation durably; retry") from e
            if not self._fence():
                # The lease ran out while the write was on its way: a successor may not have
                # seen it. Take it back rather than let it stand beside the successor's grants.
                with contextlib.suppress(Exception):
                    await self._allocations.delete(record.allocation_id)
                raise Unavailable("this allocator no longer leads; retry (the new leader answers)")
            self.state, events = ledger.commit(self.state, record, now)
        log.info(
            "placed",
            extra={
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
                await self._allocations.put(record.allocation_id, allocation_codec.encode(record))
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
                await self._allocations.delete(allocation_id)
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
        state = self.state
        nodes = [
            r.inventory
            for r in state.nodes.values()
            if request.node is None or r.name == request.node
        ]
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
        )


def endpoint(
    served: Endpoint[Req, Rep], handler: Callable[[Req], Awaitable[Rep]]
) -> Callable[[Request], Awaitable[None]]:
    """Decode, call, encode, and map errors to NATS micro replies, in one place."""

    async def handle(request: Request) -> None:
        try:
            reply = served.replies.encode(await handler(served.requests.decode(request.data)))
        except HamiError as e:
            await request.respond_error(e.code, str(e))
            return
        except Exception as e:
            log.exception("handler failed", extra={"subject": request.subject})
            await request.respond_error("internal", f"internal error: {e!r}")
            return
        await request.respond(reply)

    return handle


async def _retrying(stop: asyncio.Event, name: str, work: Callable[[], Awaitable[None]]) -> None:
    """Run a long-lived loop again after it fails (the API server restarted, say)."""
    while not stop.is_set():
        try:
            await work()
        except Exception as e:
            log.warning("loop failed, restarting", extra={"task": name, "error": repr(e)})
            await sleep_or_stop(stop, 2.0)


def _finished(pod: Mapping[str, Any]) -> bool:
    return pod.get("status", {}).get("phase") in ("Succeeded", "Failed")


async def _watch_nodes(allocator: Allocator, nodes: KeyValue, stop: asyncio.Event) -> None:
    async for key, value in kvwatch.follow(nodes, stop):
        allocator.observe_node(key, value)


async def _serve_extender(
    allocator: Allocator,
    settings: AllocatorSettings,
    stop: asyncio.Event,
    started: Callable[[int], None] | None,
    router: ExtenderRouter,
) -> None:
    """While leading: the extender answers here, forwarded calls too, and pods are followed."""
    kube = await KubeClient.from_config(settings.kubeconfig)
    reconcile = asyncio.create_task(
        every(
            stop,
            settings.reconcile_interval_s,
            "reconcile-pods",
            lambda: allocator.reconcile_pods(kube),
        ),
        name="reconcile-pods",
    )
    follow = asyncio.create_task(
        _retrying(stop, "follow-pods", lambda: allocator.follow_pods(kube, stop)),
        name="follow-pods",
    )
    extender = Extender(allocator, kube, kinds=kinds_of(settings))
    forwarded = asyncio.create_task(answer_forwarded(router.nc, extender, stop), name="forwarded")
    router.local = extender
    try:
        if started is not None and router.port is not None:
            started(router.port)
        await stop.wait()
    finally:
        router.local = None
        await forwarded
        await reconcile
        follow.cancel()  # a read-only watch that may wait minutes for its next event
        with contextlib.suppress(asyncio.CancelledError):
            await follow
        await kube.close()


@contextlib.asynccontextmanager
async def _extender_http(
    settings: AllocatorSettings, router: ExtenderRouter
) -> AsyncIterator[None]:
    """The extender's HTTP API from the start, leader or not (services/allocator/extenderhttp)."""
    if settings.extender_port is None:
        yield
        return
    runner = web.AppRunner(application(router.call, router.healthy), access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, settings.extender_host, settings.extender_port or 0)
        await site.start()
        router.port = runner.addresses[0][1]
        log.info("extender serving", extra={"address": f"{settings.extender_host}:{router.port}"})
        yield
    finally:
        await runner.cleanup()


async def serve(
    settings: AllocatorSettings,
    stop: asyncio.Event,
    ready: Callable[[], None] | None = None,
    extender_started: Callable[[int], None] | None = None,
) -> None:
    nc: Client = await connect(
        settings.nats_url, "hami-allocator", credentials=credentials_of(settings.nats_credentials)
    )
    try:
        js = nc.jetstream()
        await ensure_event_stream(js, replicas=settings.nats_replicas)
        leadership = Leadership(
            await ensure_kv(js, LEADER_BUCKET, replicas=settings.nats_replicas),
            uuid.uuid4().hex,
            ttl_s=settings.leader_ttl_s,
        )
        router = ExtenderRouter(nc)
        async with _extender_http(settings, router):
            if not await leadership.acquire(stop):
                return
            # A deposed leader's last write may still be on its way (it stopped writing a
            # margin before its lease ran out): let it land before the state is read back.
            await sleep_or_stop(stop, leadership.margin_s)
            try:
                await _lead(settings, stop, ready, extender_started, nc, leadership, router)
            finally:
                await leadership.resign()
    finally:
        await nc.drain()


async def _lead(
    settings: AllocatorSettings,
    stop: asyncio.Event,
    ready: Callable[[], None] | None,
    extender_started: Callable[[int], None] | None,
    nc: Client,
    leadership: Leadership,
    router: ExtenderRouter,
) -> None:
    """Serve while this allocator holds the leader lease (state restored from the bucket
    first); a lost lease ends it with Unavailable, so the process restarts as a standby."""
    js = nc.jetstream()
    allocations = await allocations_bucket(js, replicas=settings.nats_replicas)
    nodes = await nodes_bucket(js, replicas=settings.nats_replicas)
    allocator = Allocator(
        settings, js, allocations, fence=leadership.holds, term=lambda: leadership.term
    )
    restored = await allocator.restore()
    log.info("allocations restored", extra={"count": restored, "term": leadership.term})
    service = await add_service(
        nc, name="hami-allocator", version="0.1.0", description="HAMi placement API"
    )
    served: list[Endpoint[Any, Any]] = []

    async def serve_endpoint(
        api: Endpoint[Req, Rep], handler: Callable[[Req], Awaitable[Rep]]
    ) -> None:  # typed: a handler must take the endpoint's request and return its reply
        await service.add_endpoint(
            name=api.name, subject=api.subject, handler=endpoint(api, handler)
        )
        served.append(api)

    await serve_endpoint(PLACE, allocator.place_request)
    await serve_endpoint(RESERVE, allocator.reserve)
    await serve_endpoint(COMMIT, allocator.commit)
    await serve_endpoint(RENEW, allocator.renew)
    await serve_endpoint(RELEASE, allocator.release)
    await serve_endpoint(STATUS, allocator.status)
    assert set(served) == set(ENDPOINTS), "every endpoint of the API is served"

    async def on_usage(msg: Msg) -> None:
        allocator.observe_usage(msg.data)

    usage = await nc.subscribe(f"{USAGE}.>", cb=on_usage)
    serving = asyncio.Event()  # set on stop, and when the lease is lost

    async def keep_lease() -> None:
        await leadership.keep(stop)
        serving.set()

    async def until_stopped() -> None:
        stopping = asyncio.ensure_future(stop.wait())
        lost = asyncio.ensure_future(serving.wait())
        await asyncio.wait((stopping, lost), return_when=asyncio.FIRST_COMPLETED)
        for waiter in (stopping, lost):
            waiter.cancel()
        serving.set()

    if ready is not None:
        ready()
    log.info("allocator serving", extra={"nats": settings.nats_url})
    try:
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(keep_lease(), name="leader-lease")
            tasks.create_task(until_stopped(), name="stop")
            tasks.create_task(_watch_nodes(allocator, nodes, serving), name="watch-nodes")
            tasks.create_task(
                every(serving, settings.sweep_interval_s, "expire-leases", allocator.expire_leases),
                name="expire-leases",
            )
            if settings.extender_port is not None:
                tasks.create_task(
                    _serve_extender(allocator, settings, serving, extender_started, router),
                    name="extender",
                )
    finally:
        await usage.unsubscribe()
        await service.stop()
    if not stop.is_set():
        raise Unavailable("this allocator lost the leader lease; restart to stand by")
