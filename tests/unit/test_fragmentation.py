"""The fragmentation-aware policy: its measure, its choices where binpack's differ, scarcity of
pinned models, and the mix it learns from requests."""

from __future__ import annotations

from dataclasses import replace

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st
from immutables import Map

from services.allocator.core import ledger
from services.allocator.core.fragmentation import (
    measure,
    model_prices,
    observe_request,
    remembered,
    snapshot_of,
    stranded,
)
from services.allocator.core.mix import REFRESH_EVERY, MixSnapshot, WorkloadMix, shape_of
from services.allocator.core.placement import FitMemo, Placed, SchedulingSettings, decide
from services.allocator.core.policies import FragmentationAware, policy_named
from services.allocator.core.state import NO_HOST, ClusterState, DeviceUsage
from services.allocator.core.world import World
from shared.schemas.placement import ContainerRequest as C
from tests.unit.helpers import device, node, request

WHOLE = (C(cores=100),)
HALF = (C(cores=50, memory_percent=50),)


def used(cores: int, memory: int = 0) -> DeviceUsage:
    return DeviceUsage(memory_mib=memory, cores=cores, count=1)


def cluster(*nodes: tuple[str, list[DeviceUsage | None], str]) -> World:
    state = ClusterState()
    for name, usages, model in nodes:
        devices = [device(i, node=name, model=model) for i in range(len(usages))]
        state = ledger.observe_inventory(state, node(name, *devices), 0.0)
        taken = Map({d.uuid: u for d, u in zip(devices, usages, strict=True) if u is not None})
        free = state.refreed(tuple(devices), state.node_usage(name), tuple(devices), taken)
        state = replace(state, usage=state.usage.set(name, taken), free=free)
        state = state.indexed(name)
    return World(state)


def observe(world: World, shape: tuple[C, ...], now: float) -> World:
    return replace(world, signals=observe_request(world.signals, world.ledger, shape, now))


def learn(world: World, *shapes: tuple[tuple[C, ...], int]) -> World:
    now = 0.0
    for shape, times in shapes:
        for _ in range(times):
            world = observe(world, shape, now)
    # Force a fresh snapshot of everything observed.
    models: dict[str, int] = {}
    for record in world.ledger.nodes.values():
        for d in record.devices:
            models[d.model] = models.get(d.model, 0) + 1
    weights = world.signals.mix.weights
    snapshot = snapshot_of(weights, models)
    prices = model_prices(snapshot.pinned, world.ledger.free)
    mix = WorkloadMix(weights=weights, snapshot=snapshot, prices=tuple(sorted(prices.items())))
    return replace(world, signals=replace(world.signals, mix=mix))


def place(world: World, shape: tuple[C, ...], policy: str) -> str:
    decision = decide(
        world.ledger,
        request(*shape, node_policy=policy),
        SchedulingSettings(node_ttl_s=1e9),
        0.0,
        signals=world.signals,
    )
    assert isinstance(decision, Placed), decision
    return decision.fit.node


def test_stranded_counts_what_a_shape_cannot_use() -> None:
    devices = tuple(device(i, memory=1000) for i in range(3))
    usage = Map({devices[0].uuid: used(70, 700), devices[1].uuid: used(30, 300)})
    # A half-device request fits device 1 (0.7 free) and 2: device 0's 0.3 is stranded.
    assert abs(stranded(devices, usage, HALF) - 0.3) < 1e-9
    # A whole device fits device 2 only: 0.3 + 0.7 stranded.
    assert abs(stranded(devices, usage, WHOLE) - 1.0) < 1e-9
    # Three whole devices cannot fit at all: everything free is stranded.
    assert abs(stranded(devices, usage, (C(count=3, cores=100),)) - 2.0) < 1e-9


