"""The same devices and containers for OpenTelemetry users: `hw.gpu.*` (the hardware semantic
conventions) exported over OTLP, configured by the standard `OTEL_*` variables, off unless
they name an exporter. Per-container points carry the pod's and container's resource
attributes (`k8s.pod.name`, `container.name`, ...): no GPU metric exists under `container.*`."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from services.telemetry.core import MIB, TelemetryState, live_containers
from shared.errors import InvalidRequest

log = logging.getLogger("hami.telemetry.otel")


@dataclass(frozen=True, slots=True)
class Point:
    name: str
    value: float
    attributes: Mapping[str, str | int]


INSTRUMENTS = {
    "hw.gpu.memory.limit": ("By", "updowncounter", "Device memory a GPU (or a share) may use."),
    "hw.gpu.memory.usage": ("By", "updowncounter", "Device memory in use."),
    "hw.gpu.memory.utilization": ("1", "gauge", "Fraction of the memory limit in use."),
    "hw.gpu.utilization": ("1", "gauge", "Fraction of the GPU's time busy (general task)."),
}


def points(state: TelemetryState, now: float) -> Iterable[Point]:
    """Every `hw.gpu.*` point of the state: one set per device, one per container share."""
    for inventory in state.nodes.values():
        for device in inventory.devices:
            base: dict[str, str | int] = {
                "hw.id": device.uuid,
                "hw.type": "gpu",
                "hw.name": device.model,
                "hw.vendor": device.kind,
                "k8s.node.name": inventory.node,
            }
            limit = device.memory_mib * MIB
            yield Point("hw.gpu.memory.limit", limit, base)
            usage = state.usage.get(device.uuid)
            if usage is not None:
                yield Point("hw.gpu.memory.usage", usage.memory_used_bytes, base)
                if limit:
                    yield Point("hw.gpu.memory.utilization", usage.memory_used_bytes / limit, base)
                if usage.utilization_percent is not None:
                    yield Point(
                        "hw.gpu.utilization",
                        usage.utilization_percent / 100,
                        {**base, "hw.gpu.task": "general"},
                    )
    for sample, index in live_containers(state, now):
        share: dict[str, str | int] = {
            "hw.id": sample.device_uuid,
            "hw.type": "gpu",
            "k8s.node.name": sample.node,
            "hami.allocation_id": sample.allocation_id or "",
            "hami.vdevice_index": index,
        }
        if sample.pod_name:
            share.update(
                {
                    "k8s.namespace.name": sample.pod_namespace or "",
                    "k8s.pod.name": sample.pod_name,
                    "k8s.pod.uid": sample.pod_uid or "",
                    "container.name": sample.container or "",
                }
            )
        yield Point("hw.gpu.memory.usage", sample.memory_used_bytes, share)
        if sample.memory_limit_bytes:
            yield Point("hw.gpu.memory.limit", sample.memory_limit_bytes, share)
            yield Point(
                "hw.gpu.memory.utilization",
                sample.memory_used_bytes / sample.memory_limit_bytes,
                share,
            )
        if sample.utilization_percent is not None:
            yield Point(
                "hw.gpu.utilization",
                sample.utilization_percent / 100,
                {**share, "hw.gpu.task": "general"},
            )


def metrics_wanted(env: Mapping[str, str]) -> bool:
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    named = env.get("OTEL_METRICS_EXPORTER", "").strip().lower()
    if named:
        wanted = {n.strip() for n in named.split(",") if n.strip()}
        if "none" in wanted:
            return False
        if wanted - {"otlp"}:
            raise InvalidRequest(
                f"OTEL_METRICS_EXPORTER: unknown exporter {sorted(wanted - {'otlp'})} "
                "(telemetry exports otlp; Prometheus scrapes /metrics)"
            )
        return True
    return bool(
        env.get("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    )


def register(
    meter_provider: object, state: Callable[[], TelemetryState], clock: Callable[[], float]
) -> None:
    """The instruments on ``meter_provider`` (an SDK MeterProvider), observed from ``state``
    at each collection."""
    from opentelemetry.metrics import CallbackOptions, MeterProvider, Observation

    assert isinstance(meter_provider, MeterProvider)
    meter = meter_provider.get_meter("hami.telemetry")

    def observe(name: str) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def callback(_: CallbackOptions) -> Iterable[Observation]:
            return [
                Observation(p.value, dict(p.attributes))
                for p in points(state(), clock())
                if p.name == name
            ]

        return callback

    for name, (unit, kind, description) in INSTRUMENTS.items():
        if kind == "gauge":
            meter.create_observable_gauge(
                name, callbacks=[observe(name)], unit=unit, description=description
            )
        else:
            meter.create_observable_up_down_counter(
                name, callbacks=[observe(name)], unit=unit, description=description
            )


def start(
    env: Mapping[str, str], state: Callable[[], TelemetryState], clock: Callable[[], float]
) -> Callable[[], None]:
    """Export over OTLP when the environment asks (protocol as for traces); the shutdown."""
    if not metrics_wanted(env):
        return lambda: None
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import MetricExporter, PeriodicExportingMetricReader
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource

    from shared.tracing import otlp_options, otlp_protocol

    exporter: MetricExporter
    if otlp_protocol(env, "METRICS") == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter

        exporter = OTLPMetricExporter(**otlp_options(env, "METRICS", "grpc"))
    else:
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import (
            OTLPMetricExporter as HttpMetricExporter,
        )

        exporter = HttpMetricExporter(**otlp_options(env, "METRICS", "http/protobuf"))
    resource = Resource.create({SERVICE_NAME: env.get("OTEL_SERVICE_NAME") or "hami-telemetry"})
    provider = MeterProvider(
        resource=resource, metric_readers=[PeriodicExportingMetricReader(exporter)]
    )
    register(provider, state, clock)
    log.info("OTLP metrics on")
    return lambda: provider.shutdown(timeout_millis=2000)
