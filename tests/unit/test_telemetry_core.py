"""Telemetry's pure core: HAMi's names and labels exactly, per-container series from usage
samples, and no stale series (released allocations, restarted agents, silent containers)."""

from __future__ import annotations

from dataclasses import replace

import msgspec
import pytest

from services.telemetry import core, otelmetrics
from services.telemetry.core import ZONE, TelemetryState, samples
from services.telemetry.view import view
from shared.schemas.inventory import MigInstanceInfo, NodeInventory
from shared.schemas.placement import (
    AllocationRecord,
    DeviceGrant,
    Holder,
    StatusReply,
    WaitingRequest,
)
from shared.schemas.usage import UsageSample
from tests.unit.helpers import device, node

MIB = 1024 * 1024
NOW = 1000.0

SCHEDULER_LABELS = {"node", "device_uuid", "device_index", "device_type", "zone"}
CONTAINER_LABELS = {"namespace", "pod", "container", "vdevice_index", "device_uuid", "zone"}


def grant(uuid: str, memory: int, cores: int, index: int = 0) -> DeviceGrant:
    return DeviceGrant(uuid=uuid, index=index, model="NVIDIA H200", memory_mib=memory, cores=cores)


def pod_record(allocation: str, *grants: DeviceGrant, pod: str = "p") -> AllocationRecord:
    return AllocationRecord(
        allocation_id=allocation,
        request_id=f"pod/{allocation}",
        node="n1",
        containers=(grants,),
        holder=Holder(kind="pod", namespace="ns", pod=pod, pod_uid=f"uid-{allocation}"),
        created_at=NOW - 60,
        trace_id="ab" * 16,
    )


def container_sample(allocation: str, uuid: str, used: int, **kw: object) -> UsageSample:
    fields: dict[str, object] = {
        "node": "n1",
        "device_uuid": uuid,
        "at": NOW - 1,
        "memory_used_bytes": used,
        "memory_total_bytes": 1000 * MIB,
        "memory_limit_bytes": 400 * MIB,
        "utilization_percent": 25.0,
        "allocation_id": allocation,
        "pod_namespace": "ns",
        "pod_name": "p",
        "pod_uid": f"uid-{allocation}",
        "container": "main",
        "processes": 1,
        "last_kernel_at": NOW - 3,
    }
    fields.update(kw)
    return msgspec.convert(fields, UsageSample)


def cluster() -> TelemetryState:
    state = core.node_seen(TelemetryState(), "n1", node("n1", device(0), device(1)))
    state = core.allocation_seen(state, "a1", pod_record("a1", grant("GPU-n1-0", 400, 30)))
    state = core.allocation_seen(
        state, "a2", pod_record("a2", grant("GPU-n1-0", 200, 20), grant("GPU-n1-1", 200, 20, 1))
    )
    state = core.usage_heard(state, container_sample("a1", "GPU-n1-0", 150 * MIB))
    return state


def by_name(state: TelemetryState, now: float = NOW) -> dict[str, list[core.Sample]]:
    out: dict[str, list[core.Sample]] = {}
    for s in samples(state, now):
        out.setdefault(s.name, []).append(s)
    return out


def test_every_series_has_a_description_and_hamis_labels() -> None:
    series = by_name(cluster())
    assert set(series) <= set(core.DESCRIPTIONS)
    for name in (
        "hami_gpu_memory_limit_bytes",
        "hami_gpu_core_limit_ratio",
        "hami_gpu_core_allocated_ratio",
        "hami_gpu_shared_count",
        "hami_node_gpu_memory_allocated_ratio",
    ):
        assert {frozenset(s.labels) for s in series[name]} == {frozenset(SCHEDULER_LABELS)}, name
    [allocated] = [
        s for s in series["hami_gpu_memory_allocated_bytes"] if s.labels["device_index"] == "0"
    ]
    assert allocated.value == 600 * MIB and allocated.labels["device_cores"] == "50"
    [overview] = [s for s in series["hami_node_gpu_overview"] if s.labels["device_index"] == "0"]
    assert overview.labels["device_memory_limit"] == str(1000 * MIB) and overview.value == 600 * MIB
    vgpu = series["hami_vgpu_memory_allocated_bytes"]
    assert {frozenset(s.labels) for s in vgpu} == {
        frozenset({"namespace", "node", "pod", "container_index", "device_uuid", "zone"})
    }
    assert all(
        s.labels["zone"] == "vGPU" for ss in series.values() for s in ss if "zone" in s.labels
    )
    assert series["hami_build_info"][0].labels["zone"] == ZONE["zone"]


