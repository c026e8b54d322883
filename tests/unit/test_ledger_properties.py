"""Whatever the sequence of requests, releases, expiries and node changes: no device is ever
over-committed, the per-device usage always equals the sum of the allocations, and the free
capacity per model (what prices models) equals what the nodes have left."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from services.allocator.core import ledger
from services.allocator.core.fragmentation import observe_request
from services.allocator.core.placement import Placed, SchedulingSettings, decide
from services.allocator.core.signals import NO_SIGNALS
from services.allocator.core.state import NO_USAGE, ClusterState, free_fraction
from shared.schemas.placement import ContainerRequest
from tests.unit.helpers import device, node, request

containers = st.builds(
    ContainerRequest,
    count=st.integers(0, 3),
    memory_mib=st.one_of(st.none(), st.integers(1, 1200)),
    cores=st.sampled_from([0, 10, 25, 50, 100]),
    numa_bind=st.booleans(),
)
requests = st.tuples(
    st.lists(containers, min_size=1, max_size=2).filter(lambda cs: any(c.count for c in cs)),
    st.sampled_from(["binpack", "spread", "best-fit", "fragmentation"]),
    st.sampled_from(["binpack", "spread", "best-fit", "fragmentation"]),
    st.one_of(st.none(), st.floats(1, 50)),
)


class LedgerMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.state = ClusterState()
        self.signals = NO_SIGNALS
        for name, count in (("a", 2), ("b", 3)):
            inventory = node(
                name,
                *(device(i, node=name, memory=1000, split=3, numa=i % 2) for i in range(count)),
            )
            self.state = ledger.observe_inventory(self.state, inventory, 0.0)
        self.now = 0.0
        self.serial = 0

    @rule(req=requests)
    def place(self, req: tuple) -> None:  # type: ignore[type-arg]
        cs, node_policy, gpu_policy, ttl = req
        self.serial += 1
        r = request(
            *cs,
            request_id=str(self.serial),
            node_policy=node_policy,
            gpu_policy=gpu_policy,
            lease_ttl_s=ttl,
        )
        self.signals = observe_request(self.signals, self.state, r.containers, self.now)
        decision = decide(
            self.state, r, SchedulingSettings(node_ttl_s=1e9), self.now, signals=self.signals
        )
        if isinstance(decision, Placed):
            record = ledger.record_for(r, decision.fit, f"alloc-{self.serial}", self.now)
            self.state, events = ledger.commit(self.state, record, self.now)
            assert [e.kind for e in events] == ["allocated"]

    @rule(pick=st.integers(0, 1000))
    def release(self, pick: int) -> None:
        ids = sorted(self.state.allocations)
        if ids:
            self.state, events = ledger.release(self.state, ids[pick % len(ids)], self.now)
            assert len(events) == 1

    @rule(dt=st.floats(0, 30))
    def time_passes(self, dt: float) -> None:
        self.now += dt
        for allocation_id in ledger.expired(self.state, self.now):
            self.state, _ = ledger.release(self.state, allocation_id, self.now, kind="expired")

    @rule(health=st.booleans(), model=st.sampled_from(["NVIDIA H200", "Tesla T4"]))
    def node_b_changes(self, health: bool, model: str) -> None:
        """Node b's agent reports again: a device's health, or every device's model, moved."""
        devices = [
            device(i, node="b", model=model, memory=1000, split=3, numa=i % 2, healthy=i or health)
            for i in range(3)
        ]
        self.state = ledger.observe_inventory(self.state, node("b", *devices), self.now)

    @rule()
    def node_a_leaves(self) -> None:
        self.state = ledger.forget_node(self.state, "a")

    @invariant()
    def free_is_what_the_nodes_have_left(self) -> None:
        free: dict[str, int] = {}
        for record in self.state.nodes.values():
            for d in record.devices:
                left = free_fraction(d, self.state.node_usage(record.name).get(d.uuid, NO_USAGE))
                if round(left * 1e6):
                    free[d.model] = free.get(d.model, 0) + round(left * 1e6)
        assert dict(self.state.free) == free

    @invariant()
    def never_over_committed(self) -> None:
        for record in self.state.nodes.values():
            for d in record.devices:
                used = self.state.device_usage(record.name, d.uuid)
                assert used.memory_mib <= d.memory_mib
                assert used.cores <= d.cores
                assert used.count <= d.split_count
                if any(
                    g.cores == 100 and g.uuid == d.uuid
                    for a in self.state.allocations.values()
                    for g in a.grants()
                ):
                    assert used.count == 1

    @invariant()
    def usage_is_the_sum_of_allocations(self) -> None:
        totals: dict[str, tuple[int, int, int]] = {}
        for allocation in self.state.allocations.values():
            for g in allocation.grants():
                m, c, n = totals.get(g.uuid, (0, 0, 0))
                totals[g.uuid] = (m + g.memory_mib, c + g.cores, n + 1)
        for name, per_device in self.state.usage.items():
            for uuid, used in per_device.items():
                assert totals.pop(uuid) == (used.memory_mib, used.cores, used.count), (name, uuid)
        assert not totals


LedgerMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
TestLedger = LedgerMachine.TestCase


def test_retry_with_same_request_id_is_recognised() -> None:
    state = ledger.observe_inventory(ClusterState(), node("a", device(0, node="a")), 0.0)
    r = request(ContainerRequest(memory_mib=10))
    decision = decide(state, r, SchedulingSettings(), 0.0)
    assert isinstance(decision, Placed)
    state, _ = ledger.commit(state, ledger.record_for(r, decision.fit, "x", 0.0), 0.0)
    assert state.by_request["r1"] == "x"


def test_restore_gives_leases_a_fresh_deadline() -> None:
    state = ledger.observe_inventory(ClusterState(), node("a", device(0, node="a")), 0.0)
    r = request(ContainerRequest(memory_mib=10), lease_ttl_s=30.0)
    decision = decide(state, r, SchedulingSettings(), 0.0)
    assert isinstance(decision, Placed)
    record = ledger.record_for(r, decision.fit, "x", 0.0)
    restored = ledger.restore(ClusterState(), record, now=1000.0)
    assert ledger.expired(restored, 1029.0) == []
    assert ledger.expired(restored, 1031.0) == ["x"]
    state, left, ok = ledger.renew(restored, "x", 1031.0)
    assert ok and left == 30.0 and ledger.expired(state, 1040.0) == []


@settings(max_examples=100, deadline=None)
@given(
    fills=st.lists(
        st.tuples(st.integers(0, 9), st.integers(1, 900), st.sampled_from([0, 20, 50])), max_size=30
    ),
    policy=st.sampled_from(["binpack", "spread", "best-fit", "fragmentation"]),
    want=st.integers(1, 800),
)
def test_decision_matches_a_brute_force_oracle_on_small_clusters(
    fills: list[tuple[int, int, int]], policy: str, want: int
) -> None:
    from services.allocator.core.fit import NodeFit, fit_node
    from services.allocator.core.placement import BOUNDED_FITS, Wait
    from services.allocator.core.policies import policy_named

    state = ClusterState()
    names = [f"n{i}" for i in range(10)]
    assert len(names) <= BOUNDED_FITS
    for name in names:
        state = ledger.observe_inventory(
            state, node(name, *(device(g, node=name, memory=1000, split=4) for g in range(2))), 0.0
        )
    for i, (n, mem, cores) in enumerate(fills):
        r = request(
            ContainerRequest(memory_mib=mem, cores=cores),
            request_id=f"f{i}",
            candidate_nodes=(names[n],),
        )
        decision = decide(state, r, SchedulingSettings(), 0.0)
        if isinstance(decision, Placed):
            state, _ = ledger.commit(state, ledger.record_for(r, decision.fit, f"a{i}", 0.0), 0.0)
    ask = request(
        ContainerRequest(memory_mib=want, cores=10),
        request_id="ask",
        node_policy=policy,
        gpu_policy=policy,
    )
    decision = decide(state, ask, SchedulingSettings(), 0.0)
    node_policy = policy_named(policy).bind(NO_SIGNALS, ask.containers)
    order = node_policy.device_order()
    scored = []
    for name in names:
        record, usage = state.nodes[name], state.node_usage(name)
        fit = fit_node(name, record.devices, usage, ask.containers, order)
        if isinstance(fit, NodeFit):
            scored.append((-node_policy.node_score(record.devices, usage, fit), name))
    if not scored:
        assert not isinstance(decision, Placed)
        return
    assert not isinstance(decision, Wait)
    assert isinstance(decision, Placed) and decision.fit.node == min(scored)[1]


def test_orphans_are_pods_missing_from_a_list_taken_after_they_were_placed() -> None:
    from shared.schemas.placement import Holder

    state = ledger.observe_inventory(ClusterState(), node("a", device(0, node="a")), 0.0)
    for rid, uid, when in (("old", "u-old", 1.0), ("new", "u-new", 9.0), ("live", "u-live", 1.0)):
        r = request(
            ContainerRequest(memory_mib=1),
            request_id=rid,
            holder=Holder(kind="pod", pod=rid, pod_uid=uid),
        )
        decision = decide(state, r, SchedulingSettings(), when)
        assert isinstance(decision, Placed)
        state, _ = ledger.commit(state, ledger.record_for(r, decision.fit, rid, when), when)
    assert ledger.orphaned(state, {"u-live"}, listed_at=5.0) == ["old"]
