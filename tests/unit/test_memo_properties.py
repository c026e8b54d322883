"""A remembered answer is always the answer: whatever happens to the cluster (allocations,
releases, inventory changes, a device going unhealthy, heat, a node leaving or falling
silent, a decision asked of an older state), deciding, filtering and scoring with the
allocator's long-lived memo (its score indexes included) gives exactly what a fresh memo
gives."""

from __future__ import annotations

from dataclasses import replace

import msgspec
from hypothesis import example, given, settings
from hypothesis import strategies as st

from services.allocator.core import heat, ledger
from services.allocator.core.fragmentation import observe_request
from services.allocator.core.placement import (
    FitMemo,
    Placed,
    SchedulingSettings,
    decide,
    filter_nodes,
    node_scores,
)
from services.allocator.core.signals import NO_SIGNALS
from services.allocator.core.state import ClusterState
from shared.schemas.inventory import NodeInventory
from shared.schemas.placement import ContainerRequest, PlaceRequest
from shared.schemas.usage import UsageSample
from tests.unit.helpers import device, node

NODES = ("a", "b", "c", "d")
TTL = 12.0
MODELS = ("NVIDIA H200", "Tesla T4")


def inventory(name: str, devices: int, model: str, unhealthy: int | None) -> NodeInventory:
    made = (device(i, node=name, model=model, memory=80000) for i in range(devices))
    return node(
        name,
        *(
            msgspec.structs.replace(d, uuid=f"{name}-{d.index}", healthy=d.index != unhealthy)
            for d in made
        ),
    )


# Few shapes, so that the same one comes back and the memo really answers.
requests = st.builds(
    ContainerRequest,
    count=st.sampled_from([1, 2]),
    memory_mib=st.sampled_from([30000, 70000]),
    cores=st.sampled_from([0, 50]),
    use_types=st.sampled_from([(), ("T4",)]),
)
operations = st.lists(
    st.one_of(
        st.tuples(
            st.just("place"),
            requests,
            st.one_of(st.none(), st.lists(st.sampled_from((*NODES, "z")), max_size=5)),
        ),
        st.tuples(st.just("forget"), st.sampled_from(NODES)),
        st.tuples(st.just("heartbeat"), st.sampled_from(NODES)),
        st.tuples(st.just("rewind"), st.integers(0, 50)),
        st.tuples(st.just("release"), st.integers(0, 50)),
        st.tuples(
            st.just("inventory"),
            st.sampled_from(NODES),
            st.integers(1, 4),
            st.sampled_from(MODELS),
            st.one_of(st.none(), st.integers(0, 3)),
        ),
        st.tuples(
            st.just("heat"), st.sampled_from(NODES), st.integers(0, 1), st.sampled_from([0.0, 99.0])
        ),
        # New prices of the models (as a snapshot renews them): remembered scores stay.
        st.tuples(
            st.just("reprice"),
            st.sampled_from([0.0, 0.3, 2.0]),
            st.sampled_from([0.0, 0.5, 4.0]),
        ),
    ),
    min_size=1,
    max_size=60,
)


@settings(max_examples=150, deadline=None)
@given(operations, st.sampled_from(["binpack", "spread", "best-fit", "fragmentation"]))
def test_remembered_answers_equal_fresh_ones(ops: list[tuple], policy: str) -> None:
    replay(ops, policy, learn=True)


FLEXIBLE = ContainerRequest(count=1, memory_mib=30000)


@settings(max_examples=200, deadline=None)
@given(operations, st.sampled_from(["best-fit", "fragmentation"]))
# Found once in 3,000 examples against an index that left prices out: the charge must reach it.
@example(
    [("reprice", 0.0, 0.5), ("place", FLEXIBLE, None), ("place", FLEXIBLE, None)], "fragmentation"
)
def test_score_indexes_answer_as_a_scan_does(ops: list[tuple], policy: str) -> None:
    """The mix learnt once, so each shape's score index lives through the whole sequence and
    must catch up on every change (with the mix learnt per request, most decisions meet a
    new policy key and a fresh index)."""
    replay(ops, policy, learn=False)


def replay(ops: list[tuple], policy: str, *, learn: bool) -> None:
    state = ClusterState()
    for i, name in enumerate(NODES):  # both models from the start: prices part them
        state = ledger.observe_inventory(state, inventory(name, 2, MODELS[i % 2], None), 0.0)
    # A node not heard from for TTL steps takes nothing (heartbeats and inventories keep it).
    memo, scheduling = FitMemo(), SchedulingSettings(node_policy=policy, node_ttl_s=TTL)
    signals = NO_SIGNALS
    if not learn:
        for shape in (30000, 70000, 30000):
            asked = (ContainerRequest(count=1, memory_mib=shape),)
            signals = observe_request(signals, state, asked, 0.0)
    live: list[str] = []
    earlier: list[tuple[ClusterState, list[str]]] = []
    for step, op in enumerate(ops):
        now = 1.0 + step
        earlier.append((state, list(live)))
        if op[0] == "place":
            _, container, candidates = op
            request = PlaceRequest(
                request_id=f"r{step}",
                containers=(container,),
                candidate_nodes=None if candidates is None else tuple(candidates),
            )
            if learn:
                signals = observe_request(signals, state, request.containers, now)
            remembered = decide(state, request, scheduling, now, memo, signals=signals)
            assert remembered == decide(state, request, scheduling, now, signals=signals)
            names = list(NODES)
            assert filter_nodes(
                state, request, scheduling, now, names, memo, signals=signals
            ) == filter_nodes(state, request, scheduling, now, names, signals=signals)
            assert node_scores(state, request, scheduling, now, memo, signals=signals) == (
                node_scores(state, request, scheduling, now, signals=signals)
            )
            if isinstance(remembered, Placed):
                record = ledger.record_for(request, remembered.fit, f"a{step}", now)
                state, _ = ledger.commit(state, record, now)
                live.append(record.allocation_id)
        elif op[0] == "release" and live:
            state, _ = ledger.release(state, live.pop(op[1] % len(live)), now)
        elif op[0] == "forget":
            state = ledger.forget_node(state, op[1])
        elif op[0] == "heartbeat" and op[1] in state.nodes:
            inventory_now = msgspec.structs.replace(state.nodes[op[1]].inventory)
            state = ledger.observe_inventory(state, inventory_now, now)
        elif op[0] == "rewind":  # decisions next are asked of a state the memo saw before
            state, live = earlier[op[1] % len(earlier)]
        elif op[0] == "inventory":
            _, name, devices, model, unhealthy = op
            state = ledger.observe_inventory(state, inventory(name, devices, model, unhealthy), now)
        elif op[0] == "reprice":
            prices = tuple((m, p) for m, p in zip(MODELS, op[1:], strict=True) if p)
            signals = replace(signals, mix=replace(signals.mix, prices=prices))
        elif op[0] == "heat":
            _, name, index, percent = op
            sample = UsageSample(
                node=name,
                device_uuid=f"{name}-{index}",
                at=now,
                memory_used_bytes=0,
                memory_total_bytes=1,
                utilization_percent=percent,
            )
            signals = heat.observe_usage(signals, sample, now)
