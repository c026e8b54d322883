"""Allocate's side of HAMi's handshake: which pod and container, checked against the ledger."""

from __future__ import annotations

from typing import Any

import pytest

from services.nodeagent.core import handshake
from services.nodeagent.core.handshake import AllocateRefused, assign, consume, refuse
from shared.deviceannotation import AnnotatedDevice, decode, encode
from shared.errors import InvalidRequest
from shared.resources import (
    ALLOCATE_FAILURE,
    ASSIGNED_NODE,
    BIND_PHASE,
    BIND_TIME,
    DEVICES_ALLOCATED,
    DEVICES_TO_ALLOCATE,
)
from shared.schemas.placement import AllocationRecord, DeviceGrant, Holder

NODE = "vm"
DEVICES = {"GPU-a": 140000, "GPU-b": 140000}
TYPES = {"nvidia": "NVIDIA"}


def grant(uuid: str, mem: int, cores: int) -> DeviceGrant:
    return DeviceGrant(uuid=uuid, index=0, model="NVIDIA H200", memory_mib=mem, cores=cores)


def record(uid: str, *containers: tuple[DeviceGrant, ...], node: str = NODE) -> AllocationRecord:
    return AllocationRecord(
        allocation_id=f"alloc-{uid}",
        request_id=f"pod/{uid}",
        node=node,
        containers=containers,
        holder=Holder(kind="pod", namespace="default", pod=f"p-{uid}", pod_uid=uid),
        priority=0,
        created_at=0.0,
    )


def text(rec: AllocationRecord) -> str:
    return encode(
        [
            [AnnotatedDevice(g.uuid, "NVIDIA", g.memory_mib, g.cores) for g in c]
            for c in rec.containers
        ]
    )


def pod(rec: AllocationRecord, *, bind_time: int = 100, **annotations: str) -> dict[str, Any]:
    base = {
        BIND_PHASE: "allocating",
        ASSIGNED_NODE: NODE,
        BIND_TIME: str(bind_time),
        DEVICES_TO_ALLOCATE: text(rec),
        DEVICES_ALLOCATED: text(rec),
    }
    base.update(annotations)
    return {
        "metadata": {
            "name": rec.holder.pod,
            "namespace": "default",
            "uid": rec.holder.pod_uid,
            "creationTimestamp": "2026-12-01T00:00:00Z",
            "annotations": base,
        },
        "spec": {"containers": [{"name": f"c{i}"} for i in range(len(rec.containers))]},
        "status": {"phase": "Pending"},
    }


def ledger(*records: AllocationRecord) -> Any:
    by_uid = {r.holder.pod_uid: r for r in records}
    return by_uid.get


def test_the_next_container_of_the_oldest_bound_pod_is_served() -> None:
    old = record("u1", (), (grant("GPU-a", 3000, 30),))
    new = record("u2", (grant("GPU-b", 2000, 0),))
    pods = [pod(new, bind_time=200), pod(old, bind_time=100)]
    chosen = assign(pods, NODE, 1, ledger(old, new), DEVICES, TYPES)
    assert (chosen.pod_uid, chosen.container_index, chosen.container) == ("u1", 1, "c1")
    assert chosen.grants == (grant("GPU-a", 3000, 30),)
    assert chosen.priority == 0 and chosen.key == "u1_c1"


def test_a_pod_whose_next_container_asks_for_another_count_is_skipped() -> None:
    two = record("u1", (grant("GPU-a", 1000, 0), grant("GPU-b", 1000, 0)))
    one = record("u2", (grant("GPU-a", 1000, 0),))
    pods = [pod(two, bind_time=1), pod(one, bind_time=2)]
    assert assign(pods, NODE, 1, ledger(two, one), DEVICES, TYPES).pod_uid == "u2"
    assert assign(pods, NODE, 2, ledger(two, one), DEVICES, TYPES).pod_uid == "u1"


@pytest.mark.parametrize(
    "annotations",
    [
        {BIND_PHASE: "success"},
        {ASSIGNED_NODE: "other"},
    ],
)
def test_pods_not_waiting_here_are_not_candidates(annotations: dict[str, str]) -> None:
    rec = record("u1", (grant("GPU-a", 1000, 0),))
    with pytest.raises(AllocateRefused) as refused:
        assign([pod(rec, **annotations)], NODE, 1, ledger(rec), DEVICES, TYPES)
    assert refused.value.pod is None and "no pod on node vm" in str(refused.value)


def test_a_finished_or_deleted_pod_is_not_a_candidate() -> None:
    rec = record("u1", (grant("GPU-a", 1000, 0),))
    failed = pod(rec)
    failed["status"]["phase"] = "Failed"
    deleting = pod(rec)
    deleting["metadata"]["deletionTimestamp"] = "2026-12-01T00:00:01Z"
    for p in (failed, deleting):
        with pytest.raises(AllocateRefused):
            assign([p], NODE, 1, ledger(rec), DEVICES, TYPES)


