"""The placement decision: validate a request, try every eligible node, pick the best fit."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from immutables import Map

from services.allocator.core.fit import DeviceOrder, NodeFit, fit_node
from services.allocator.core.policies import Policy, policy_named
from services.allocator.core.state import (
    NO_HEAT,
    NO_NODE_USAGE,
    ClusterState,
    DeviceUsage,
    NodeRecord,
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
    state: ClusterState, request: PlaceRequest, settings: SchedulingSettings
) -> tuple[Policy, Policy]:
    """The node policy (bound to the state and request) and the GPU policy for a request."""
    node_policy = policy_named(request.node_policy or settings.node_policy)
    gpu_name = request.gpu_policy
    if gpu_name is None:
        gpu_name = node_policy.name if node_policy.own_device_order else settings.gpu_policy
    return node_policy.bind(state, request.containers), policy_named(gpu_name)


def live_nodes(state: ClusterState, now: float, ttl: float) -> list[NodeRecord]:
    return [record for record in state.nodes.values() if now - record.last_seen <= ttl]


def live_among(
    state: ClusterState, names: Iterable[str], now: float, ttl: float
) -> list[NodeRecord]:
    """The live nodes among ``names``, in the order given (each once): O(candidates), never a
    walk over the cluster."""
    out = []
    for name in dict.fromkeys(names):
        record = state.nodes.get(name)
        if record is not None and now - record.last_seen <= ttl:
            out.append(record)
    return out


BOUNDED_FITS = 16
"""With a load-ordered policy, a search stops after this many nodes that fit: in load order
they are the best candidates, and the cost no longer grows with the cluster."""


def best_fit(
    nodes: Iterable[NodeRecord],
    state: ClusterState,
    containers: tuple[ContainerRequest, ...],
    node_policy: Policy,
    gpu_policy: Policy,
    memo: FitMemo,
    *,
    empty: bool = False,
    enough: int | None = None,
) -> tuple[NodeFit | None, dict[str, str]]:
    """The best-scoring fit over the nodes (stopping after ``enough`` fits when given), and each
    failed node's reason; ``empty``: as if nothing were allocated. One score lookup per node
    the memo knows unchanged; the fit itself is fetched for the winner and for failures'
    reasons only."""
    order = gpu_policy.device_order()
    fit_of = memo(containers, order)
    score_of = memo.scorer(containers, order, node_policy)
    usage_get, heat_get = state.usage.get, state.heat.get
    best: tuple[float, str, NodeRecord, Map[str, DeviceUsage], Map[str, int]] | None = None
    reasons: dict[str, str] = {}
    fits = 0
    for record in nodes:
        if enough is not None and fits >= enough:
            break
        name = record.name
        usage = NO_NODE_USAGE if empty else usage_get(name, NO_NODE_USAGE)
        heat = heat_get(name, NO_HEAT)
        score = score_of(record, usage, heat)
        if score is None:
            reason = fit_of(record, usage, heat)
            assert isinstance(reason, str)  # no score: it does not fit
            reasons[name] = reason
            continue
        fits += 1
        # Ties go to the lexically smallest node name so that decisions are reproducible.
        if best is None or score > best[0] or (score == best[0] and name < best[1]):
            best = (score, name, record, usage, heat)
    if best is None:
        return None, reasons
    fit = fit_of(best[2], best[3], best[4])
    assert not isinstance(fit, str)
    return fit, reasons


def _by_load(
    state: ClusterState, now: float, ttl: float, most_loaded_first: bool
) -> Iterator[NodeRecord]:
    for name in state.index.ordered(most_loaded_first=most_loaded_first):
        record = state.nodes.get(name)
        if record is not None and now - record.last_seen <= ttl:
            yield record


def summarize(reasons: dict[str, str]) -> str:
    counts: dict[str, int] = {}
    for reason in reasons.values():
        counts[reason] = counts.get(reason, 0) + 1
    return "; ".join(f"{n} node(s): {r}" for r, n in sorted(counts.items(), key=lambda kv: -kv[1]))


def decide(
    state: ClusterState,
    request: PlaceRequest,
    settings: SchedulingSettings,
    now: float,
    memo: FitMemo | None = None,
) -> Decision:
    """Where the request goes now, or why it waits or can never be placed. ``memo`` (kept by
    the caller across decisions) changes nothing but the cost."""
    validate(request)
    memo = memo or FitMemo()
    node_policy, gpu_policy = policies_for(state, request, settings)
    if request.candidate_nodes is None and node_policy.most_loaded_first is not None:
        fit, reasons = best_fit(
            _by_load(state, now, settings.node_ttl_s, node_policy.most_loaded_first),
            state,
            request.containers,
            node_policy,
            gpu_policy,
            memo,
            enough=BOUNDED_FITS,
        )
        if fit is not None:
            return Placed(fit)
        # Nothing fitted, so the bounded search never stopped early: every live node was
        # tried and has its reason. No second pass.
        nodes = [state.nodes[name] for name in reasons]
    else:
        nodes = (
            live_nodes(state, now, settings.node_ttl_s)
            if request.candidate_nodes is None
            else live_among(state, request.candidate_nodes, now, settings.node_ttl_s)
        )
        fit, reasons = best_fit(nodes, state, request.containers, node_policy, gpu_policy, memo)
        if fit is not None:
            return Placed(fit)
    if not nodes:
        return Never(
            "no live node with devices"
            + (" among the candidates" if request.candidate_nodes is not None else "")
        )
    # A memo of its own: empty answers must not displace the remembered real ones.
    empty_fit, empty_reasons = best_fit(
        nodes, state, request.containers, node_policy, gpu_policy, FitMemo(), empty=True
    )
    if empty_fit is None:
        return Never(summarize(empty_reasons))
    return Wait(summarize(reasons))


HEAT_TIE = 1e-12
"""Per heat level of a chosen device: enough to part nodes that score equal, never more."""


def heated(score: float, fit: NodeFit, heat: Map[str, int]) -> float:
    """The policy's score, with cooler devices winning exact ties (usage feedback)."""
    if not heat:
        return score
    return score - HEAT_TIE * sum(heat.get(g.uuid, 0) for c in fit.containers for g in c)