def test_a_half_request_fills_a_half_used_device_instead_of_breaking_a_whole_one() -> None:
    # a: one device taken whole, one idle (the fuller node: binpack goes there and breaks the
    # idle device); b: four devices, one half used.
    state = cluster(
        ("a", [used(100, 1000), None], "NVIDIA H200"),
        ("b", [used(50, 500), None, None, None], "NVIDIA H200"),
    )
    state = learn(state, (WHOLE, 30), (HALF, 10))
    assert place(state, HALF, "binpack") == "a"
    assert place(state, HALF, "fragmentation") == "b"


def test_ties_go_to_the_first_node_in_the_order_of_names_whatever_their_load() -> None:
    """Nothing learnt: every placement is a tie, so requests fill the first node of the name
    order (a hash: not the fullest node, not the first name) until it is full, then the next."""
    from services.allocator.core.policies import name_rank

    names = sorted(("a", "b", "c"), key=name_rank)
    first, second = names[0], names[1]
    loads = {first: None, second: used(60, 600), names[2]: used(20, 200)}
    state = cluster(*((n, [loads[n], None], "NVIDIA H200") for n in sorted(names)))
    shape = (C(cores=50, memory_percent=50),)
    placed = []
    for i in range(5):
        ask = request(*shape, node_policy="fragmentation", request_id=f"r{i}")
        decision = decide(state.ledger, ask, SchedulingSettings(node_ttl_s=1e9), 0.0)
        assert isinstance(decision, Placed)
        placed.append(decision.fit.node)
        record = ledger.record_for(ask, decision.fit, f"a{i}", 0.0)
        state = replace(state, ledger=ledger.commit(state.ledger, record, 0.0)[0])
    # The first node's two devices take four halves; the fifth goes on to the second node.
    assert placed == [first] * 4 + [second]


def test_the_name_order_is_stable_and_spread_over_its_range() -> None:
    from services.allocator.core.policies import name_rank

    # CRC-32, pinned: the replay (benchmarks/openb_replay.py) ranks nodes with the same one.
    assert name_rank("openb-node-0000") == 0xE58AA9FB / 2**32
    ranks = [name_rank(f"node-{i:04d}") for i in range(1000)]
    assert all(0 <= r < 1 for r in ranks)
    assert len(set(ranks)) == len(ranks)
    # Names in a row (a rack, a model) are not next to each other in the order.
    assert sorted(range(1000), key=lambda i: ranks[i])[:10] != list(range(10))
    assert 0.4 < sum(ranks) / len(ranks) < 0.6


def test_flexible_requests_leave_the_model_pinned_requests_need() -> None:
    state = cluster(
        ("t4", [None, None], "Tesla T4"),
        ("big", [None] * 8, "NVIDIA H200"),
    )
    pinned = (C(cores=100, use_types=("T4",)),)
    state = learn(state, (pinned, 20), (WHOLE, 20))
    assert place(state, WHOLE, "binpack") == "t4"  # smaller, so fuller after
    assert place(state, WHOLE, "fragmentation") == "big"
    assert place(state, pinned, "fragmentation") == "t4"


def test_the_mix_forgets_and_snapshots_only_every_so_often() -> None:
    state = cluster(("a", [None], "NVIDIA H200"))
    state = observe(state, (C(name="x", cores=30),), 0.0)
    first = state.signals.mix.snapshot
    assert [s for s, _ in first.shapes] == [(shape_of((C(cores=30),)), NO_HOST)]
    for i in range(REFRESH_EVERY - 1):
        state = observe(state, (C(cores=60),), float(i))
    assert state.signals.mix.snapshot is first  # not refreshed yet
    state = observe(state, (C(cores=60),), 100.0)
    assert state.signals.mix.snapshot is not first
    # An hour later a request weighs twice what the same request did before.
    mix = WorkloadMix().observe(HALF, 0.0).observe(WHOLE, 3600.0)
    half, whole = (shape_of(HALF), NO_HOST), (shape_of(WHOLE), NO_HOST)
    assert abs(mix.weights[half] - 0.5) < 1e-9 and mix.weights[whole] == 1


shares = st.sampled_from([0, 10, 25, 50, 70, 100])


