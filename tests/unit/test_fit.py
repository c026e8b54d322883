"""Fit rules, one behaviour per test."""

from __future__ import annotations

import pytest
from immutables import Map

from services.allocator.core import ledger
from services.allocator.core.fit import (
    REMEMBERED_SELECTORS,
    NodeFit,
    Reason,
    _remembered_type_allowed,
    fit_node,
    type_allowed,
)
from services.allocator.core.placement import Never, Placed, SchedulingSettings, Wait, decide
from services.allocator.core.policies import Binpack, Spread
from services.allocator.core.state import ClusterState, DeviceUsage
from shared.errors import InvalidRequest
from shared.schemas.placement import ContainerRequest as C
from tests.unit.helpers import device, node, request

ORDER = Spread().device_order()


def fit(devices: tuple, usage: dict, *containers: C):  # type: ignore[no-untyped-def,type-arg]
    return fit_node("n1", devices, Map(usage), containers, ORDER)


def test_memory_in_mib_fits_until_full() -> None:
    d = (device(0, memory=1000),)
    assert isinstance(fit(d, {}, C(memory_mib=1000)), NodeFit)
    assert fit(d, {d[0].uuid: DeviceUsage(memory_mib=1, count=1)}, C(memory_mib=1000)) == Reason(
        "memory"
    )


def test_memory_percent_is_of_the_device() -> None:
    d = (device(0, memory=1000),)
    result = fit(d, {}, C(memory_percent=25))
    assert isinstance(result, NodeFit)
    assert result.containers[0][0].memory_mib == 250


def test_no_memory_given_takes_the_whole_device() -> None:
    d = (device(0, memory=1000),)
    result = fit(d, {}, C())
    assert isinstance(result, NodeFit) and result.containers[0][0].memory_mib == 1000
    assert fit(d, {d[0].uuid: DeviceUsage(memory_mib=1000, count=1)}, C(memory_mib=1)) == Reason(
        "memory"
    )


def test_cores_add_up_to_the_device() -> None:
    d = (device(0),)
    used = {d[0].uuid: DeviceUsage(memory_mib=3, cores=90, count=3)}
    assert isinstance(fit(d, used, C(memory_mib=1, cores=10)), NodeFit)
    assert fit(d, used, C(memory_mib=1, cores=11)) == Reason("cores")


def test_exclusive_request_needs_an_idle_device() -> None:
    d = (device(0),)
    used = {d[0].uuid: DeviceUsage(memory_mib=1, cores=0, count=1)}
    assert fit(d, used, C(memory_mib=1, cores=100)) == Reason("exclusive")
    assert isinstance(fit(d, {}, C(memory_mib=1, cores=100)), NodeFit)


def test_a_device_with_all_cores_taken_accepts_no_zero_core_share() -> None:
    d = (device(0),)
    used = {d[0].uuid: DeviceUsage(memory_mib=1, cores=100, count=1)}
    assert fit(d, used, C(memory_mib=1, cores=0)) == Reason("cores")


def test_split_count_limits_sharers() -> None:
    d = (device(0, split=2),)
    used = {d[0].uuid: DeviceUsage(memory_mib=2, count=2)}
    assert fit(d, used, C(memory_mib=1)) == Reason("split")


@pytest.mark.parametrize(
    ("model", "use", "nouse", "allowed"),
    [
        ("NVIDIA H200", ("H200",), (), True),
        ("NVIDIA H200", ("h200",), (), True),
        ("NVIDIA H200", ("A100",), (), False),
        ("NVIDIA H200", ("A100", "H200"), (), True),
        ("NVIDIA H200", (), ("H200",), False),
        ("Tesla T4", (), ("H200",), True),
        ("NVIDIA H200", ("NVIDIA",), ("H200",), False),
        ("NVIDIA H200", (" ",), (), False),
    ],
)
def test_type_selectors_are_case_insensitive_substrings(
    model: str, use: tuple[str, ...], nouse: tuple[str, ...], allowed: bool
) -> None:
    assert type_allowed(model, use, nouse) is allowed
    # Asked again (now remembered), and with the selectors made many (not remembered): the same.
    assert type_allowed(model, use, nouse) is allowed
    many = tuple(f"zz{i}" for i in range(REMEMBERED_SELECTORS))
    assert type_allowed(model, (*use, *many) if use else (), (*nouse, *many)) is allowed


