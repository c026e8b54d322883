"""The workload mix the fragmentation-aware policy measures against: request shapes seen
recently with decaying weights, and the snapshot the measure uses. Plain values, a leaf of the
core (the ledger carries the mix; services/allocator/core/fragmentation.py measures with it)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace

import msgspec
from immutables import Map

from services.allocator.core.state import NO_HOST, HostAmounts
from shared.schemas.placement import ContainerRequest

Shape = tuple[ContainerRequest, ...]
MixKey = tuple[Shape, HostAmounts]
"""A request as the mix counts it: its devices and the host CPU and memory beside them."""

HALF_LIFE_S = 3600.0
"""The mix forgets: a request seen an hour ago weighs half as much as one seen now."""
MIX_SHAPES = 32
"""The most weighty shapes the measure is taken against (cost grows with it)."""
REFRESH_EVERY = 64
"""Requests observed between two snapshots of the mix (a snapshot keeps its memo)."""
MAX_TRACKED = 1024
"""Distinct shapes remembered at most; beyond it the lightest quarter is forgotten."""
TIE = 0.04
"""Fragmentation changes closer than this (4% of a device) count as ties, and a device
request's ties go to the first node in a fixed order (policies.py): the measure's finer
differences are noise against a mix learnt online, and first fit among near-equals is what
made the published FGD good (docs/benchmarks.md: a thousandth of a device before; chosen on
the design mixes, confirmed on the evaluation ones)."""


def shape_of(containers: Shape) -> Shape:
    """The request without what does not change where it fits (container names)."""
    return tuple(msgspec.structs.replace(c, name="") for c in containers if c.count)


@dataclass(frozen=True, slots=True, eq=False)
class MixSnapshot:
    """The mix as the measure uses it: normalised weights of the top shapes, the share of
    requested capacity that is pinned to each device model, and a memo of node fragmentation
    per node generation."""

    shapes: tuple[tuple[MixKey, float], ...] = ()
    pinned: Mapping[str, float] = field(default_factory=dict)
    """device model -> the share of requested device capacity that only it (and the other
    models the same selectors allow, spread by their size) can serve."""
    memo: dict[tuple[str, int], float] = field(default_factory=dict, compare=False, repr=False)
    """Node fragmentation per (node, generation): valid while this snapshot lives."""
    by_content: dict[object, float] = field(default_factory=dict, compare=False, repr=False)
    """Node fragmentation per node content (its devices but for their names, their usage,
    which shapes its host room holds): nodes alike are measured once."""
    masks: dict[tuple[int, int], tuple[bool, ...]] = field(
        default_factory=dict, compare=False, repr=False
    )
    """Per host room: which shapes' host asks it holds."""
    names_devices: bool = field(init=False, compare=False, repr=False)
    """Some shape selects devices by UUID: content alone does not decide, names do."""

    def __post_init__(self) -> None:
        names = any(c.use_uuids or c.nouse_uuids for (s, _), _ in self.shapes for c in s)
        object.__setattr__(self, "names_devices", names)

    def close_to(self, other: MixSnapshot) -> bool:
        """Within 5% (total variation) in shapes, and within 0.005 in each model's pinned
        share (half a percent of what is asked)."""
        mine, theirs = dict(self.shapes), dict(other.shapes)
        moved = sum(abs(mine.get(s, 0.0) - theirs.get(s, 0.0)) for s in mine.keys() | theirs.keys())
        models = self.pinned.keys() | other.pinned.keys()
        return moved / 2 <= 0.05 and all(
            abs(self.pinned.get(m, 0.0) - other.pinned.get(m, 0.0)) <= 0.005 for m in models
        )


EMPTY_SNAPSHOT = MixSnapshot()


@dataclass(frozen=True, slots=True)
class WorkloadMix:
    """Request shapes seen recently, with exponentially decaying weights."""

    weights: Map[MixKey, float] = field(default_factory=Map)
    at: float = 0.0
    """When the weights were last decayed (allocator clock)."""
    since_snapshot: int = 0
    snapshot: MixSnapshot = EMPTY_SNAPSHOT
    prices: tuple[tuple[str, float], ...] = ()
    """(device model, what a request without a type selector pays per device of it), sorted,
    none at zero: set with each snapshot, from the snapshot's pinned shares and the cluster's
    free capacity then (core/fragmentation.py: model_prices). Kept here, not worked out per
    decision, so that it moves at most once per snapshot. The bound policy carries it
    outside its identity: a new price leaves every remembered score valid and only reorders
    the score index's groups (core/scoreindex.py)."""

    def observe(self, containers: Shape, now: float, host: HostAmounts = NO_HOST) -> WorkloadMix:
        devices = shape_of(containers)
        if not devices:
            return self
        shape: MixKey = (devices, host)
        weights: Map[MixKey, float]
        decay = 0.5 ** (max(0.0, now - self.at) / HALF_LIFE_S)
        if decay < 0.999:  # decay in steps; weights are as of ``at``, the last step
            weights = Map({s: w * decay for s, w in self.weights.items() if w * decay > 1e-3})
            at, added = max(self.at, now), 1.0
        else:
            weights, at, added = self.weights, self.at, 1.0 / decay
        weights = weights.set(shape, weights.get(shape, 0.0) + added)
        if len(weights) > MAX_TRACKED:
            keep = sorted(weights.items(), key=lambda kv: -kv[1])[: MAX_TRACKED * 3 // 4]
            weights = Map(keep)
        return replace(self, weights=weights, at=at, since_snapshot=self.since_snapshot + 1)