@settings(max_examples=60, deadline=None)
@given(
    fills=st.lists(st.lists(shares, min_size=1, max_size=4), min_size=1, max_size=5),
    mix=st.lists(st.tuples(st.integers(1, 2), shares.filter(bool)), min_size=1, max_size=4),
    ask=shares.filter(bool),
)
def test_the_decision_is_the_best_gradient_over_all_nodes(
    fills: list[list[int]], mix: list[tuple[int, int]], ask: int
) -> None:
    """The chosen node has the best score of every node that fits; the memo never changes it."""
    from services.allocator.core.fit import NodeFit, fit_node
    from services.allocator.core.policies import policy_named

    world = cluster(
        *(
            (f"n{i}", [used(c, c * 10) if c else None for c in cores], "NVIDIA H200")
            for i, cores in enumerate(fills)
        )
    )
    world = learn(world, *(((C(count=n, cores=c, memory_percent=c),), 3) for n, c in mix))
    state, signals = world.ledger, world.signals
    shape = (C(cores=ask, memory_percent=ask),)
    policy = policy_named("fragmentation").bind(signals, shape)
    scores = {}
    for name, record in state.nodes.items():
        usage = state.node_usage(name)
        fit = fit_node(name, record.devices, usage, shape, policy.device_order())
        if isinstance(fit, NodeFit):
            scores[name] = policy.node_score(record.devices, usage, fit)
            key = (name, state.generation.get(name, 0))
            assert remembered(signals.mix.snapshot, record.devices, usage, key) == (
                measure(signals.mix.snapshot, record.devices, usage)
            )
    ask_request = request(*shape, node_policy="fragmentation")
    scheduling = SchedulingSettings(node_ttl_s=1e9)
    decision = decide(state, ask_request, scheduling, 0.0, signals=signals)
    memo = FitMemo()
    for _ in range(2):  # the second time every node's answer comes from the memo
        again = decide(state, ask_request, scheduling, 0.0, memo, signals=signals)
        assert again == decision
    if not scores:
        assert not isinstance(decision, Placed)
        return
    assert isinstance(decision, Placed)
    best = max(scores.values())
    assert scores[decision.fit.node] == best


def test_the_webhook_accepts_exactly_the_allocators_policies() -> None:
    from services.allocator.core.policies import POLICIES
    from services.webhook.core.settings import WebhookSettings
    from shared.resources import SCHEDULER_POLICIES

    assert tuple(POLICIES) == SCHEDULER_POLICIES == WebhookSettings().policies


def test_the_mix_decays_under_steady_traffic_and_stays_bounded() -> None:
    from services.allocator.core.mix import HALF_LIFE_S, MAX_TRACKED

    mix = WorkloadMix().observe(HALF, 0.0)
    # A request a second for two half-lives: small steps must add up, not be lost.
    for second in range(1, int(2 * HALF_LIFE_S) + 1):
        mix = mix.observe(WHOLE, float(second))
    old = mix.weights[(shape_of(HALF), NO_HOST)] * 0.5 ** ((2 * HALF_LIFE_S - mix.at) / HALF_LIFE_S)
    assert abs(old - 0.25) < 0.01
    # Wall-clock times (the service's clock) from a fresh mix: the first step decays to nothing.
    wall = WorkloadMix().observe(HALF, 1.8e9).observe(WHOLE, 1.8e9 + 1)
    assert wall.weights[(shape_of(HALF), NO_HOST)] == 1.0 and wall.at == 1.8e9
    many = WorkloadMix()
    for i in range(MAX_TRACKED + 10):
        many = many.observe((C(memory_mib=i + 1),), 0.0)
    assert len(many.weights) <= MAX_TRACKED