def test_a_request_naming_many_selectors_leaves_nothing_remembered() -> None:
    before = _remembered_type_allowed.cache_info().currsize
    many = tuple("x" * 253 + str(i) for i in range(REMEMBERED_SELECTORS + 1))
    assert type_allowed("NVIDIA H200", many, ()) is False
    assert type_allowed("NVIDIA H200", (*many, "H200"), many) is True
    assert _remembered_type_allowed.cache_info().currsize == before


def test_uuid_selectors() -> None:
    d = (device(0), device(1))
    result = fit(d, {}, C(memory_mib=1, use_uuids=(d[1].uuid,)))
    assert isinstance(result, NodeFit) and result.containers[0][0].uuid == d[1].uuid
    result = fit(d, {}, C(memory_mib=1, nouse_uuids=(d[0].uuid,)))
    assert isinstance(result, NodeFit) and result.containers[0][0].uuid == d[1].uuid
    assert fit(d, {}, C(memory_mib=1, use_uuids=("GPU-other",))) == Reason("uuid")


def test_unhealthy_devices_are_skipped() -> None:
    d = (device(0, healthy=False), device(1))
    result = fit(d, {}, C(memory_mib=1))
    assert isinstance(result, NodeFit) and result.containers[0][0].index == 1


def test_several_devices_are_distinct() -> None:
    d = (device(0), device(1), device(2))
    result = fit(d, {}, C(count=3, memory_mib=10))
    assert isinstance(result, NodeFit)
    assert len({g.uuid for g in result.containers[0]}) == 3
    assert fit(d, {}, C(count=4, memory_mib=10)) == Reason("count", "3 of 3 devices fit, 4 asked")


def test_numa_bind_keeps_devices_on_one_node() -> None:
    d = (device(0, numa=0), device(1, numa=1), device(2, numa=1))
    result = fit(d, {}, C(count=2, memory_mib=1, numa_bind=True))
    assert isinstance(result, NodeFit)
    assert {g.index for g in result.containers[0]} == {1, 2}
    assert fit(d, {}, C(count=3, memory_mib=1, numa_bind=True)) == Reason("numa")


def test_containers_of_one_pod_see_each_other() -> None:
    d = (device(0, memory=1000, split=10),)
    result = fit(d, {}, C(memory_mib=600), C(memory_mib=600))
    assert result == Reason("memory")
    d = (device(0, memory=1000, split=1), device(1, memory=1000, split=1))
    result = fit(d, {}, C(memory_mib=100), C(memory_mib=100))
    assert isinstance(result, NodeFit)
    assert result.containers[0][0].uuid != result.containers[1][0].uuid


def test_container_without_devices_gets_none() -> None:
    result = fit((device(0),), {}, C(count=0), C(memory_mib=1))
    assert isinstance(result, NodeFit) and result.containers[0] == ()


def test_gpu_policies_order_devices() -> None:
    d = (device(0), device(1))
    used = {d[0].uuid: DeviceUsage(memory_mib=500, cores=10, count=1)}
    spread = fit_node("n1", d, Map(used), (C(memory_mib=1),), Spread().device_order())
    binpack = fit_node("n1", d, Map(used), (C(memory_mib=1),), Binpack().device_order())
    assert isinstance(spread, NodeFit) and spread.containers[0][0].index == 1
    assert isinstance(binpack, NodeFit) and binpack.containers[0][0].index == 0


def cluster(*nodes: object, now: float = 0.0) -> ClusterState:
    state = ClusterState()
    for inventory in nodes:
        state = ledger.observe_inventory(state, inventory, now)  # type: ignore[arg-type]
    return state