def test_a_container_sample_becomes_hamis_monitor_series() -> None:
    series = by_name(cluster())
    for name, value in (
        ("hami_vgpu_memory_used_bytes", 150 * MIB),
        ("hami_container_device_memory_bytes", 150 * MIB),
        ("hami_vgpu_memory_limit_bytes", 400 * MIB),
        ("hami_container_device_utilization_ratio", 25.0),
        ("hami_container_last_kernel_elapsed_seconds", 3.0),
    ):
        [sample] = series[name]
        assert set(sample.labels) == CONTAINER_LABELS, name
        assert (sample.labels["pod"], sample.labels["container"]) == ("p", "main")
        assert sample.value == pytest.approx(value), name


def test_no_stale_series_after_release_restart_or_silence() -> None:
    state = cluster()
    assert "hami_vgpu_memory_used_bytes" in by_name(state)
    released = core.allocation_seen(state, "a1", None)
    assert "hami_vgpu_memory_used_bytes" not in by_name(released)
    late = core.usage_heard(released, container_sample("a1", "GPU-n1-0", 1))  # after release
    assert "hami_vgpu_memory_used_bytes" not in by_name(late)
    new_agent = msgspec.structs.replace(node("n1", device(0), device(1)), agent_id="b")
    restarted = core.node_seen(state, "n1", new_agent)
    assert "hami_vgpu_memory_used_bytes" not in by_name(restarted)  # gone within one heartbeat
    same_agent = core.node_seen(state, "n1", node("n1", device(0), device(1)))
    assert "hami_vgpu_memory_used_bytes" in by_name(same_agent)
    assert "hami_vgpu_memory_used_bytes" not in by_name(state, NOW + core.USAGE_TTL_S + 1)
    gone = core.node_seen(state, "n1", None)
    assert "hami_gpu_memory_limit_bytes" not in by_name(gone)


def test_unreadable_regions_are_a_counter_per_node() -> None:
    state = core.node_seen(
        TelemetryState(), "n1", msgspec.structs.replace(node("n1", device(0)), unreadable_regions=3)
    )
    [sample] = by_name(state)["hami_node_unreadable_regions"]
    assert sample.value == 3 and core.KINDS["hami_node_unreadable_regions"] == "counter"


def test_each_mig_instance_is_one_info_series_with_hamis_labels() -> None:
    instance = MigInstanceInfo(
        gpu_uuid="GPU-n1-1",
        uuid="MIG-x",
        profile="3g.71gb",
        gpu_instance=2,
        compute_instance=0,
        start=4,
        slices=4,
    )
    inventory = msgspec.structs.replace(node("n1", device(0), device(1)), mig_instances=(instance,))
    [info] = by_name(core.node_seen(TelemetryState(), "n1", inventory))[
        "hami_node_gpu_mig_instance_info"
    ]
    assert info.value == 1 and info.labels == {
        "node": "n1",
        "device_uuid": "GPU-n1-1",
        "device_index": "1",
        "mig_uuid": "MIG-x",
        "profile": "3g.71gb",
        "gpu_instance_id": "2",
        "compute_instance_id": "0",
        "placement_start": "4",
        "placement_size": "4",
        "zone": "vGPU",
    }
    gone = core.node_seen(TelemetryState(), "n1", node("n1", device(0), device(1)))
    assert "hami_node_gpu_mig_instance_info" not in by_name(gone)


def test_the_view_draws_each_share_on_its_gpu_with_its_usage_and_trace() -> None:
    waiting = WaitingRequest(
        request_id="pod/x",
        holder=Holder(kind="pod", namespace="ns", pod="big"),
        reason="not enough free device memory",
        since=NOW - 30,
        last_asked=NOW - 2,
    )
    state = replace(
        cluster(), status=StatusReply(nodes=(), devices=(), allocations=(), waiting=(waiting,))
    )
    document = view(state, NOW, "http://jaeger/trace/{trace_id}")
    [n1] = document["nodes"]
    gpu0, gpu1 = n1["devices"]
    assert [s["allocation_id"] for s in gpu0["shares"]] == ["a1", "a2"]
    assert [s["allocation_id"] for s in gpu1["shares"]] == ["a2"]
    assert gpu0["allocated_memory_mib"] == 600 and gpu0["allocated_cores"] == 50
    assert gpu0["isolation"] == "interception" and gpu0["shares"][0]["profile"] is None
    first = gpu0["shares"][0]
    assert first["usage"]["used_bytes"] == 150 * MIB and first["holder"]["name"] == "ns/p"
    assert first["trace_url"] == "http://jaeger/trace/" + "ab" * 16
    assert gpu0["shares"][1]["usage"] is None  # no sample for a2 yet
    [w] = document["waiting"]
    assert w["holder"] == "ns/big" and w["waiting_s"] == 30 and "memory" in w["reason"]
    msgspec.json.encode(document)  # plain data