def test_devices_a_node_has_no_host_cpu_or_memory_for_are_stranded() -> None:
    devices = tuple(device(i, memory=1000) for i in range(2))
    usage = Map({devices[0].uuid: used(50, 500)})
    need = (8000, 16384)
    assert abs(stranded(devices, usage, HALF, need, None) - 0.0) < 1e-9  # room not known
    assert abs(stranded(devices, usage, HALF, need, (8000, 16384)) - 0.0) < 1e-9
    assert abs(stranded(devices, usage, HALF, need, (7999, 1 << 40)) - 1.5) < 1e-9
    assert abs(stranded(devices, usage, HALF, need, (1 << 40, 16383)) - 1.5) < 1e-9


def with_host(world: World, name: str, cpu: int, others: int = 0) -> World:
    record = world.ledger.nodes[name]
    inventory = msgspec.structs.replace(record.inventory, cpu_milli=cpu, others_cpu_milli=others)
    return replace(world, ledger=ledger.observe_inventory(world.ledger, inventory, 0.0))


def test_a_share_goes_where_the_hosts_cpu_already_strands_the_devices() -> None:
    """The mix asks for whole devices with 8 CPUs each; node a has 4 CPUs left, so its devices
    are stranded already: a share placed there strands nothing more, on b it breaks a device."""
    world = cluster(("a", [None, None], "NVIDIA H200"), ("b", [None, None], "NVIDIA H200"))
    world = with_host(world, "a", 64000, others=60000)
    world = with_host(world, "b", 64000)
    for _ in range(30):
        world = replace(
            world,
            signals=observe_request(world.signals, world.ledger, WHOLE, 0.0, (8000, 0)),
        )
    ask = request(*HALF, node_policy="fragmentation", cpu_milli=1000)
    settings_ = SchedulingSettings(node_ttl_s=1e9)
    memo = FitMemo()
    decision = decide(world.ledger, ask, settings_, 0.0, memo, signals=world.signals)
    assert isinstance(decision, Placed) and decision.fit.node == "a"
    # The pods on a are gone (its agent says so): its devices are no longer stranded, and the
    # same memo sees it (the node's generation moved).
    from services.allocator.core.policies import name_rank

    world = with_host(world, "a", 64000, others=0)
    decision = decide(world.ledger, ask, settings_, 0.0, memo, signals=world.signals)
    first, other = sorted(("a", "b"), key=name_rank)
    assert isinstance(decision, Placed) and decision.fit.node == first  # a tie
    world = with_host(world, other, 64000, others=60000)
    decision = decide(world.ledger, ask, settings_, 0.0, memo, signals=world.signals)
    assert isinstance(decision, Placed) and decision.fit.node == other


def test_the_ledger_counts_its_allocations_host_cpu_and_memory_on_their_node() -> None:
    world = cluster(("a", [None, None], "NVIDIA H200"))
    world = with_host(world, "a", 64000, others=4000)
    state = world.ledger
    assert state.room("a") == (60000, 2**62)  # memory not said: unlimited
    ask = request(*HALF, cpu_milli=10000, memory_mib=2048)
    decision = decide(state, ask, SchedulingSettings(node_ttl_s=1e9), 0.0)
    assert isinstance(decision, Placed)
    record = ledger.record_for(ask, decision.fit, "alloc-1", 0.0)
    assert (record.cpu_milli, record.memory_mib) == (10000, 2048)
    held, _ = ledger.commit(state, record, 0.0)
    assert held.room("a") == (50000, 2**62)
    again, _ = ledger.commit(held, ledger.record_for(ask, decision.fit, "alloc-2", 0.0), 0.0)
    assert again.room("a") == (40000, 2**62)
    freed = again.without_allocation("alloc-1").without_allocation("alloc-2")
    assert freed.room("a") == (60000, 2**62) and "a" not in freed.host
    assert ClusterState().room("a") is None