TAMPERED = {
    "memory raised": "GPU-a,NVIDIA,9000,30:;",
    "cores dropped": "GPU-a,NVIDIA,3000,0:;",
    "other device": "GPU-b,NVIDIA,3000,30:;",
    "garbage": "GPU-a,NVIDIA,3000;",
    "negative": "GPU-a,NVIDIA,-1,30:;",
    "extra container": "GPU-a,NVIDIA,3000,30:;;",
    "empty": "",
}


@pytest.mark.parametrize("value", TAMPERED.values(), ids=TAMPERED.keys())
def test_a_tampered_annotation_is_refused_and_names_the_pod(value: str) -> None:
    rec = record("u1", (grant("GPU-a", 3000, 30),))
    with pytest.raises(AllocateRefused) as refused:
        assign([pod(rec, **{DEVICES_TO_ALLOCATE: value})], NODE, 1, ledger(rec), DEVICES, TYPES)
    assert refused.value.pod == ("default", "p-u1")


def test_a_tampered_pod_first_in_line_is_not_skipped_for_a_later_one() -> None:
    """Guessing past it could hand its container the next pod's limits."""
    bad = record("u1", (grant("GPU-a", 3000, 30),))
    good = record("u2", (grant("GPU-b", 1000, 10),))
    pods = [pod(bad, bind_time=1, **{DEVICES_TO_ALLOCATE: "GPU-a,NVIDIA,90000,30:;"}), pod(good)]
    with pytest.raises(AllocateRefused) as refused:
        assign(pods, NODE, 1, ledger(bad, good), DEVICES, TYPES)
    assert refused.value.pod == ("default", "p-u1")


def test_no_ledger_record_the_wrong_node_or_a_vanished_device_fail_closed() -> None:
    rec = record("u1", (grant("GPU-a", 3000, 30),))
    with pytest.raises(AllocateRefused, match="ledger has no allocation"):
        assign([pod(rec)], NODE, 1, ledger(), DEVICES, TYPES)
    elsewhere = record("u1", (grant("GPU-a", 3000, 30),), node="other")
    with pytest.raises(AllocateRefused, match="placed this pod on 'other'"):
        assign([pod(rec)], NODE, 1, ledger(elsewhere), DEVICES, TYPES)
    with pytest.raises(AllocateRefused, match="not on node"):
        assign([pod(rec)], NODE, 1, ledger(rec), {"GPU-b": 1}, TYPES)
    with pytest.raises(AllocateRefused, match="allocated"):
        assign([pod(rec, **{DEVICES_ALLOCATED: "x"})], NODE, 1, ledger(rec), DEVICES, TYPES)


def test_consume_moves_entries_out_and_ends_in_success() -> None:
    rec = record("u1", (grant("GPU-a", 1000, 0),), (), (grant("GPU-b", 2000, 50),))
    annotations = pod(rec)["metadata"]["annotations"]
    first = assign([pod(rec)], NODE, 1, ledger(rec), DEVICES, TYPES)
    changes = consume(annotations, first)
    assert changes[DEVICES_TO_ALLOCATE] == ";;GPU-b,NVIDIA,2000,50:;"
    assert BIND_PHASE not in changes
    after = {**annotations, **{k: v for k, v in changes.items() if v is not None}}
    second = assign(
        [pod(rec, **{DEVICES_TO_ALLOCATE: after[DEVICES_TO_ALLOCATE]})],
        NODE,
        1,
        ledger(rec),
        DEVICES,
        TYPES,
    )
    assert second.container == "c2"
    final = consume(after, second)
    assert final[DEVICES_TO_ALLOCATE] == ";;;" and final[BIND_PHASE] == "success"
    with pytest.raises(InvalidRequest, match="changed meanwhile"):
        consume({**after, DEVICES_TO_ALLOCATE: ";;;"}, second)


def test_refuse_marks_failed_with_the_reason() -> None:
    assert refuse("why") == {BIND_PHASE: "failed", ALLOCATE_FAILURE: "why"}


def test_pending_order_is_bind_time_then_creation() -> None:
    a, b, c = (record(u, (grant("GPU-a", 1, 0),)) for u in ("a", "b", "c"))
    pods = [pod(a, bind_time=5), pod(b, bind_time=3), pod(c, bind_time=3)]
    pods[2]["metadata"]["creationTimestamp"] = "2026-11-30T00:00:00Z"
    assert [p["metadata"]["uid"] for p in handshake.pending_pods(pods, NODE)] == ["c", "b", "a"]


@pytest.mark.parametrize(
    "value",
    ["GPU-a,NVIDIA,1,0", "GPU-a,NVIDIA,1,0:", "GPU-a,NVIDIA,1:;", ",NVIDIA,1,0:;", "GPU a,N,1,0:;"],
)
def test_annotation_decoding_refuses_what_encode_never_writes(value: str) -> None:
    with pytest.raises(InvalidRequest):
        decode(value)


def test_annotation_round_trip() -> None:
    containers = [
        [AnnotatedDevice("GPU-a", "NVIDIA", 3000, 30)],
        [],
        [AnnotatedDevice("x", "T", 0, 0)],
    ]
    assert decode(encode(containers)) == containers
