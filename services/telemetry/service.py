"""Telemetry's I/O shell: follow the buckets and the usage stream, serve Prometheus metrics."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

from nats.aio.msg import Msg
from nats.js.kv import KeyValue
from prometheus_client import start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector, CollectorRegistry

from services.telemetry.core import DESCRIPTIONS, TelemetryState, samples
from services.telemetry.settings import TelemetrySettings
from shared import kvwatch
from shared.errors import InvalidRequest
from shared.natsauth import credentials_of
from shared.natsutil import allocations_bucket, connect, nodes_bucket
from shared.schemas.base import Codec
from shared.schemas.inventory import inventory_codec
from shared.schemas.placement import allocation_codec
from shared.schemas.usage import USAGE, usage_codec

log = logging.getLogger("hami.telemetry")


class StateCollector(Collector):
    """Renders the latest state at scrape time. The state is an immutable value swapped whole,
    so the scrape thread never sees half an update."""

    def __init__(self) -> None:
        self.state = TelemetryState()

    def collect(self) -> Iterator[GaugeMetricFamily]:
        families: dict[str, GaugeMetricFamily] = {}
        for sample in samples(self.state):
            family = families.get(sample.name)
            if family is None:
                family = GaugeMetricFamily(
                    sample.name, DESCRIPTIONS[sample.name], labels=list(sample.labels)
                )
                families[sample.name] = family
            family.add_metric(list(sample.labels.values()), sample.value)
        yield from families.values()


async def serve(settings: TelemetrySettings, stop: asyncio.Event) -> None:
    collector = StateCollector()
    registry = CollectorRegistry()
    registry.register(collector)
    server, thread = start_http_server(settings.metrics_port, settings.metrics_host, registry)
    log.info("metrics served", extra={"address": f"{settings.metrics_host}:{server.server_port}"})
    nc = await connect(
        settings.nats_url, "hami-telemetry", credentials=credentials_of(settings.nats_credentials)
    )
    try:
        js = nc.jetstream()
        nodes = await nodes_bucket(js, create=False)
        allocations = await allocations_bucket(js, create=False)

        async def mirror(kv: KeyValue, field: str, codec: Codec[Any], quiet_s: float) -> None:
            """Keep one map of the state equal to a bucket's current values."""
            async for key, value in kvwatch.follow(kv, stop, quiet_restart_s=quiet_s):
                state = collector.state
                current = getattr(state, field)
                unreadable = (
                    state.unreadable.delete(f"{field}/{key}")
                    if (f"{field}/{key}" in state.unreadable)
                    else state.unreadable
                )
                try:
                    updated = (
                        (current.delete(key) if key in current else current)
                        if value is None
                        else current.set(key, codec.decode(value))
                    )
                except InvalidRequest as e:
                    log.warning("malformed entry", extra={"bucket": field, "key": key, "error": e})
                    unreadable = unreadable.set(f"{field}/{key}", str(e))
                    updated = current.delete(key) if key in current else current
                collector.state = replace(state, unreadable=unreadable, **{field: updated})

        async def on_usage(msg: Msg) -> None:
            try:
                sample = usage_codec.decode(msg.data)
            except InvalidRequest:
                return
            if sample.allocation_id is None:
                state = collector.state
                collector.state = replace(state, usage=state.usage.set(sample.device_uuid, sample))

        subscription = await nc.subscribe(f"{USAGE}.>", cb=on_usage)
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(mirror(nodes, "nodes", inventory_codec, 20.0), name="nodes")
            # Allocations change rarely: a quiet watcher is normal, not a lost one.
            tasks.create_task(
                mirror(allocations, "allocations", allocation_codec, 3600.0), name="allocations"
            )
        await subscription.unsubscribe()
    finally:
        server.shutdown()
        thread.join(5)
        await nc.drain()
