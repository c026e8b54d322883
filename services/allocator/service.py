"""The allocator's composition root: connect, stand by or lead, and while leading run the
allocator (services/allocator/allocator.py), its NATS API (natsapi.py), its extender
(extender.py, extenderhttp.py) and the loops that feed it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

from aiohttp import web
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.kv import KeyValue
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from services.allocator import heap
from services.allocator.allocator import Allocator
from services.allocator.extender import Extender
from services.allocator.extenderhttp import ExtenderRouter, answer_forwarded, application
from services.allocator.leadership import Leadership
from services.allocator.metrics import AllocatorMetrics
from services.allocator.natsapi import serve_api
from services.allocator.settings import AllocatorSettings, kinds_of
from shared import kvwatch
from shared.errors import Unavailable
from shared.kube.client import KubeClient
from shared.natsauth import credentials_of
from shared.natsutil import (
    allocations_bucket,
    connect,
    ensure_event_stream,
    ensure_kv,
    nodes_bucket,
)
from shared.runloop import every, raise_if_cancelling, sleep_or_stop
from shared.schemas.leader import LEADER_BUCKET
from shared.schemas.usage import USAGE

log = logging.getLogger("hami.allocator")
Clock = Callable[[], float]


async def _retrying(stop: asyncio.Event, name: str, work: Callable[[], Awaitable[None]]) -> None:
    """Run a long-lived loop again after it fails (the API server restarted, say)."""
    while not stop.is_set():
        try:
            await work()
        except Exception as e:
            raise_if_cancelling()
            log.warning("loop failed, restarting", extra={"task": name, "error": repr(e)})
            await sleep_or_stop(stop, 2.0)


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
    announce = asyncio.create_task(
        _retrying(stop, "announce-freed", lambda: allocator.announce_freed(kube, stop)),
        name="announce-freed",
    )
    extender = Extender(
        allocator,
        kube,
        kinds=kinds_of(settings),
        best_node_only=settings.extender_best_node_only,
        metrics=allocator.metrics,
    )
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
        await announce  # it ends within a second of stop
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


@contextlib.asynccontextmanager
async def _metrics_http(
    settings: AllocatorSettings, metrics: AllocatorMetrics
) -> AsyncIterator[None]:
    """The allocator's own series at /metrics, on every allocator (a standby's are quiet)."""
    if settings.metrics_port is None:
        yield
        return

    async def scrape(_: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    app = web.Application()
    app.router.add_get("/metrics", scrape)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, settings.metrics_host, settings.metrics_port).start()
        log.info("metrics served", extra={"address": runner.addresses[0][:2]})
        yield
    finally:
        await runner.cleanup()


async def serve(
    settings: AllocatorSettings,
    stop: asyncio.Event,
    ready: Callable[[], None] | None = None,
    extender_started: Callable[[int], None] | None = None,
) -> None:
    heap.tune_for_a_large_heap()
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
        metrics = AllocatorMetrics()
        async with _extender_http(settings, router), _metrics_http(settings, metrics):
            if not await leadership.acquire(stop):
                return
            # A deposed leader's last write may still be on its way (it stopped writing a
            # margin before its lease ran out): let it land before the state is read back.
            await sleep_or_stop(stop, leadership.margin_s)
            try:
                await _lead(
                    settings, stop, ready, extender_started, nc, leadership, router, metrics
                )
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
    metrics: AllocatorMetrics,
) -> None:
    """Serve while this allocator holds the leader lease (state restored from the bucket
    first); a lost lease ends it with Unavailable, so the process restarts as a standby."""
    js = nc.jetstream()
    allocations = await allocations_bucket(js, replicas=settings.nats_replicas)
    nodes = await nodes_bucket(js, replicas=settings.nats_replicas)
    allocator = Allocator(
        settings,
        js,
        allocations,
        fence=leadership.holds,
        term=lambda: leadership.term,
        metrics=metrics,
    )
    restored = await allocator.restore()
    log.info("allocations restored", extra={"count": restored, "term": leadership.term})
    service = await serve_api(nc, allocator)

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
        refused = asyncio.ensure_future(allocator.deposed.wait())  # a write was fenced off
        await asyncio.wait((stopping, lost, refused), return_when=asyncio.FIRST_COMPLETED)
        for waiter in (stopping, lost, refused):
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