def test_the_mix_learns_the_host_cpu_requests_ask_for_and_records_bring_it_back() -> None:
    from services.allocator.core import world as worlds

    world = cluster(("a", [None], "NVIDIA H200"))
    ask = request(*HALF, cpu_milli=4000, memory_mib=8192)
    world, decision = worlds.asked(world, ask, SchedulingSettings(node_ttl_s=1e9), 0.0)
    assert isinstance(decision, Placed)
    assert (shape_of(HALF), (4000, 8192)) in world.signals.mix.weights
    record = ledger.record_for(ask, decision.fit, "alloc-1", 0.0)
    back = worlds.restored(cluster(("a", [None], "NVIDIA H200")), record, 0.0)
    assert [host for _, host in back.signals.mix.weights] == [(4000, 8192)]
    assert back.ledger.host["a"] == (4000, 8192)


container = st.builds(
    C,
    count=st.integers(1, 3),
    cores=st.sampled_from([0, 20, 50, 100]),
    memory_percent=st.sampled_from([None, 10, 50, 90]),
    numa_bind=st.booleans(),
    use_uuids=st.sampled_from([(), ("GPU-a-1",), ("GPU-b-1",)]),
    use_types=st.sampled_from([(), ("H200",), ("T4",)]),
)
host_ask = st.tuples(st.sampled_from([0, 2000, 8000]), st.sampled_from([0, 4096]))


@settings(max_examples=150, deadline=None)
@given(
    layout=st.lists(
        st.tuples(
            st.sampled_from(["NVIDIA H200", "Tesla T4"]),
            st.sampled_from(["interception", "whole"]),
            st.integers(0, 1),  # NUMA node
            st.booleans(),  # healthy
            st.sampled_from([0, 10, 50, 100]),  # cores taken
            st.integers(0, 3),  # shares held
        ),
        min_size=1,
        max_size=4,
    ),
    shapes=st.lists(
        st.tuples(st.lists(container, min_size=1, max_size=2).map(tuple), host_ask),
        min_size=1,
        max_size=5,
        unique=True,
    ),
    room=st.one_of(st.none(), st.tuples(st.sampled_from([0, 4000, 8000]), st.just(4096))),
)
def test_the_measure_is_the_weighted_stranded_capacity_and_alike_nodes_share_it(
    layout: list[tuple[str, str, int, bool, int, int]],
    shapes: list[tuple[tuple[C, ...], tuple[int, int]]],
    room: tuple[int, int] | None,
) -> None:
    """measure() judges the usual shapes from the devices' verdicts and remembers nodes by
    content; both must give exactly the weighted sum of ``stranded`` over the mix, and a node
    differing only in its devices' names gets the same answer unless a shape names devices."""
    from msgspec.structs import replace as with_fields

    def node_of(name: str) -> tuple[tuple, Map]:
        devices, usage = [], {}
        for i, (model, isolation, numa, healthy, cores, shares) in enumerate(layout):
            d = with_fields(
                device(i, node=name, model=model, numa=numa, healthy=healthy),
                isolation=isolation,
            )
            devices.append(d)
            if shares:
                usage[d.uuid] = DeviceUsage(memory_mib=cores * 10, cores=cores, count=shares)
        return tuple(devices), Map(usage)

    weights = [1.0 / len(shapes)] * len(shapes)
    snapshot = MixSnapshot(shapes=tuple(zip(shapes, weights, strict=True)))
    for name in ("a", "b"):
        devices, usage = node_of(name)
        expected = sum(
            w * stranded(devices, usage, shape, need, room)
            for (shape, need), w in zip(shapes, weights, strict=True)
        )
        fresh = MixSnapshot(shapes=snapshot.shapes)
        assert abs(measure(fresh, devices, usage, room) - expected) < 1e-9
        # The shared snapshot: b, alike a but for names, may be answered from a's entry.
        assert abs(measure(snapshot, devices, usage, room) - expected) < 1e-9


def test_a_shape_asking_no_cpu_is_not_stranded_by_an_overcommitted_node() -> None:
    devices = (device(0, memory=1000),)
    # Its other pods ask more CPU than it has (the agent's figures lag): room is negative.
    assert stranded(devices, Map(), HALF, (0, 0), (-500, -10)) == 0.0
    assert stranded(devices, Map(), HALF, (1, 0), (-500, 1 << 30)) == 1.0
    snapshot = MixSnapshot(shapes=(((shape_of(HALF), (0, 0)), 1.0),))
    assert measure(snapshot, devices, Map(), (-500, -10)) == 0.0