def place(state: ClusterState, req: object, settings: SchedulingSettings, now: float = 0.0):  # type: ignore[no-untyped-def]
    decision = decide(state, req, settings, now)  # type: ignore[arg-type]
    assert isinstance(decision, Placed), decision
    record = ledger.record_for(req, decision.fit, f"a-{req.request_id}", now)  # type: ignore[attr-defined]
    return ledger.commit(state, record, now)[0], record


def test_node_policies() -> None:
    state = cluster(node("a", device(0, node="a")), node("b", device(0, node="b")))
    state, first = place(state, request(C(memory_mib=100), request_id="1"), SchedulingSettings())
    for policy, expected in (("binpack", first.node), ("spread", {"a": "b", "b": "a"}[first.node])):
        decision = decide(
            state,
            request(C(memory_mib=100), request_id="2", node_policy=policy),
            SchedulingSettings(),
            0.0,
        )
        assert isinstance(decision, Placed) and decision.fit.node == expected


def test_wait_when_busy_never_when_impossible() -> None:
    state = cluster(node("a", device(0, node="a", memory=1000)))
    state, _ = place(state, request(C(memory_mib=800)), SchedulingSettings())
    assert isinstance(
        decide(state, request(C(memory_mib=800), request_id="2"), SchedulingSettings(), 0.0), Wait
    )
    never = decide(state, request(C(memory_mib=2000), request_id="3"), SchedulingSettings(), 0.0)
    assert isinstance(never, Never) and "memory" in never.reason


def test_nodes_that_stopped_heartbeating_take_nothing() -> None:
    state = cluster(node("a", device(0, node="a")), now=0.0)
    settings = SchedulingSettings(node_ttl_s=10)
    assert isinstance(decide(state, request(C(memory_mib=1)), settings, 5.0), Placed)
    assert isinstance(decide(state, request(C(memory_mib=1)), settings, 11.0), Never)


def test_candidate_nodes_restrict_placement() -> None:
    state = cluster(node("a", device(0, node="a")), node("b", device(0, node="b")))
    decision = decide(
        state, request(C(memory_mib=1), candidate_nodes=("b",)), SchedulingSettings(), 0.0
    )
    assert isinstance(decision, Placed) and decision.fit.node == "b"


@pytest.mark.parametrize(
    "container",
    [
        C(count=-1),
        C(count=65),
        C(memory_mib=0),
        C(memory_percent=0),
        C(memory_percent=101),
        C(memory_mib=1, memory_percent=5),
        C(cores=101),
        C(cores=-1),
    ],
)
def test_invalid_requests_are_refused(container: C) -> None:
    with pytest.raises(InvalidRequest):
        decide(
            cluster(node("a", device(0, node="a"))), request(container), SchedulingSettings(), 0.0
        )


def test_unknown_policy_is_refused() -> None:
    with pytest.raises(InvalidRequest, match="allowed: binpack, spread, best-fit, fragmentation"):
        decide(cluster(), request(C(), gpu_policy="topology"), SchedulingSettings(), 0.0)
    with pytest.raises(InvalidRequest):
        SchedulingSettings(node_policy="random")


def test_filter_splits_fit_busy_and_impossible() -> None:
    from services.allocator.core.placement import filter_nodes

    state = cluster(
        node("a", device(0, node="a", memory=1000)),
        node("b", device(0, node="b", memory=1000)),
        node("small", device(0, node="small", memory=100)),
    )
    state, _ = place(
        state, request(C(memory_mib=900), candidate_nodes=("a",)), SchedulingSettings()
    )
    passed, failed, never = filter_nodes(
        state,
        request(C(memory_mib=500), request_id="2"),
        SchedulingSettings(),
        0.0,
        ["a", "b", "small", "ghost"],
    )
    assert passed == ["b"]
    assert set(failed) == {"a"} and failed["a"].about("memory")
    assert set(never) == {"small", "ghost"} and never["ghost"] == Reason("no-inventory")