NodeFitFn = Callable[[NodeRecord, Map[str, DeviceUsage], Map[str, int]], "NodeFit | str"]
"""Fit one node (its record, usage and heat) for a request bound in advance."""
NodeScoreFn = Callable[[NodeRecord, Map[str, DeviceUsage], Map[str, int]], "float | None"]
"""The node policy's score for one node (None: the request does not fit there)."""

_MISS = object()


class _PerNode:
    """Answers per node, each valid while the node's devices, usage and heat are the objects it
    was computed for (the state is immutable: the same objects mean an unchanged node)."""

    __slots__ = ("_answers",)

    def __init__(self) -> None:
        self._answers: dict[str, tuple[object, object, object, object]] = {}

    def get(self, record: NodeRecord, usage: object, heat: object) -> object:
        hit = self._answers.get(record.name)
        if hit is not None and hit[0] is usage and hit[1] is record.devices and hit[2] is heat:
            return hit[3]
        return _MISS

    def put(self, record: NodeRecord, usage: object, heat: object, answer: object) -> None:
        self._answers[record.name] = (usage, record.devices, heat, answer)


class FitMemo:
    """Fits and node scores of the last few request shapes, per node. kube-scheduler asking
    about every node for every pod, and the allocator deciding request after request, pay one
    lookup per unchanged node."""

    def __init__(self, shapes: int = 64) -> None:
        self._shapes = shapes
        self._tables: dict[object, _PerNode] = {}

    def _table(self, key: object) -> _PerNode:
        table = self._tables.pop(key, None) or _PerNode()
        self._tables[key] = table  # most recently used last
        if len(self._tables) > self._shapes:
            del self._tables[next(iter(self._tables))]
        return table

    def __call__(self, containers: tuple[ContainerRequest, ...], order: DeviceOrder) -> NodeFitFn:
        table = self._table(("fit", containers, order))

        def fit(
            record: NodeRecord, usage: Map[str, DeviceUsage], heat: Map[str, int]
        ) -> NodeFit | str:
            answer = table.get(record, usage, heat)
            if answer is _MISS:
                answer = fit_node(record.name, record.devices, usage, containers, order, heat)
                table.put(record, usage, heat, answer)
            return answer  # type: ignore[return-value]

        return fit

    def scorer(
        self, containers: tuple[ContainerRequest, ...], order: DeviceOrder, policy: Policy
    ) -> NodeScoreFn:
        """Scores remembered the same way (keyed also by the node policy, which for the
        fragmentation policy includes the mix it measures against). Cooler devices win exact
        ties (usage feedback)."""
        fit = self(containers, order)
        table = self._table(("score", containers, order, policy))

        def score(
            record: NodeRecord, usage: Map[str, DeviceUsage], heat: Map[str, int]
        ) -> float | None:
            answer = table.get(record, usage, heat)
            if answer is _MISS:
                result = fit(record, usage, heat)
                answer = (
                    None
                    if isinstance(result, str)
                    else heated(policy.node_score(record.devices, usage, result), result, heat)
                )
                table.put(record, usage, heat, answer)
            return answer  # type: ignore[return-value]

        return score