def test_each_request_weighs_one_whatever_it_asks_for() -> None:
    """The measure is the capacity expected to be stranded for the next request (FGD's
    definition): a shape weighs its share of the requests. A multi-device shape's stranded
    term already counts every device it cannot use; weighing it by its devices as well would
    count them twice."""
    eight = (C(count=8, cores=100),)
    counts = {(shape_of(eight), NO_HOST): 1.0, (shape_of(HALF), NO_HOST): 3.0}
    snapshot = snapshot_of(counts, {"NVIDIA H200": 16})
    assert dict(snapshot.shapes) == {
        (shape_of(HALF), NO_HOST): 0.75,
        (shape_of(eight), NO_HOST): 0.25,
    }


def test_a_models_price_follows_its_pinned_share_against_what_is_left_of_it() -> None:
    pinned = {"Tesla T4": 0.1}
    # T4 is half of what is free but a tenth of what is asked: cheap (0.2 a device)...
    plenty = model_prices(pinned, {"Tesla T4": 50_000_000, "NVIDIA H200": 50_000_000})
    # ...and a twentieth of what is free: pinned requests need all of it (2 a device).
    short = model_prices(pinned, {"Tesla T4": 5_000_000, "NVIDIA H200": 95_000_000})
    assert abs(plenty["Tesla T4"] - 0.2) < 0.01 and abs(short["Tesla T4"] - 2.0) < 0.1
    assert model_prices(pinned, {"Tesla T4": 1_000_000_000, "NVIDIA H200": 1})["Tesla T4"] < 0.11
    # A price under a hundredth of a device is none (and prices move in 25% steps).
    assert model_prices({"Tesla T4": 0.001}, {"Tesla T4": 10**6, "NVIDIA H200": 10**6}) == {
        "Tesla T4": 0.0
    }


def test_prices_are_renewed_with_each_snapshot_from_what_is_free_then() -> None:
    world = cluster(("t4", [None] * 4, "Tesla T4"), ("big", [None] * 4, "NVIDIA H200"))
    pinned = (C(cores=100, use_types=("T4",)),)
    for i in range(1 + REFRESH_EVERY):  # the first request snapshots, the 64 after renew
        world = observe(world, pinned if i % 4 == 0 else WHOLE, 0.0)
    plenty = dict(world.signals.mix.prices)["Tesla T4"]
    state = world.ledger
    for i in range(3):  # three of the four T4s are taken
        r = request(*pinned, request_id=f"r{i}")
        decision = decide(state, r, SchedulingSettings(node_ttl_s=1e9), 0.0)
        assert isinstance(decision, Placed) and decision.fit.node == "t4"
        state, _ = ledger.commit(state, ledger.record_for(r, decision.fit, f"a{i}", 0.0), 0.0)
    world = replace(world, ledger=state)
    for i in range(REFRESH_EVERY - 1):
        world = observe(world, pinned if i % 4 == 0 else WHOLE, 0.0)
    assert dict(world.signals.mix.prices)["Tesla T4"] == plenty  # not due yet
    world = observe(world, WHOLE, 0.0)
    short = dict(world.signals.mix.prices)["Tesla T4"]
    # About a quarter of what is asked is pinned to T4: against half the free devices at first
    # (a price near 0.5), a fifth once three are taken (two and a half times that).
    assert 0.45 < plenty < 0.6 and 2.2 < short / plenty < 2.8
    flexible = policy_named("fragmentation").bind(world.signals, WHOLE)
    assert isinstance(flexible, FragmentationAware) and dict(flexible.prices) == dict(
        world.signals.mix.prices
    )
    held = policy_named("fragmentation").bind(world.signals, pinned)
    assert isinstance(held, FragmentationAware) and held.prices == ()  # pinned: pays nothing
