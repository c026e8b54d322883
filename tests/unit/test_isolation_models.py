"""The allocator core's three isolation models, with no vendor name in it: shares enforced by
interception (the default), hardware partitions the scheduler picks from (a share is rounded up
to the smallest partition that holds it), and devices allocated whole."""

from __future__ import annotations

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st
from immutables import Map

from services.allocator.core import ledger
from services.allocator.core.fit import NodeFit, Reason, fit_node
from services.allocator.core.placement import Never, Placed, SchedulingSettings, Wait, decide
from services.allocator.core.policies import Binpack
from services.allocator.core.state import ClusterState
from shared.schemas.inventory import DeviceInfo, PartitionProfile
from shared.schemas.placement import ContainerRequest as C
from tests.unit.helpers import node, request

ORDER = Binpack().device_order()
# Ascend 910B3 as HAMi configures it: 64 GiB, 20 AI cores, two vNPU templates (5 and 10 cores).
TEMPLATES = (
    PartitionProfile(name="vir05_1c_16g", memory_mib=16384, cores=25),
    PartitionProfile(name="vir10_3c_32g", memory_mib=32768, cores=50),
)


def npu(index: int, **kw: object) -> DeviceInfo:
    fields: dict[str, object] = {
        "uuid": f"NPU-{index}",
        "index": index,
        "model": "Ascend910B3",
        "kind": "ascend",
        "memory_mib": 65536,
        "physical_memory_mib": 65536,
        "isolation": "partition",
        "profiles": TEMPLATES,
        "split_count": 10,
    }
    fields.update(kw)
    return msgspec.convert(fields, DeviceInfo)


def card(index: int) -> DeviceInfo:
    return DeviceInfo(
        uuid=f"GCU-{index}",
        index=index,
        model="S60",
        kind="enflame-gcu",
        memory_mib=49152,
        physical_memory_mib=49152,
        isolation="whole",
    )


def fit(devices: tuple[DeviceInfo, ...], usage: dict, *containers: C) -> NodeFit | Reason:  # type: ignore[type-arg]
    return fit_node("n1", devices, Map(usage), containers, ORDER)


def placed(state: ClusterState, *containers: C, rid: str = "r") -> tuple[ClusterState, NodeFit]:
    decision = decide(state, request(*containers, request_id=rid), SchedulingSettings(), 0.0)
    assert isinstance(decision, Placed), decision
    record = ledger.record_for(request(*containers, request_id=rid), decision.fit, rid, 0.0)
    state, _ = ledger.commit(state, record, 0.0)
    return state, decision.fit


def test_a_share_is_rounded_up_to_the_smallest_partition_that_holds_it() -> None:
    result = fit((npu(0),), {}, C(kind="ascend", memory_mib=2000))
    assert isinstance(result, NodeFit)
    [grant] = result.containers[0]
    assert (grant.profile, grant.memory_mib, grant.cores) == ("vir05_1c_16g", 16384, 25)
    bigger = fit((npu(0),), {}, C(kind="ascend", memory_mib=20000))
    assert isinstance(bigger, NodeFit) and bigger.containers[0][0].profile == "vir10_3c_32g"
    by_cores = fit((npu(0),), {}, C(kind="ascend", cores=40))
    assert isinstance(by_cores, NodeFit) and by_cores.containers[0][0].profile == "vir10_3c_32g"
    assert fit((npu(0),), {}, C(kind="ascend", memory_mib=40000)) == Reason("profile")


def test_partitions_use_the_device_up_and_a_count_alone_takes_it_whole() -> None:
    state = ledger.observe_inventory(ClusterState(), node("n1", npu(0)), 0.0)
    for i in range(4):  # four 16 GiB partitions fill 64 GiB
        state, _ = placed(state, C(kind="ascend", memory_mib=1000), rid=f"p{i}")
    decision = decide(state, request(C(kind="ascend", memory_mib=1000)), SchedulingSettings(), 0.0)
    assert isinstance(decision, Wait) and "memory" in decision.reason
    empty = ledger.observe_inventory(ClusterState(), node("n1", npu(0)), 0.0)
    state, whole = placed(empty, C(kind="ascend"))
    [grant] = whole.containers[0]
    assert (grant.profile, grant.memory_mib, grant.cores) == ("", 65536, 100)
    decision = decide(state, request(C(kind="ascend", memory_mib=1000)), SchedulingSettings(), 0.0)
    assert isinstance(decision, Wait)
    never = decide(empty, request(C(kind="ascend", memory_mib=50000)), SchedulingSettings(), 0.0)
    assert isinstance(never, Never) and "partition" in never.reason


def test_whole_devices_are_never_shared_and_grant_all_of_the_device() -> None:
    state = ledger.observe_inventory(ClusterState(), node("n1", card(0), card(1)), 0.0)
    state, first = placed(state, C(kind="enflame-gcu", memory_mib=100, cores=10), rid="a")
    [grant] = first.containers[0]
    assert (grant.memory_mib, grant.cores) == (49152, 100)  # what it asked is the floor
    state, second = placed(state, C(kind="enflame-gcu"), rid="b")
    assert second.containers[0][0].uuid != grant.uuid
    decision = decide(state, request(C(kind="enflame-gcu")), SchedulingSettings(), 0.0)
    assert isinstance(decision, Wait) and "whole" in decision.reason
    two = decide(
        ledger.observe_inventory(ClusterState(), node("n1", card(0), card(1)), 0.0),
        request(C(kind="enflame-gcu", count=2)),
        SchedulingSettings(),
        0.0,
    )
    assert isinstance(two, Placed) and len(two.fit.containers[0]) == 2


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 70000), st.integers(0, 60)), min_size=1, max_size=12))
def test_partitions_never_overcommit_a_device(asks: list[tuple[int, int]]) -> None:
    state = ledger.observe_inventory(ClusterState(), node("n1", npu(0), npu(1)), 0.0)
    for i, (memory, cores) in enumerate(asks):
        ask = C(kind="ascend", memory_mib=memory, cores=cores)
        decision = decide(state, request(ask, request_id=f"r{i}"), SchedulingSettings(), 0.0)
        if isinstance(decision, Placed):
            [grant] = decision.fit.containers[0]
            assert grant.profile in {t.name for t in TEMPLATES}
            assert grant.memory_mib >= memory and grant.cores >= cores
            record = ledger.record_for(request(ask, request_id=f"r{i}"), decision.fit, f"r{i}", 0.0)
            state, _ = ledger.commit(state, record, 0.0)
    for d in (npu(0), npu(1)):
        used = state.device_usage("n1", d.uuid)
        assert used.memory_mib <= d.memory_mib and used.cores <= d.cores and used.count <= 10
