"""Tracing is configured by the standard OTEL_* variables alone, and off unless they ask."""

from __future__ import annotations

import pytest

from shared import tracing
from shared.errors import InvalidRequest
from shared.resources import TRACE_ANNOTATION


@pytest.mark.parametrize(
    ("env", "wanted"),
    [
        ({}, ()),
        ({"OTEL_SERVICE_NAME": "x"}, ()),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, ("otlp",)),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/v1/traces"}, ("otlp",)),
        ({"OTEL_TRACES_EXPORTER": "console"}, ("console",)),
        ({"OTEL_TRACES_EXPORTER": "otlp,console"}, ("otlp", "console")),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c"}, ()),
        ({"OTEL_SDK_DISABLED": "true", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c"}, ()),
        ({"OTEL_SDK_DISABLED": "false", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c"}, ("otlp",)),
    ],
)
def test_exporters_follow_the_standard_variables(
    env: dict[str, str], wanted: tuple[str, ...]
) -> None:
    assert tracing.exporters_wanted(env) == wanted


def test_bad_values_are_refused_with_the_variable_named() -> None:
    with pytest.raises(InvalidRequest, match="OTEL_TRACES_EXPORTER"):
        tracing.exporters_wanted({"OTEL_TRACES_EXPORTER": "zipkin"})
    with pytest.raises(InvalidRequest, match="OTEL_EXPORTER_OTLP_PROTOCOL"):
        tracing.otlp_protocol({"OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"})
    assert tracing.otlp_protocol({}) == "http/protobuf"
    assert tracing.otlp_protocol({"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "grpc"}) == "grpc"


def test_off_means_no_headers_no_annotation_and_no_parent() -> None:
    stop = tracing.configure("t", {})
    try:
        with tracing.span("x"):
            assert tracing.inject({}) == {}
            assert tracing.annotation_value() is None
        pod = {"metadata": {"annotations": {TRACE_ANNOTATION: "traceparent=00-" + "1" * 32}}}
        assert tracing.of_pod(pod) is None
    finally:
        assert stop()


def test_the_pod_annotation_carries_the_context_across() -> None:
    stop = tracing.configure(
        "t", {"OTEL_TRACES_EXPORTER": "console", "OTEL_BSP_SCHEDULE_DELAY": "60000"}
    )
    try:
        with tracing.span("admission") as admission:
            value = tracing.annotation_value()
        assert value is not None and value.startswith("traceparent=00-")
        parent = tracing.of_pod({"metadata": {"annotations": {TRACE_ANNOTATION: value}}})
        with tracing.span("filter", parent=parent) as child:
            assert child.get_span_context().trace_id == admission.get_span_context().trace_id
        for junk in ("", "traceparent=", "traceparent=zz", "x" * 5000, 7):
            got = tracing.of_pod({"metadata": {"annotations": {TRACE_ANNOTATION: junk}}})
            with tracing.span("orphan", parent=got) as orphan:  # a new trace, not a crash
                assert orphan.get_span_context().trace_id != admission.get_span_context().trace_id
    finally:
        stop()
