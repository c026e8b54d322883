"""Our OTLP span encoding is the exporter's, byte for byte (a contract test against
opentelemetry-exporter-otlp-proto-common's encoder), for every kind of span a service makes."""

from __future__ import annotations

from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import (
    Link,
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    TraceState,
    set_span_in_context,
)

from shared.otlpspans import encode_request


class Kept(SpanExporter):
    def __init__(self) -> None:
        self.spans: list[ReadableSpan] = []

    def export(self, spans):  # type: ignore[no-untyped-def]
        self.spans.extend(spans)
        return SpanExportResult.SUCCESS


def spans() -> list[ReadableSpan]:
    kept = Kept()
    provider = TracerProvider(
        resource=Resource.create({"service.name": "hami-test", "k8s.node.name": "vm"})
    )
    provider.add_span_processor(SimpleSpanProcessor(kept))
    hami = provider.get_tracer("hami")
    other = provider.get_tracer(
        "other", "1.2.3", schema_url="https://opentelemetry.io/schemas/1.21.0"
    )
    remote = SpanContext(
        0x0AF7651916CD43DD8448EB211C80319C,
        0xB7AD6B7169203331,
        is_remote=True,
        trace_flags=TraceFlags(1),
        trace_state=TraceState([("vendor", "x1"), ("hami", "y")]),
    )
    parent = set_span_in_context(NonRecordingSpan(remote))
    with hami.start_as_current_span(
        "process hami.v1.place",
        context=parent,
        kind=SpanKind.SERVER,
        attributes={
            "messaging.system": "nats",
            "messaging.message.body.size": 512,
            "hami.nodes.considered": 0,
            "hami.ok": True,
            "hami.off": False,
            "hami.ratio": 0.25,
            "hami.zero": 0.0,
            "hami.negative": -7,
            "hami.big": 2**62,
            "hami.devices": ("GPU-a", "GPU-b"),
            "hami.memory": [4000, 8000],
            "hami.empty": "",
        },
    ) as server:
        server.add_event("retried", {"attempt": 2})
        server.add_event("plain")
        with hami.start_as_current_span("allocator decide") as inner:
            inner.set_status(Status(StatusCode.ERROR, "no node has room"))
        with other.start_as_current_span(
            "send hami.v1.events", kind=SpanKind.CLIENT, links=[Link(remote, {"why": "retry"})]
        ) as client:
            client.set_status(Status(StatusCode.OK))
    with hami.start_as_current_span("root", kind=SpanKind.PRODUCER):
        pass
    return kept.spans


def test_the_same_bytes_as_the_exporters_encoder() -> None:
    finished = spans()
    assert len(finished) == 4
    assert encode_request(finished) == encode_spans(finished).SerializeToString()
    for one in finished:
        assert encode_request([one]) == encode_spans([one]).SerializeToString()
    assert encode_request([]) == encode_spans([]).SerializeToString()


def test_the_http_exporter_sends_our_encoding() -> None:
    from opentelemetry.exporter.otlp.proto.http import trace_exporter

    from shared import tracing

    stop = tracing.configure("hami-test", {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9"})
    try:
        finished = spans()
        encoded = trace_exporter.encode_spans(finished)  # what its export() serializes
        assert encoded.SerializePartialToString() == encode_request(finished)
        assert type(encoded).__module__ == "shared.otlpspans"
    finally:
        stop()
