"""The placement decision: validate a request, try every eligible node, pick the best fit."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import msgspec
from immutables import Map

from services.allocator.core.fit import (
    DeviceOrder,
    NodeFit,
    Reason,
    acceptable,
    fit_node,
    refusal_by_offer,
)
from services.allocator.core.policies import Policy, Takes, policy_named
from services.allocator.core.scoreindex import Best, Judged, Pricing, ScoreIndex
from services.allocator.core.signals import NO_SIGNALS, Signals
from services.allocator.core.state import (
    NO_HEAT,
    NO_NODE_USAGE,
    ClusterState,
    DeviceUsage,
    HostAmounts,
    LogMark,
    NodeRecord,
    offer_key,
)
from shared.errors import InvalidRequest
from shared.schemas.placement import MAX_LEASE_TTL_S, ContainerRequest, PlaceRequest
from shared.servicesettings import NODE_TTL_S

MAX_DEVICES_PER_CONTAINER = 64


@dataclass(frozen=True, slots=True)
class SchedulingSettings:
    node_policy: str = "binpack"
    gpu_policy: str = "spread"
    node_ttl_s: float = NODE_TTL_S
    """A node not heard from for this long takes no new placements (the allocator's default)."""

    def __post_init__(self) -> None:
        policy_named(self.node_policy, field="node policy")
        policy_named(self.gpu_policy, field="gpu policy")


@dataclass(frozen=True, slots=True)
class Placed:
    fit: NodeFit


@dataclass(frozen=True, slots=True)
class Wait:
    """Fits an empty cluster, not the current one: retry after a release."""

    reason: str


@dataclass(frozen=True, slots=True)
class Never:
    """No node known now could ever take it, even with nothing allocated."""

    reason: str


Decision = Placed | Wait | Never


def validate_container(request: ContainerRequest, position: int) -> None:
    where = f"container {request.name or position}"
    if not 0 <= request.count <= MAX_DEVICES_PER_CONTAINER:
        raise InvalidRequest(
            f"{where}: device count {request.count} must be 0..{MAX_DEVICES_PER_CONTAINER}"
        )
    if request.memory_mib is not None and request.memory_percent is not None:
        raise InvalidRequest(f"{where}: give memory in MiB or in percent, not both")
    if request.memory_mib is not None and request.memory_mib < 1:
        raise InvalidRequest(f"{where}: memory {request.memory_mib} MiB must be at least 1")
    if request.memory_percent is not None and not 1 <= request.memory_percent <= 100:
        raise InvalidRequest(f"{where}: memory percent {request.memory_percent} must be 1..100")
    if not 0 <= request.cores <= 100:
        raise InvalidRequest(f"{where}: cores {request.cores} must be 0..100")


def validate(request: PlaceRequest) -> None:
    if not request.request_id:
        raise InvalidRequest("request_id must not be empty")
    if not request.containers or all(c.count == 0 for c in request.containers):
        raise InvalidRequest("the request asks for no device")
    for position, container in enumerate(request.containers):
        validate_container(container, position)
    if request.node_policy is not None:
        policy_named(request.node_policy, field="node policy")
    if request.gpu_policy is not None:
        policy_named(request.gpu_policy, field="gpu policy")
    ttl = request.lease_ttl_s
    if ttl is not None and not (math.isfinite(ttl) and 0 < ttl <= MAX_LEASE_TTL_S):
        raise InvalidRequest(f"lease_ttl_s {ttl} must be finite, positive, <= {MAX_LEASE_TTL_S}")
    if request.priority not in (0, 1):
        raise InvalidRequest(f"priority {request.priority} must be 0 (high) or 1 (low)")


def policies_for(
    signals: Signals, request: PlaceRequest, settings: SchedulingSettings
) -> tuple[Policy, Policy]:
    """The node policy (prepared with the signals and the request) and the GPU policy."""
    node_policy = policy_named(request.node_policy or settings.node_policy)
    gpu_name = request.gpu_policy
    if gpu_name is None:
        gpu_name = node_policy.name if node_policy.own_device_order else settings.gpu_policy
    host = (request.cpu_milli, request.memory_mib)
    return node_policy.bind(signals, request.containers, host), policy_named(gpu_name)


BOUNDED_FITS = 16
"""With a load-ordered policy, a search stops after this many nodes that fit: in load order
they are the best candidates, and the cost no longer grows with the cluster."""


# ---- the stages: every view of a placement (decide, the extender's filter and prioritize, the
# NATS API) is one loop over candidate nodes that gives each a verdict. ----


@dataclass(slots=True)
class Verdicts:
    """What one evaluation found, node by node, in kube-scheduler's three outcomes: ``fits``
    (Success: the node and the node policy's score, higher is better); every other node is
    in ``failed`` (why not now, in the order visited) and is either busy (Unschedulable: it
    would fit the node empty) or in ``never`` too (UnschedulableAndUnresolvable: why not even
    empty). Plain collections, not an object per node: the loop runs for every node of every
    pod."""

    fits: dict[str, float]
    failed: dict[str, Reason]
    never: dict[str, Reason]
    unknown: list[str]
    """Names without a live inventory (no node agent heard from within the node TTL)."""
    best: tuple[str, float, NodeFit] | None = None
    """The fit with the highest score; ties to the lexically smallest node (reproducible)."""


def evaluate(
    names: Iterable[str],
    state: ClusterState,
    containers: tuple[ContainerRequest, ...],
    node_policy: Policy,
    gpu_policy: Policy,
    memo: FitMemo,
    *,
    now: float,
    ttl: float,
    signals: Signals = NO_SIGNALS,
    enough: int | None = None,
    scored: bool = True,
) -> Verdicts:
    """The verdict of each named node (stopping after ``enough`` fits when given; every fit
    scores 0 unless ``scored``: a filter needs no scores). One lookup per node the memo knows
    unchanged; whether a failing node could ever fit is remembered per node's devices."""
    order = gpu_policy.device_order()
    empty = memo.empty(containers, order)
    nodes_get, usage_get, heat_get = state.nodes.get, state.usage.get, signals.heat.get
    room_of = state.room
    generation_get = state.generation.get
    heated_nodes = signals.generation  # empty until some device reports heat
    heat_generation_get = heated_nodes.get
    out = Verdicts({}, {}, {}, [])
    fits, failed, never, unknown = out.fits, out.failed, out.never, out.unknown
    limit = enough if enough is not None else -1  # -1: no bound
    found = 0
    needs = [acceptable(c) for c in containers if c.count]
    # A node whose devices offer none of what a container takes (another kind, or sharing)
    # is refused, as never fitting, without a look at its devices or the memo.
    single = needs[0] if len(needs) == 1 else None
    refusals: dict[frozenset[tuple[str, bool]], Reason] = {}  # few distinct offers per cluster
    best_name, best_score, best_fit = "", -math.inf, None
    # Two copies of one loop, scored and not, so that the per-node path has no extra branch:
    # kube-scheduler runs it for every node of every pod.
    if scored:
        # Prices are added to the remembered score, never remembered with it (policies.py).
        priced, takes, charge = bool(node_policy.prices), node_policy.takes, node_policy.charge
        judge = memo.judge(containers, order, node_policy)
        hits = memo.answers(("judge", containers, order, node_policy))
        for name in names:
            if found == limit:
                break
            record = nodes_get(name)
            if record is None or now - record.last_seen > ttl:
                unknown.append(name)
                continue
            if (single is not None and record.offered.isdisjoint(single)) or (
                single is None and any(record.offered.isdisjoint(n) for n in needs)
            ):
                refusal = refusals.get(record.offered)
                if refusal is None:
                    refusal = refusals[record.offered] = _refused(record, containers)
                failed[name] = never[name] = refusal
                continue
            # Both counters come from one: the larger moves on whenever either does.
            generation = generation_get(name, 0)
            if heated_nodes:
                heat_generation = heat_generation_get(name, 0)
                if heat_generation > generation:
                    generation = heat_generation
            hit = hits.get(name)  # the memo's hit path, inline: this loop is the hot one
            if hit is not None and hit[0] == generation:
                answer: Judged = hit[1]  # type: ignore[assignment]
            else:
                answer = judge(
                    record,
                    usage_get(name, NO_NODE_USAGE),
                    heat_get(name, NO_HEAT),
                    generation,
                    room_of(name),
                )
            if isinstance(answer, Reason):
                failed[name] = answer
                never_fit = empty(record, generation)
                if isinstance(never_fit, Reason):
                    never[name] = never_fit
                continue
            score = answer[0]
            if priced:
                score += charge(takes(record.devices, answer[1]))
            fits[name] = score
            found += 1
            if score > best_score or (score == best_score and name < best_name):
                best_name, best_score, best_fit = name, score, answer[1]
    else:
        fit = memo.fit(containers, order)
        hits = memo.answers(("fit", containers, order))
        for name in names:
            if found == limit:
                break
            record = nodes_get(name)
            if record is None or now - record.last_seen > ttl:
                unknown.append(name)
                continue
            if (single is not None and record.offered.isdisjoint(single)) or (
                single is None and any(record.offered.isdisjoint(n) for n in needs)
            ):
                refusal = refusals.get(record.offered)
                if refusal is None:
                    refusal = refusals[record.offered] = _refused(record, containers)
                failed[name] = never[name] = refusal
                continue
            generation = generation_get(name, 0)
            if heated_nodes:
                heat_generation = heat_generation_get(name, 0)
                if heat_generation > generation:
                    generation = heat_generation
            hit = hits.get(name)
            if hit is not None and hit[0] == generation:
                result: NodeFit | Reason = hit[1]  # type: ignore[assignment]
            else:
                result = fit(
                    record, usage_get(name, NO_NODE_USAGE), heat_get(name, NO_HEAT), generation
                )
            if isinstance(result, Reason):
                failed[name] = result
                never_fit = empty(record, generation)
                if isinstance(never_fit, Reason):
                    never[name] = never_fit
                continue
            fits[name] = 0.0
            found += 1
            if best_fit is None:
                best_name, best_score, best_fit = name, 0.0, result
    best = (best_name, best_score, best_fit) if best_fit is not None else None
    out.best = best
    return out


def indexed_best(
    names: frozenset[str] | None,
    state: ClusterState,
    containers: tuple[ContainerRequest, ...],
    node_policy: Policy,
    gpu_policy: Policy,
    memo: FitMemo,
    *,
    now: float,
    ttl: float,
    signals: Signals = NO_SIGNALS,
) -> Best | None:
    """The fit ``evaluate`` would find best among the names (None: every node), from the
    memo's score index for this shape and policy: only the nodes touched since it last looked,
    or never judged, are judged now (each as the evaluation loop would judge it). None when
    nothing fits."""
    order = gpu_policy.device_order()
    judge = memo.judge(containers, order, node_policy)
    index = memo.index(("judge", containers, order, node_policy))
    index.catch_up(
        (state.changes.mark, signals.changes.mark),
        lambda marks: touched_since(state, signals, marks),
    )
    nodes_get, usage_get, heat_get = state.nodes.get, state.usage.get, signals.heat.get
    generation_get, heat_generation_get = state.generation.get, signals.generation.get
    needs = [acceptable(c) for c in containers if c.count]
    refusals: dict[frozenset[tuple[str, bool]], Reason] = {}

    def judged(name: str) -> Judged | None:
        record = nodes_get(name)
        if record is None:
            return None
        if any(record.offered.isdisjoint(n) for n in needs):
            refusal = refusals.get(record.offered)
            if refusal is None:
                refusal = refusals[record.offered] = _refused(record, containers)
            return refusal
        generation = max(generation_get(name, 0), heat_generation_get(name, 0))
        return judge(
            record,
            usage_get(name, NO_NODE_USAGE),
            heat_get(name, NO_HEAT),
            generation,
            state.room(name),
        )

    def live(name: str) -> bool:
        record = nodes_get(name)
        return record is not None and now - record.last_seen <= ttl

    def takes(name: str, fit: NodeFit) -> Takes:
        record = nodes_get(name)
        return node_policy.takes(record.devices, fit) if record is not None else ()

    charges = node_policy.charges
    pricing = Pricing(takes if charges else None, node_policy.charge)
    return index.best(names, state.nodes.keys, judged, live, pricing)


def touched_since(
    state: ClusterState, signals: Signals, marks: tuple[LogMark, LogMark]
) -> list[str] | None:
    """The nodes the ledger or the signals touched since the marks, or None: cannot say."""
    ledger = state.changes.since(marks[0])
    heat = signals.changes.since(marks[1]) if ledger is not None else None
    if ledger is None or heat is None:
        return None
    return ledger + heat


LOAD_WALK = 4
"""A search among k candidates walks at most this many index entries per candidate before it
sorts the candidates it has not met yet: the best of them are usually met early."""


def index_keys(containers: tuple[ContainerRequest, ...]) -> tuple[str, ...] | None:
    """Which kind indexes a search walks: its one kind's, in its one sharing or both, or
    None: every node."""
    asking = [c for c in containers if c.count]
    kinds = {c.kind for c in asking}
    if len(kinds) != 1:
        return None
    (kind,) = kinds
    modes = {c.device_mode for c in asking}
    if len(modes) == 1 and "" not in modes:
        return (offer_key(kind, modes == {"hami-core"}),)
    return offer_key(kind, True), offer_key(kind, False)


def walk(
    state: ClusterState, keys: tuple[str, ...] | None, most_loaded_first: bool
) -> Iterator[str]:
    """The nodes a search looks at, in load order."""
    return state.walk(keys, most_loaded_first=most_loaded_first)


def load_ordered(
    state: ClusterState,
    names: Iterable[str],
    most_loaded_first: bool,
    keys: tuple[str, ...] | None = None,
) -> Iterator[str]:
    """The names, each once, in the order the load index walks them (bucket, then name); names
    the index does not hold last, in the order given. Lazy, and O(k log k) in the names at
    most, whatever the cluster's size: the index is walked while the first candidates are met
    there, then the rest are sorted."""
    wanted = dict.fromkeys(names)
    budget = LOAD_WALK * len(wanted)
    for name in walk(state, keys, most_loaded_first):
        if not wanted or budget == 0:
            break
        budget -= 1
        if name in wanted:
            del wanted[name]
            yield name
    # Every index entry before here was walked: the rest come after, in the same order.
    bucket_of = state.bucket_of
    direction = -1 if most_loaded_first else 1
    indexed: list[tuple[int, str]] = []
    unindexed: list[str] = []
    for name in wanted:
        bucket = bucket_of(name)
        if bucket is None:
            unindexed.append(name)
        else:
            indexed.append((direction * bucket, name))
    indexed.sort()
    yield from (name for _, name in indexed)
    yield from unindexed


def search(
    state: ClusterState,
    request: PlaceRequest,
    settings: SchedulingSettings,
    now: float,
    memo: FitMemo,
    *,
    signals: Signals = NO_SIGNALS,
) -> Verdicts:
    """The verdicts a decision is made from. A load-ordered policy (binpack, spread) looks at
    nodes in load order and stops after BOUNDED_FITS fits, among every node or among the
    candidates alike: its best is among the first fits in that order, so the cost follows
    what is looked at, not the cluster. When nothing fits, every node (or candidate) has a
    verdict."""
    validate(request)
    node_policy, gpu_policy = policies_for(signals, request, settings)
    loaded_first = node_policy.most_loaded_first
    candidates = request.candidate_nodes
    if loaded_first is None and memo.indexes:
        # A policy that scores every node: its score index knows the best without asking
        # each node again. Only a refusal (nothing fits) needs every verdict and its reason.
        best = indexed_best(
            None if candidates is None else frozenset(candidates),
            state,
            request.containers,
            node_policy,
            gpu_policy,
            memo,
            now=now,
            ttl=settings.node_ttl_s,
            signals=signals,
        )
        if best is not None:
            return Verdicts({best[0]: best[1]}, {}, {}, [], best)
    names: Iterable[str]
    keys = index_keys(request.containers)
    if loaded_first is not None and candidates is None:
        names = walk(state, keys, loaded_first)
    elif candidates is None:
        names = state.nodes.keys()
    elif loaded_first is not None and len(candidates) > BOUNDED_FITS:
        names = load_ordered(state, candidates, loaded_first, keys)
    else:
        names = dict.fromkeys(candidates)  # each once, in the order given
    return evaluate(
        names,
        state,
        request.containers,
        node_policy,
        gpu_policy,
        memo,
        now=now,
        ttl=settings.node_ttl_s,
        signals=signals,
        enough=BOUNDED_FITS if loaded_first is not None else None,
    )


def _refused(record: NodeRecord, containers: tuple[ContainerRequest, ...]) -> Reason:
    refused = refusal_by_offer(record.offered, containers)
    assert refused is not None  # the caller saw a container no device offers to
    return refused


def summarize(reasons: Iterable[Reason]) -> str:
    counts: dict[str, int] = {}
    for reason in reasons:
        counts[reason.text] = counts.get(reason.text, 0) + 1
    return "; ".join(f"{n} node(s): {r}" for r, n in sorted(counts.items(), key=lambda kv: -kv[1]))


def decide(
    state: ClusterState,
    request: PlaceRequest,
    settings: SchedulingSettings,
    now: float,
    memo: FitMemo | None = None,
    *,
    signals: Signals = NO_SIGNALS,
) -> Decision:
    """Where the request goes now, or why it waits or can never be placed. ``memo`` (kept by
    the caller across decisions) changes nothing but the cost."""
    verdicts = search(
        state, request, settings, now, memo or FitMemo(indexes=False), signals=signals
    )
    best = verdicts.best
    if best is not None:
        return Placed(best[2])
    # Nothing fitted, so a bounded search never stopped early: every live node has a verdict.
    if not verdicts.failed:  # no live node among the names
        keys = index_keys(request.containers)
        if (
            request.candidate_nodes is None
            and keys is not None
            and state.nodes
            and not verdicts.unknown  # nodes of its kind there are, just none live
        ):
            # The walk of its kind's index (in its sharing) met no node at all: say which.
            (kind,) = {c.kind for c in request.containers if c.count}
            has_kind = any(
                k in state.kind_index for k in (offer_key(kind, True), offer_key(kind, False))
            )
            return Never(Reason("mode" if has_kind else "kind").text)
        return Never(
            Reason("no-node").text
            + (" among the candidates" if request.candidate_nodes is not None else "")
        )
    if len(verdicts.never) < len(verdicts.failed):  # some node is only busy: wait for it
        return Wait(summarize(verdicts.failed.values()))
    return Never(summarize(verdicts.never.values()))


HEAT_TIE = 1e-12
"""Per heat level of a chosen device: enough to part nodes that score equal, never more."""


def heated(score: float, fit: NodeFit, heat: Map[str, int]) -> float:
    """The policy's score, with cooler devices winning exact ties (usage feedback)."""
    if not heat:
        return score
    return score - HEAT_TIE * sum(heat.get(g.uuid, 0) for c in fit.containers for g in c)


JudgeFn = Callable[
    [NodeRecord, Map[str, DeviceUsage], Map[str, int], int, "HostAmounts | None"], Judged
]
FitFn = Callable[[NodeRecord, Map[str, DeviceUsage], Map[str, int], int], "NodeFit | Reason"]
EmptyFn = Callable[[NodeRecord, int], "NodeFit | Reason"]


class FitMemo:
    """Answers of the last few request shapes, per node, each valid while the node's generation
    (``ClusterState.generation``: bumped by the ledger whenever the node's devices, usage or
    heat change) is the one it was computed at. kube-scheduler asking about every node for
    every pod, and the allocator deciding request after request, pay one lookup per unchanged
    node."""

    def __init__(self, shapes: int = 64, *, indexes: bool = True) -> None:
        self._shapes = shapes
        self._tables: dict[object, dict[str, tuple[int, object]]] = {}
        self._indexes: dict[object, ScoreIndex] = {}
        self.indexes = indexes
        """Whether decisions of scoring policies use a score index per shape (core/
        scoreindex.py): a memo kept across decisions gains; one made for a single call
        would only pay to build it."""

    def index(self, key: object) -> ScoreIndex:
        """The score index of one judge table (kept for as many shapes as the tables)."""
        index = self._indexes.pop(key, None)
        if index is None:
            index = ScoreIndex()
        self._indexes[key] = index  # most recently used last
        if len(self._indexes) > self._shapes:
            del self._indexes[next(iter(self._indexes))]
        return index

    def answers(self, key: object) -> dict[str, tuple[int, object]]:
        """One table: node -> (generation, answer). The evaluation loop reads it inline."""
        table = self._tables.pop(key, None)
        if table is None:
            table = {}
        self._tables[key] = table  # most recently used last
        if len(self._tables) > self._shapes:
            del self._tables[next(iter(self._tables))]
        return table

    def fit(self, containers: tuple[ContainerRequest, ...], order: DeviceOrder) -> FitFn:
        """The node's fit, or why the request does not fit there."""
        table = self.answers(("fit", containers, order))

        def fit(
            record: NodeRecord, usage: Map[str, DeviceUsage], heat: Map[str, int], generation: int
        ) -> NodeFit | Reason:
            hit = table.get(record.name)
            if hit is not None and hit[0] == generation:
                return hit[1]  # type: ignore[return-value]
            answer = fit_node(record.name, record.devices, usage, containers, order, heat)
            table[record.name] = (generation, answer)
            return answer

        return fit

    def judge(
        self, containers: tuple[ContainerRequest, ...], order: DeviceOrder, policy: Policy
    ) -> JudgeFn:
        """The node's score and fit (keyed also by the node policy, which for the fragmentation
        policy includes the mix it measures against), or why it does not fit. Cooler devices
        win exact ties (usage feedback)."""
        fit = self.fit(containers, order)
        table = self.answers(("judge", containers, order, policy))

        def judge(
            record: NodeRecord,
            usage: Map[str, DeviceUsage],
            heat: Map[str, int],
            generation: int,
            room: HostAmounts | None,
        ) -> Judged:
            hit = table.get(record.name)
            if hit is not None and hit[0] == generation:
                return hit[1]  # type: ignore[return-value]
            result = fit(record, usage, heat, generation)
            answer: Judged = (
                result
                if isinstance(result, Reason)
                else (
                    heated(
                        policy.node_score(
                            record.devices, usage, result, (record.name, generation), room
                        ),
                        result,
                        heat,
                    ),
                    result,
                )
            )
            table[record.name] = (generation, answer)
            return answer

        return judge

    def empty(self, containers: tuple[ContainerRequest, ...], order: DeviceOrder) -> EmptyFn:
        """The fit on the node with nothing allocated (recomputed when the generation moves,
        which is more often than its devices change: cheap, and one rule for every cache)."""
        table = self.answers(("empty", containers, order))

        def empty(record: NodeRecord, generation: int) -> NodeFit | Reason:
            hit = table.get(record.name)
            if hit is not None and hit[0] == generation:
                return hit[1]  # type: ignore[return-value]
            answer = fit_node(record.name, record.devices, NO_NODE_USAGE, containers, order)
            table[record.name] = (generation, answer)
            return answer

        return empty


def node_scores(
    state: ClusterState,
    request: PlaceRequest,
    settings: SchedulingSettings,
    now: float,
    memo: FitMemo | None = None,
    *,
    signals: Signals = NO_SIGNALS,
) -> dict[str, float]:
    """The node policy's score for every candidate node the request fits now (higher is better)."""
    validate(request)
    node_policy, gpu_policy = policies_for(signals, request, settings)
    names = state.nodes.keys() if request.candidate_nodes is None else request.candidate_nodes
    verdicts = evaluate(
        names,
        state,
        request.containers,
        node_policy,
        gpu_policy,
        memo or FitMemo(),
        now=now,
        ttl=settings.node_ttl_s,
        signals=signals,
    )
    return verdicts.fits


def filter_nodes(
    state: ClusterState,
    request: PlaceRequest,
    settings: SchedulingSettings,
    now: float,
    names: list[str],
    memo: FitMemo | None = None,
    *,
    signals: Signals = NO_SIGNALS,
) -> tuple[list[str], dict[str, Reason], dict[str, Reason]]:
    """For kube-scheduler's filter: the named nodes the request fits now; the ones it does not
    fit now (with why); and the ones it could never fit, even empty (with why not now)."""
    validate(request)
    node_policy, gpu_policy = policies_for(signals, request, settings)
    verdicts = evaluate(
        names,
        state,
        request.containers,
        node_policy,
        gpu_policy,
        memo or FitMemo(),
        now=now,
        ttl=settings.node_ttl_s,
        signals=signals,
        scored=False,
    )
    return (list(verdicts.fits), *_refusals(verdicts))


def _refusals(verdicts: Verdicts) -> tuple[dict[str, Reason], dict[str, Reason]]:
    """kube-scheduler's two kinds of refusal: busy now, and never (not even empty)."""
    busy = {n: r for n, r in verdicts.failed.items() if n not in verdicts.never}
    never = {name: Reason("no-inventory") for name in verdicts.unknown}
    never.update((n, verdicts.failed[n]) for n in verdicts.never)
    return busy, never


def filter_best(
    state: ClusterState,
    request: PlaceRequest,
    settings: SchedulingSettings,
    now: float,
    names: list[str],
    memo: FitMemo | None = None,
    *,
    signals: Signals = NO_SIGNALS,
) -> tuple[list[str], dict[str, Reason], dict[str, Reason]]:
    """For a filter that answers one node: the node ``decide`` would pick among the named
    ones (and why the others looked at do not fit), or, when none fits, why each does not,
    as ``filter_nodes`` says it. As cheap as a decision: a load-ordered policy stops after
    its first fits instead of judging every named node."""
    verdicts = search(
        state,
        msgspec.structs.replace(request, candidate_nodes=tuple(names)),
        settings,
        now,
        memo or FitMemo(indexes=False),
        signals=signals,
    )
    passed = [verdicts.best[0]] if verdicts.best is not None else []
    return (passed, *_refusals(verdicts))
