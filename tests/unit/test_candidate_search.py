"""A decision among candidates is the decision over the cluster restricted to them: the same
load order, the same bounded search, whatever the candidates' order; and the extender's
one-node filter answers the node that decision picks, or, when none fits, exactly the
refusals of the full filter."""

from __future__ import annotations

import random

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from services.allocator.core import ledger
from services.allocator.core.index import STEPS
from services.allocator.core.placement import (
    BOUNDED_FITS,
    FitMemo,
    Placed,
    SchedulingSettings,
    decide,
    filter_best,
    filter_nodes,
    load_ordered,
    walk,
)
from services.allocator.core.state import ClusterState, node_load, offer_key
from shared.schemas.placement import ContainerRequest, PlaceRequest
from tests.unit.helpers import device, node

NODE_COUNT = 3 * BOUNDED_FITS  # more than one bounded search looks at


def cluster(fill: list[int]) -> ClusterState:
    """NODE_COUNT nodes of two 80 GB devices; node i first gets fill[i] 10 GB shares."""
    state = ClusterState()
    for i in range(NODE_COUNT):
        name = f"n{i:02d}"
        devices = tuple(device(d, node=name, memory=80000) for d in range(2))
        state = ledger.observe_inventory(state, node(name, *devices), 0.0)
    for i, shares in enumerate(fill):
        for s in range(shares):
            request = PlaceRequest(
                request_id=f"fill-{i}-{s}",
                containers=(ContainerRequest(memory_mib=10000),),
                candidate_nodes=(f"n{i:02d}",),
            )
            decision = decide(state, request, SchedulingSettings(node_ttl_s=1e9), 0.0)
            if isinstance(decision, Placed):
                record = ledger.record_for(request, decision.fit, f"a-{i}-{s}", 0.0)
                state, _ = ledger.commit(state, record, 0.0)
    return state


def by_load(state: ClusterState, most_loaded_first: bool) -> list[str]:
    """Every node in load order, computed from the ledger itself: (bucket, then name)."""
    direction = -1 if most_loaded_first else 1
    buckets = {
        name: int(node_load(record.devices, state.node_usage(name)) * STEPS)
        for name, record in state.nodes.items()
    }
    return sorted(buckets, key=lambda n: (direction * buckets[n], n))


fills = st.lists(st.integers(0, 16), min_size=NODE_COUNT, max_size=NODE_COUNT)


@settings(max_examples=40, deadline=None)
@given(
    fill=fills,
    seed=st.integers(0, 1000),
    policy=st.sampled_from(["binpack", "spread"]),
    k=st.integers(1, NODE_COUNT),  # few: the walk gives up early and sorts the rest
)
def test_candidates_walk_the_index_order(fill: list[int], seed: int, policy: str, k: int) -> None:
    state = cluster(fill)
    loaded_first = policy == "binpack"
    names = [f"n{i:02d}" for i in range(NODE_COUNT)]
    chosen = [*random.Random(seed).sample(names, k=k), "not-a-node"]
    walked = [n for n in by_load(state, loaded_first) if n in chosen]
    assert list(load_ordered(state, chosen, loaded_first)) == [*walked, "not-a-node"]


@settings(max_examples=40, deadline=None)
@given(
    fill=fills,
    seed=st.integers(0, 1000),
    policy=st.sampled_from(["binpack", "spread"]),
    memory=st.sampled_from([10000, 45000, 80000, 90000]),
)
def test_deciding_among_all_nodes_as_candidates_is_deciding_over_the_cluster(
    fill: list[int], seed: int, policy: str, memory: int
) -> None:
    state = cluster(fill)
    settings_ = SchedulingSettings(node_policy=policy, node_ttl_s=1e9)
    names = [f"n{i:02d}" for i in range(NODE_COUNT)]
    random.Random(seed).shuffle(names)  # kube-scheduler's order is its own
    asked = PlaceRequest(request_id="r", containers=(ContainerRequest(memory_mib=memory),))
    among = PlaceRequest(
        request_id="r",
        containers=(ContainerRequest(memory_mib=memory),),
        candidate_nodes=tuple(names),
    )
    everywhere = decide(state, asked, settings_, 0.0)
    assert decide(state, among, settings_, 0.0, FitMemo()) == everywhere
    passed, busy, never = filter_best(state, asked, settings_, 0.0, names)
    if isinstance(everywhere, Placed):
        assert passed == [everywhere.fit.node]
        assert not set(busy) & set(passed)
    else:  # nothing fits: the full filter's refusals, every node's
        assert passed == []
        assert (passed, busy, never) == tuple(filter_nodes(state, asked, settings_, 0.0, names))
        assert set(busy) | set(never) == set(names)


KIND_MIXES = (
    ("nvidia",),
    ("cambricon-mlu",),
    ("nvidia", "cambricon-mlu"),
    ("nvidia", "nvidia:partition"),  # a node in both of one kind's indexes
)


@settings(max_examples=60, deadline=None)
@given(
    steps=st.lists(
        st.tuples(
            st.sampled_from(["inventory", "leave", "place"]),
            st.integers(0, 5),
            st.sampled_from(KIND_MIXES),
        ),
        max_size=30,
    )
)
def test_each_kinds_index_is_the_load_index_of_that_kinds_nodes(
    steps: list[tuple[str, int, tuple[str, ...]]],
) -> None:
    """Whatever nodes join, change kind, leave or fill: a kind's index walks exactly that
    kind's nodes, in the order the cluster's index walks them."""
    state = ClusterState()
    for step, (op, n, kinds) in enumerate(steps):
        name = f"n{n}"
        if op == "inventory":
            devices = tuple(
                msgspec.structs.replace(
                    device(d, node=name, memory=80000),
                    kind=kind.split(":")[0],
                    isolation="partition" if kind.endswith(":partition") else "interception",
                )
                for d, kind in enumerate(kinds)
            )
            state = ledger.observe_inventory(state, node(name, *devices), 0.0)
        elif op == "leave":
            state = ledger.forget_node(state, name)
        elif name in state.nodes:
            kind = sorted(k for k, _ in state.nodes[name].offered)[0]
            request = PlaceRequest(
                request_id=f"r{step}",
                containers=(ContainerRequest(kind=kind, memory_mib=20000),),
                candidate_nodes=(name,),
            )
            decision = decide(state, request, SchedulingSettings(node_ttl_s=1e9), 0.0)
            if isinstance(decision, Placed):
                record = ledger.record_for(request, decision.fit, f"a{step}", 0.0)
                state, _ = ledger.commit(state, record, 0.0)
        for loaded_first in (True, False):
            walked = by_load(state, loaded_first)
            assert list(walk(state, None, loaded_first)) == walked
            for kind in ("nvidia", "cambricon-mlu"):
                expected = [m for m in walked if any(k == kind for k, _ in state.nodes[m].offered)]
                got = list(
                    walk(state, (offer_key(kind, True), offer_key(kind, False)), loaded_first)
                )
                assert got == expected, (kind, step)