def node_scores(
    state: ClusterState,
    request: PlaceRequest,
    settings: SchedulingSettings,
    now: float,
    memo: FitMemo | None = None,
) -> dict[str, float]:
    """The node policy's score for every candidate node the request fits now (higher is better)."""
    validate(request)
    node_policy, gpu_policy = policies_for(state, request, settings)
    order = gpu_policy.device_order()
    score = (memo or FitMemo()).scorer(request.containers, order, node_policy)
    names = state.nodes.keys() if request.candidate_nodes is None else request.candidate_nodes
    # Called for every pod with every node: the lookups are bound once, out of the loop.
    nodes_get, usage_get, heat_get = state.nodes.get, state.usage.get, state.heat.get
    ttl = settings.node_ttl_s
    scores = {}
    for name in names:
        record = nodes_get(name)
        if record is None or now - record.last_seen > ttl:
            continue
        value = score(record, usage_get(name, NO_NODE_USAGE), heat_get(name, NO_HEAT))
        if value is not None:
            scores[name] = value
    return scores


def filter_nodes(
    state: ClusterState,
    request: PlaceRequest,
    settings: SchedulingSettings,
    now: float,
    names: list[str],
    memo: FitMemo | None = None,
) -> tuple[list[str], dict[str, str], dict[str, str]]:
    """For kube-scheduler's filter: the named nodes the request fits now; the ones it does not
    fit now (with why); and the ones it could never fit, even empty (with why)."""
    validate(request)
    order = policies_for(state, request, settings)[1].device_order()
    fit = (memo or FitMemo())(request.containers, order)
    passed: list[str] = []
    failed: dict[str, str] = {}
    never: dict[str, str] = {}
    nodes_get, usage_get, heat_get = state.nodes.get, state.usage.get, state.heat.get
    ttl = settings.node_ttl_s
    for name in names:
        record = nodes_get(name)
        if record is None or now - record.last_seen > ttl:
            never[name] = "no HAMi device inventory from this node (node agent not running?)"
            continue
        result = fit(record, usage_get(name, NO_NODE_USAGE), heat_get(name, NO_HEAT))
        if not isinstance(result, str):
            passed.append(name)
            continue
        empty = fit_node(name, record.devices, Map(), request.containers, order)
        (never if isinstance(empty, str) else failed)[name] = result
    return passed, failed, never