def test_top_draws_the_same_view_in_text() -> None:
    from services.local.top import render

    text = render(view(cluster(), NOW), width=100)
    gpu0 = next(line for line in text.splitlines() if "GPU 0" in line)
    assert "0.6G/1.0G" in gpu0 and "cores 50/100" in gpu0 and "jobs 2/10" in gpu0
    bar = gpu0.split("[")[1].split("]")[0]
    assert bar.count("A") + bar.count("a") > bar.count("B") + bar.count("b") > 0
    assert "A" in bar  # a1 uses part of what it was granted: upper case


def test_hw_gpu_points_follow_the_semantic_conventions() -> None:
    state = core.usage_heard(
        cluster(),
        UsageSample(
            node="n1",
            device_uuid="GPU-n1-0",
            at=NOW,
            memory_used_bytes=500 * MIB,
            memory_total_bytes=1000 * MIB,
            utilization_percent=40.0,
        ),
    )
    points = list(otelmetrics.points(state, NOW))
    assert {p.name for p in points} == set(otelmetrics.INSTRUMENTS)
    device_util = [
        p
        for p in points
        if p.name == "hw.gpu.utilization" and "hami.allocation_id" not in p.attributes
    ]
    assert device_util[0].value == pytest.approx(0.4)
    assert (
        device_util[0].attributes["hw.type"] == "gpu"
        and device_util[0].attributes["hw.gpu.task"] == "general"
    )
    share = [
        p for p in points if p.name == "hw.gpu.memory.usage" and p.attributes.get("k8s.pod.name")
    ]
    assert share[0].value == 150 * MIB and share[0].attributes["container.name"] == "main"


def test_hw_gpu_instruments_are_observed_through_the_sdk() -> None:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    state = cluster()
    otelmetrics.register(provider, lambda: state, lambda: NOW)
    data = reader.get_metrics_data()
    assert data is not None
    names = {
        m.name: m for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics
    }
    assert {"hw.gpu.memory.limit", "hw.gpu.memory.usage"} <= set(names)
    assert names["hw.gpu.memory.limit"].unit == "By"
    provider.shutdown()


def test_otlp_metrics_are_off_unless_asked() -> None:
    assert not otelmetrics.metrics_wanted({})
    assert otelmetrics.metrics_wanted({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"})
    assert not otelmetrics.metrics_wanted(
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c", "OTEL_METRICS_EXPORTER": "none"}
    )
    with pytest.raises(Exception, match="OTEL_METRICS_EXPORTER"):
        otelmetrics.metrics_wanted({"OTEL_METRICS_EXPORTER": "prometheus"})


def test_a_local_job_is_named_by_its_allocation() -> None:
    record = AllocationRecord(
        allocation_id="job1",
        request_id="r",
        node="n1",
        containers=((grant("GPU-n1-0", 100, 10),),),
        holder=Holder(kind="local", host="h", pid=7, command="python train.py"),
        created_at=NOW,
    )
    state = core.allocation_seen(
        core.node_seen(TelemetryState(), "n1", node("n1", device(0))), "job1", record
    )
    state = core.usage_heard(
        state,
        container_sample("job1", "GPU-n1-0", 5, pod_namespace=None, pod_name=None, container=None),
    )
    [used] = by_name(state)["hami_vgpu_memory_used_bytes"]
    assert (used.labels["namespace"], used.labels["pod"]) == ("", "job1")
    assert (
        view(state, NOW)["nodes"][0]["devices"][0]["shares"][0]["holder"]["name"]
        == "python train.py"
    )


def test_inventory_unreadable_regions_default_keeps_old_agents_readable() -> None:
    old = msgspec.json.encode({"node": "n", "agent_id": "a", "devices": []})
    assert msgspec.json.decode(old, type=NodeInventory).unreadable_regions == 0


def test_a_dra_claims_usage_is_a_container_series_while_its_samples_come() -> None:
    state = core.node_seen(TelemetryState(), "n1", node("n1", device(0)))
    claim = container_sample(
        "claim/uid-9", "GPU-n1-0", 7 * MIB, pod_name="trainer", container=None, pod_uid=None
    )
    state = core.usage_heard(state, claim)
    [used] = by_name(state)["hami_vgpu_memory_used_bytes"]
    assert (used.labels["namespace"], used.labels["pod"], used.value) == ("ns", "trainer", 7 * MIB)
    assert "hami_vgpu_memory_used_bytes" not in by_name(state, NOW + core.USAGE_TTL_S + 1)
    stray = container_sample("gone-allocation", "GPU-n1-0", 1)  # not a claim, not held
    assert core.usage_heard(state, stray) == state
