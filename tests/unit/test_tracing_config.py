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


def test_the_sampler_and_batching_come_from_the_standard_variables() -> None:
    from opentelemetry.sdk.trace import sampling

    assert "ParentBased" in tracing.sampler_of({}).get_description()
    ratio = tracing.sampler_of(
        {"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.25"}
    )
    assert "0.25" in ratio.get_description()
    assert tracing.sampler_of({"OTEL_TRACES_SAMPLER": "always_off"}) is sampling.ALWAYS_OFF
    for bad in (
        {"OTEL_TRACES_SAMPLER": "sometimes"},
        {"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "2"},
        {"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "x"},
    ):
        with pytest.raises(InvalidRequest, match="OTEL_TRACES_SAMPLER"):
            tracing.sampler_of(bad)
    assert tracing.batch_options({"OTEL_BSP_SCHEDULE_DELAY": "100"}) == {
        "schedule_delay_millis": 100
    }
    with pytest.raises(InvalidRequest, match="OTEL_BSP_MAX_QUEUE_SIZE"):
        tracing.batch_options({"OTEL_BSP_MAX_QUEUE_SIZE": "-1"})


def test_the_exporter_is_sent_where_the_variables_say() -> None:
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318/", "OTEL_EXPORTER_OTLP_HEADERS": "a=1,b=2"}
    http = tracing.otlp_options(env, "TRACES", "http/protobuf")
    assert http["endpoint"] == "http://c:4318/v1/traces" and http["headers"] == {"a": "1", "b": "2"}
    grpc = tracing.otlp_options({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317"}, "TRACES", "grpc")
    assert grpc == {"endpoint": "http://c:4317", "insecure": True}
    own = {
        **env,
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://t/x",
        "OTEL_EXPORTER_OTLP_TIMEOUT": "500",
    }
    assert tracing.otlp_options(own, "TRACES", "http/protobuf")["endpoint"] == "http://t/x"
    assert tracing.otlp_options(own, "TRACES", "http/protobuf")["timeout"] == 0.5


def test_a_trace_sampled_out_upstream_records_nothing_downstream() -> None:
    stop = tracing.configure("t", {"OTEL_TRACES_EXPORTER": "console"})
    try:
        unsampled = {"traceparent": "00-" + "c" * 32 + "-" + "d" * 16 + "-00"}
        with tracing.messaging_server("s", unsampled, 1) as server:
            assert not server.is_recording()
            with tracing.decision_span("decide", {"a": 1}) as decided:
                assert not decided.is_recording()
                assert tracing.current_trace_id() == "c" * 32  # no new root trace
        sampled = {"traceparent": "00-" + "c" * 32 + "-" + "d" * 16 + "-01"}
        with tracing.messaging_server("s", sampled, 1) as server:
            assert server.is_recording()
            with tracing.decision_span("decide", {"a": 1}) as decided:
                assert decided is server  # the decision is told on the request's span
    finally:
        stop()
