"""Usage feedback: samples become heat levels; heat breaks ties and never overrides a policy."""

from __future__ import annotations

from dataclasses import replace

import pytest
from immutables import Map

from services.allocator.core import ledger
from services.allocator.core.heat import level_of
from services.allocator.core.placement import FitMemo, Placed, SchedulingSettings, decide
from services.allocator.core.state import ClusterState, DeviceUsage
from services.allocator.core.world import World, node_left
from services.allocator.core.world import usage_seen as observe_usage
from shared.schemas.placement import ContainerRequest as C
from shared.schemas.usage import UsageSample
from tests.unit.helpers import device, node, request

SETTINGS = SchedulingSettings(node_ttl_s=1e9)


def sample(uuid: str, percent: float | None, *, node: str = "a", **kw: object) -> UsageSample:
    return UsageSample(
        node=node,
        device_uuid=uuid,
        at=0.0,
        memory_used_bytes=0,
        memory_total_bytes=1,
        utilization_percent=percent,
        **kw,  # type: ignore[arg-type]
    )


def two_devices(*names: str) -> World:
    state = ClusterState()
    for name in names:
        state = ledger.observe_inventory(
            state, node(name, device(0, node=name), device(1, node=name)), 0.0
        )
    return World(state)


def placed_on(state: World, policy: str = "spread", memo: FitMemo | None = None) -> str:
    r = request(C(memory_mib=100, cores=10), node_policy=policy, gpu_policy=policy)
    decision = decide(state.ledger, r, SETTINGS, 0.0, memo, signals=state.signals)
    assert isinstance(decision, Placed)
    return decision.fit.containers[0][0].uuid


def test_levels_and_smoothing() -> None:
    assert [level_of(p) for p in (0, 24.9, 25, 60, 75, 100)] == [0, 0, 1, 2, 3, 3]
    state = observe_usage(two_devices("a"), sample("GPU-a-0", 90.0), 0.0)
    assert dict(state.signals.node_heat("a")) == {"GPU-a-0": 3}
    # A drop to 0% shows two-thirds of the way after one time constant (30 s): 90 -> ~33%.
    cooled = observe_usage(state, sample("GPU-a-0", 0.0), 30.0)
    assert cooled.signals.utilization["GPU-a-0"][0] == pytest.approx(90 / 2.718281828, rel=1e-3)
    assert dict(cooled.signals.node_heat("a")) == {"GPU-a-0": 1}
    # Per-allocation samples and samples without utilisation carry no heat.
    assert observe_usage(state, sample("GPU-a-1", 99.0, allocation_id="x"), 1.0) is state
    assert observe_usage(state, sample("GPU-a-1", None), 1.0) is state


def test_a_steady_device_keeps_the_heat_map_the_same_object() -> None:
    state = observe_usage(two_devices("a"), sample("GPU-a-0", 80.0), 0.0)
    before = state.signals.node_heat("a")
    state = observe_usage(state, sample("GPU-a-0", 85.0), 5.0)
    assert state.signals.node_heat("a") is before  # remembered fits and scores stay valid


def test_the_cooler_of_equal_devices_is_taken() -> None:
    state = two_devices("a")
    assert placed_on(state) == "GPU-a-0"  # equal: lowest index
    hot = observe_usage(state, sample("GPU-a-0", 95.0), 0.0)
    assert placed_on(hot) == "GPU-a-1"
    memo = FitMemo()
    assert placed_on(state, memo=memo) == "GPU-a-0"
    assert placed_on(hot, memo=memo) == "GPU-a-1"  # a heat change is not a memo hit


def test_the_cooler_of_equal_nodes_is_taken() -> None:
    state = two_devices("a", "b")
    for uuid in ("GPU-a-0", "GPU-a-1"):
        state = observe_usage(state, sample(uuid, 95.0, node="a"), 0.0)
    assert placed_on(state, "binpack").startswith("GPU-b-")
    assert placed_on(state, "fragmentation").startswith("GPU-b-")


def test_heat_never_overrides_the_policy() -> None:
    state = two_devices("a")
    # GPU-a-0 is fuller by allocation: binpack takes it even though it is hot.
    usage = Map({"GPU-a-0": DeviceUsage(memory_mib=500, cores=50, count=1)})
    state = replace(state, ledger=replace(state.ledger, usage=state.ledger.usage.set("a", usage)))
    state = observe_usage(state, sample("GPU-a-0", 99.0), 0.0)
    assert placed_on(state, "binpack") == "GPU-a-0"
    assert placed_on(state, "spread") == "GPU-a-1"


def test_a_node_that_leaves_takes_its_readings() -> None:
    state = observe_usage(two_devices("a"), sample("GPU-a-0", 90.0), 0.0)
    state = observe_usage(state, sample("GPU-a-1", 10.0), 0.0)
    gone = node_left(state, "a")
    assert "a" not in gone.signals.heat and not gone.signals.utilization
    assert node_left(gone, "a") is gone
