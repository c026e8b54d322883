"""The allocator's core state as a whole: the ledger (core/state.py) and, beside it, the
signals (core/signals.py). The transitions that touch both live here and orchestrate
themselves (asking to place observes the request, then decides; a node leaving forgets its
heat; a restored allocation teaches the mix its shape), so the shell only does I/O. The
ledger's own transitions (commit, renew, release, expiry) are in core/ledger.py and return
(state, events)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from services.allocator.core import fragmentation, heat, ledger, waiting
from services.allocator.core.placement import Decision, FitMemo, SchedulingSettings, Wait, decide
from services.allocator.core.signals import NO_SIGNALS, Signals
from services.allocator.core.state import ClusterState
from shared.schemas.inventory import NodeInventory
from shared.schemas.placement import AllocationRecord, PlaceRequest
from shared.schemas.usage import UsageSample


@dataclass(frozen=True, slots=True)
class World:
    ledger: ClusterState = field(default_factory=ClusterState)
    signals: Signals = NO_SIGNALS
    waiting: waiting.Waiting = field(default_factory=waiting.Waiting)
    """Requests told to wait that have not been placed since (core/waiting.py)."""


def asked(
    world: World,
    request: PlaceRequest,
    settings: SchedulingSettings,
    now: float,
    memo: FitMemo | None = None,
) -> tuple[World, Decision]:
    """A request to place: it counts into the mix whatever the decision (one that waits says
    what the cluster is asked for too), then the decision; a request told to wait is
    remembered as waiting until it is placed or refused."""
    signals = fragmentation.observe_request(
        world.signals,
        world.ledger,
        request.containers,
        now,
        (request.cpu_milli, request.memory_mib),
    )
    decision = decide(world.ledger, request, settings, now, memo, signals=signals)
    waiters = waiting.current(world.waiting, now)
    if isinstance(decision, Wait):
        waiters = waiting.waited(waiters, request, decision.reason, now)
    else:
        waiters = waiting.settled(waiters, request.request_id)
    return replace(world, signals=signals, waiting=waiters), decision


def restored(world: World, record: AllocationRecord, now: float) -> World:
    """An allocation read back after a restart: in the ledger, and its shape in the mix."""
    state = ledger.restore(world.ledger, record, now)
    shape = fragmentation.shape_of_record(record)
    signals = fragmentation.observe_request(
        world.signals, state, shape, record.created_at, (record.cpu_milli, record.memory_mib)
    )
    return replace(world, ledger=state, signals=signals)


def node_seen(world: World, inventory: NodeInventory, now: float) -> World:
    return replace(world, ledger=ledger.observe_inventory(world.ledger, inventory, now))


def node_left(world: World, node: str) -> World:
    """The node's agent left on purpose: the node and its devices' readings go."""
    record = world.ledger.nodes.get(node)
    signals = heat.forget_heat(world.signals, node, record.devices if record else ())
    state = ledger.forget_node(world.ledger, node)
    if state is world.ledger and signals is world.signals:
        return world  # unchanged: the same value
    return replace(world, ledger=state, signals=signals)


def usage_seen(world: World, sample: UsageSample, now: float) -> World:
    signals = heat.observe_usage(world.signals, sample, now)
    return world if signals is world.signals else replace(world, signals=signals)
