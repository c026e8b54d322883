"""Telemetry's I/O shell: follow the buckets and the usage stream, serve Prometheus metrics."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
from collections.abc import Iterator
from dataclasses import replace

import msgspec
from nats.aio.msg import Msg
from prometheus_client import start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector, CollectorRegistry

from services.telemetry.core import DESCRIPTIONS, TelemetryState, samples
from shared import kvwatch
from shared.errors import InvalidRequest
from shared.natsutil import allocations_bucket, connect, nodes_bucket
from shared.schemas.inventory import inventory_codec
from shared.schemas.placement import allocation_codec
from shared.schemas.usage import USAGE, usage_codec

log = logging.getLogger("hami.telemetry")


class TelemetrySettings(msgspec.Struct, frozen=True, kw_only=True):
    nats_url: str = "nats://127.0.0.1:4222"
    metrics_host: str = "127.0.0.1"
    """Loopback by default: metrics name pods and nodes."""
    metrics_port: int = 9395
    log_level: str = "INFO"


def parse_settings(argv: list[str] | None = None) -> TelemetrySettings:
    env = os.environ
    d = TelemetrySettings()
    parser = argparse.ArgumentParser(prog="hami-telemetry")
    parser.add_argument("--nats", dest="nats_url", default=env.get("HAMI_NATS_URL", d.nats_url))
    parser.add_argument("--metrics-host", default=d.metrics_host)
    parser.add_argument(
        "--metrics-port", type=int, default=int(env.get("HAMI_METRICS_PORT", d.metrics_port))
    )
    parser.add_argument("--log-level", default=env.get("HAMI_LOG_LEVEL", d.log_level))
    return TelemetrySettings(**vars(parser.parse_args(argv)))


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
    nc = await connect(settings.nats_url, "hami-telemetry")
    try:
        js = nc.jetstream()
        nodes, allocations = await nodes_bucket(js), await allocations_bucket(js)

        async def follow_nodes() -> None:
            async for key, value in kvwatch.follow(nodes, stop):
                state = collector.state
                if value is None:
                    collector.state = replace(
                        state, nodes=state.nodes.delete(key) if key in state.nodes else state.nodes
                    )
                    continue
                try:
                    collector.state = replace(
                        state, nodes=state.nodes.set(key, inventory_codec.decode(value))
                    )
                except InvalidRequest as e:
                    log.warning("malformed inventory", extra={"node": key, "error": e})

        async def follow_allocations() -> None:
            async for key, value in kvwatch.follow(allocations, stop, quiet_restart_s=3600):
                state = collector.state
                if value is None:
                    collector.state = replace(
                        state,
                        allocations=state.allocations.delete(key)
                        if key in state.allocations
                        else state.allocations,
                    )
                    continue
                try:
                    collector.state = replace(
                        state,
                        allocations=state.allocations.set(key, allocation_codec.decode(value)),
                    )
                except InvalidRequest as e:
                    log.warning("malformed allocation", extra={"allocation": key, "error": e})

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
            tasks.create_task(follow_nodes(), name="follow-nodes")
            tasks.create_task(follow_allocations(), name="follow-allocations")
        await subscription.unsubscribe()
    finally:
        server.shutdown()
        thread.join(5)
        await nc.drain()
