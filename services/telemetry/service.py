"""Telemetry's I/O shell: follow the buckets, the usage stream and the allocator's status;
serve Prometheus metrics, the web page and its JSON, and (when asked) OTLP metrics."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import msgspec
from aiohttp import web
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.kv import KeyValue
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector, CollectorRegistry

from services.telemetry import core, otelmetrics
from services.telemetry.core import DESCRIPTIONS, KINDS, TelemetryState, samples
from services.telemetry.settings import TelemetrySettings
from services.telemetry.view import view
from shared import kvwatch
from shared.allocator_client import AllocatorClient
from shared.errors import HamiError, InvalidRequest
from shared.natsauth import credentials_of
from shared.natsutil import allocations_bucket, connect, nodes_bucket
from shared.runloop import every
from shared.schemas.inventory import inventory_codec
from shared.schemas.placement import allocation_codec
from shared.schemas.usage import USAGE, usage_codec
from shared.settings import otel_environment

log = logging.getLogger("hami.telemetry")
STATIC = Path(__file__).with_name("static")
PAGES = {"index.html": "text/html", "app.js": "text/javascript", "style.css": "text/css"}
_json = msgspec.json.Encoder()


class StateCollector(Collector):
    """Renders the latest state at scrape time. The state is an immutable value swapped whole,
    so a scrape never sees half an update."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.state = TelemetryState()
        self.clock = clock

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        families: dict[str, GaugeMetricFamily | CounterMetricFamily] = {}
        for sample in samples(self.state, self.clock()):
            family = families.get(sample.name)
            if family is None:
                description, labels = DESCRIPTIONS[sample.name], list(sample.labels)
                # HAMi's build info is a gauge of 1, as Prometheus' own *_build_info are.
                family = (
                    CounterMetricFamily(sample.name, description, labels=labels)
                    if KINDS.get(sample.name) == "counter"
                    else GaugeMetricFamily(sample.name, description, labels=labels)
                )
                families[sample.name] = family
            family.add_metric(list(sample.labels.values()), sample.value)
        yield from families.values()


def application(collector: StateCollector, settings: TelemetrySettings) -> web.Application:
    registry = CollectorRegistry()
    registry.register(collector)

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    async def page(request: web.Request) -> web.Response:
        name = request.match_info.get("name", "index.html")
        if name not in PAGES:  # a fixed list: no path from the URL reaches the disk
            raise web.HTTPNotFound()
        return web.Response(
            body=(STATIC / name).read_bytes(),
            content_type=PAGES[name],
            headers={"Cache-Control": "no-cache"},
        )

    async def cluster(_: web.Request) -> web.Response:
        document = view(collector.state, collector.clock(), settings.trace_link)
        return web.Response(
            body=_json.encode(document),
            content_type="application/json",
            headers={"Cache-Control": "no-store"},
        )

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/", page)
    app.router.add_get("/static/{name}", page)
    app.router.add_get("/api/view", cluster)
    app.router.add_get("/healthz", healthz)
    return app


async def serve(settings: TelemetrySettings, stop: asyncio.Event) -> None:
    collector = StateCollector()
    runner = web.AppRunner(application(collector, settings), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, settings.metrics_host, settings.metrics_port).start()
    log.info("metrics and page served", extra={"address": runner.addresses[0][:2]})
    stop_otel = otelmetrics.start(otel_environment(), lambda: collector.state, collector.clock)
    nc = await connect(
        settings.nats_url, "hami-telemetry", credentials=credentials_of(settings.nats_credentials)
    )
    try:
        await _follow(settings, nc, collector, stop)
    finally:
        stop_otel()
        await runner.cleanup()
        await nc.drain()


async def _follow(
    settings: TelemetrySettings, nc: Client, collector: StateCollector, stop: asyncio.Event
) -> None:
    js = nc.jetstream()
    nodes = await nodes_bucket(js, create=False)
    allocations = await allocations_bucket(js, create=False)

    async def mirror(kv: KeyValue, bucket: str, quiet_s: float) -> None:
        """Keep one map of the state equal to a bucket's current values."""
        async for key, value in kvwatch.follow(kv, stop, quiet_restart_s=quiet_s):
            state = collector.state
            where = f"{bucket}/{key}"
            unreadable = state.unreadable.delete(where) if where in state.unreadable else None
            try:
                if bucket == "nodes":
                    inventory = None if value is None else inventory_codec.decode(value)
                    state = core.node_seen(state, key, inventory)
                else:
                    record = None if value is None else allocation_codec.decode(value)
                    state = core.allocation_seen(state, key, record)
            except InvalidRequest as e:
                log.warning("malformed entry", extra={"bucket": bucket, "key": key, "error": e})
                unreadable = state.unreadable.set(where, str(e))
                if bucket == "nodes":
                    state = core.node_seen(state, key, None)
                else:
                    state = core.allocation_seen(state, key, None)
            if unreadable is not None:
                state = replace(state, unreadable=unreadable)
            collector.state = state

    async def on_usage(msg: Msg) -> None:
        try:
            sample = usage_codec.decode(msg.data)
        except InvalidRequest:
            return
        collector.state = core.usage_heard(collector.state, sample)

    client = AllocatorClient(nc, timeout_s=max(1.0, settings.status_interval_s))
    unanswered = False

    async def ask_status() -> None:
        nonlocal unanswered
        try:
            reply = await client.status(waiting_only=True)  # the buckets give the rest
        except HamiError as e:
            if not unanswered:
                log.warning("allocator status unavailable", extra={"error": str(e)})
            unanswered = True
            return
        unanswered = False
        collector.state = replace(collector.state, status=reply)

    subscription = await nc.subscribe(f"{USAGE}.>", cb=on_usage)
    try:
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(mirror(nodes, "nodes", 20.0), name="nodes")
            # Allocations change rarely: a quiet watcher is normal, not a lost one.
            tasks.create_task(mirror(allocations, "allocations", 3600.0), name="allocations")
            tasks.create_task(
                every(stop, settings.status_interval_s, "allocator-status", ask_status),
                name="status",
            )
    finally:
        await subscription.unsubscribe()
