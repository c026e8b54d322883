"""One trace per placement, across processes, in a real Jaeger: `hami run` asks over NATS
(trace context in the message headers), the allocator answers and decides, the job starts
with the context in its environment."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.observability.jaeger import (
    Jaeger,
    parent_of,
    spans_by_service,
    start_jaeger,
    tags_of,
)
from tests.e2e.test_local_mode import Local, wait_for

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def jaeger(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Jaeger]:
    server = start_jaeger(tmp_path_factory.mktemp("jaeger"))
    yield server
    server.stop()


@pytest.fixture
def traced(tmp_path: Path, jaeger: Jaeger) -> Iterator[Local]:
    hami = Local(tmp_path / "state")
    hami.env.update(jaeger.environment("grpc"))  # the services over gRPC; hami run over HTTP
    up = hami.hami("up", "--simulate", "1xH200", "--nats-port", "0", "--metrics-port", "0")
    assert up.returncode == 0, up.stderr + up.stdout
    yield hami
    assert hami.hami("down").returncode == 0


def test_a_placement_is_one_trace_across_hami_run_and_the_allocator(
    traced: Local, jaeger: Jaeger
) -> None:
    traced.env.update(jaeger.environment("http/protobuf"))
    job, out, go = traced.start_job("traced", "--gpumem", "10g", "--gpucores", "20")
    wait_for(out.exists, what="the job runs")
    go.touch()
    assert job.wait(20) == 0
    traceparent = json.loads(out.read_text())["TRACEPARENT"]
    trace_id = traceparent.split("-")[1]

    def complete() -> bool:
        try:
            spans = spans_by_service(jaeger.trace(trace_id))
        except Exception:
            return False
        return {"hami-run", "hami-allocator"} <= set(spans)

    wait_for(complete, timeout_s=30, what="both services' spans in Jaeger")
    trace = jaeger.trace(trace_id)
    by = spans_by_service(trace)
    run = {s["operationName"]: s for s in by["hami-run"]}
    allocator = {s["operationName"]: s for s in by["hami-allocator"]}
    root, send = run["hami run"], run["send hami.v1.alloc.place"]
    assert parent_of(root) is None
    assert parent_of(send) == root["spanID"] and parent_of(run["start job"]) == root["spanID"]
    assert traceparent.split("-")[2] == root["spanID"]  # the job's context is the root's
    process = allocator["process hami.v1.alloc.place"]
    assert parent_of(process) == send["spanID"]  # across NATS, by the message headers
    tags = tags_of(process)  # the decision is told on the request's span
    assert (
        tags["hami.request_id"]
        and tags["hami.allocation_id"] == tags_of(root)["hami.allocation_id"]
    )
    assert tags["hami.outcome"] == "placed" and tags["hami.nodes.considered"] == 1
    assert tags["hami.policy.node"] == "binpack"
    assert tags_of(process)["messaging.system"] == "nats"
    assert tags_of(send)["span.kind"] == "client" and tags_of(process)["span.kind"] == "server"


def test_a_request_that_never_fits_says_why_in_its_span(traced: Local, jaeger: Jaeger) -> None:
    traced.env.update(jaeger.environment("http/protobuf"))
    refused = traced.hami("run", "--gpus", "2", "--", "true")
    assert refused.returncode == 2, refused.stderr

    def decided() -> list[dict]:  # type: ignore[type-arg]
        return [
            s
            for t in jaeger.traces("hami-allocator")
            for s in t["spans"]
            if s["operationName"] == "process hami.v1.alloc.place"
            and tags_of(s).get("hami.outcome") == "never"
        ]

    wait_for(decided, timeout_s=30, what="the refused decision's span")
    assert "never" in refused.stderr and tags_of(decided()[0])["hami.reason"]


def test_an_unreachable_collector_loses_spans_not_the_job(traced: Local) -> None:
    # The exporter retries a refused connection for up to its 10 s timeout: exit waits 2 s.
    traced.env.update({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9"})
    job, out, go = traced.start_job("untraced", "--gpumem", "1g")
    wait_for(out.exists, what="the job runs whatever the collector does")
    go.touch()
    assert job.wait(20) == 0  # the flush at exit is bounded (tracing.FLUSH_S), not 30 s
    told = traced.stderr_of("untraced").splitlines()
    assert [x for x in told if "trace" in x] == [
        "hami run: traces not all sent: the OTLP endpoint did not take them in 2s"
    ], told
    assert all(x.startswith("hami run:") for x in told), told  # no exporter noise
