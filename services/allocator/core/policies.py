"""Placement policies as one table. Each policy orders a node's devices for a container and
scores a node's fit; all share one placement loop (``placement.decide``).

An unknown policy name is refused where settings and requests are decoded, not mid-decision.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from services.allocator.core.fit import (
    DeviceOrder,
    NodeFit,
    emptiest_first,
    fullest_first,
    tightest_first,
)
from services.allocator.core.fragmentation import measure, remembered, taken_fraction
from services.allocator.core.mix import EMPTY_SNAPSHOT, TIE, MixSnapshot
from services.allocator.core.signals import Signals
from services.allocator.core.state import (
    NO_HOST,
    NO_USAGE,
    DeviceUsage,
    HostAmounts,
    NodeKey,
    device_load,
    free_fraction,
)
from shared.resources import unknown_policy
from shared.schemas.inventory import DeviceInfo
from shared.schemas.placement import ContainerRequest

Prices = tuple[tuple[str, float], ...]
"""(device model, price per device of it), sorted: what a flexible request pays."""
Takes = tuple[tuple[str, float], ...]
"""(device model, devices' worth of it), sorted: what a fit's flexible containers take."""


def usage_after(usage: Mapping[str, DeviceUsage], fit: NodeFit) -> dict[str, DeviceUsage]:
    after = dict(usage)
    for grants in fit.containers:
        for grant in grants:
            after[grant.uuid] = after.get(grant.uuid, NO_USAGE).plus(grant)
    return after


def node_load_after(
    devices: tuple[DeviceInfo, ...], usage: Mapping[str, DeviceUsage], fit: NodeFit
) -> float:
    """Mean device load on the node once the fit is applied."""
    if not devices:
        return 0.0
    after = usage_after(usage, fit)
    return sum(device_load(d, after.get(d.uuid, NO_USAGE)) for d in devices) / len(devices)


def name_rank(node: str) -> float:
    """The node's place, in [0, 1), in a fixed order that says nothing about the node: a
    stable hash of its name (CRC-32; Python's own hash changes per process)."""
    return zlib.crc32(node.encode()) / 2**32


class Policy(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def most_loaded_first(self) -> bool | None:
        """Where good nodes are found: True among the most loaded, False among the least,
        None: anywhere (every node must be scored)."""
        ...

    @property
    def own_device_order(self) -> bool:
        """Its node score assumes its own device order: a request that names this node policy
        and no GPU policy gets this order, not the cluster's default GPU policy."""
        ...

    def device_order(self) -> DeviceOrder: ...

    def bind(
        self,
        signals: Signals,
        containers: tuple[ContainerRequest, ...],
        host: HostAmounts = NO_HOST,
    ) -> Policy:
        """The policy as it applies to what the allocator has learnt and to this request, its
        devices and the host CPU and memory beside them (its prepare step, kube-scheduler's
        PreScore; most ignore all of it)."""
        ...

    def node_score(
        self,
        devices: tuple[DeviceInfo, ...],
        usage: Mapping[str, DeviceUsage],
        fit: NodeFit,
        key: NodeKey | None = None,
        room: HostAmounts | None = None,
    ) -> float:
        """Higher is better. ``key``: the node's generation, for policies that remember;
        ``room``: the node's host CPU and memory left before the fit (None: not known).
        Remembered per node generation: it must not read ``prices``."""
        ...

    @property
    def prices(self) -> Prices:
        """What the request pays per device of each model (most policies: nothing)."""
        ...

    @property
    def charges(self) -> bool:
        """Whether prices can ever charge this bound policy's fits (part of its identity, as
        ``prices`` are not)."""
        ...

    def takes(self, devices: tuple[DeviceInfo, ...], fit: NodeFit) -> Takes:
        """What the fit takes that ``prices`` charge for (remembered with the score)."""
        ...

    def charge(self, takes: Takes) -> float:
        """The score ``takes`` adds at the current ``prices`` (0 or less)."""
        ...


class _LearnsNothing:
    """For policies whose choice depends on nothing the allocator learns nor on the request's
    host ask: binding changes nothing, and nothing is priced."""

    __slots__ = ()
    prices: Prices = ()
    charges: bool = False

    def takes(self, devices: tuple[DeviceInfo, ...], fit: NodeFit) -> Takes:
        return ()

    def charge(self, takes: Takes) -> float:
        return 0.0

    def bind(
        self,
        signals: Signals,
        containers: tuple[ContainerRequest, ...],
        host: HostAmounts = NO_HOST,
    ) -> Policy:
        return self  # type: ignore[return-value]


@dataclass(frozen=True, slots=True)
class Binpack(_LearnsNothing):
    """Fill the fullest device and node first, keeping whole devices free for large requests."""

    name: str = "binpack"
    most_loaded_first: bool | None = True
    own_device_order: bool = False

    def device_order(self) -> DeviceOrder:
        return fullest_first

    def node_score(
        self,
        devices: tuple[DeviceInfo, ...],
        usage: Mapping[str, DeviceUsage],
        fit: NodeFit,
        key: NodeKey | None = None,
        room: HostAmounts | None = None,
    ) -> float:
        return node_load_after(devices, usage, fit)


@dataclass(frozen=True, slots=True)
class Spread(_LearnsNothing):
    """Use the emptiest device and node first, for the least interference between jobs."""

    name: str = "spread"
    most_loaded_first: bool | None = False
    own_device_order: bool = False

    def device_order(self) -> DeviceOrder:
        return emptiest_first

    def node_score(
        self,
        devices: tuple[DeviceInfo, ...],
        usage: Mapping[str, DeviceUsage],
        fit: NodeFit,
        key: NodeKey | None = None,
        room: HostAmounts | None = None,
    ) -> float:
        return -node_load_after(devices, usage, fit)


@dataclass(frozen=True, slots=True)
class BestFit(_LearnsNothing):
    """The node and device with the least free capacity left once the request is placed."""

    name: str = "best-fit"
    most_loaded_first: bool | None = None
    own_device_order: bool = True

    def device_order(self) -> DeviceOrder:
        return tightest_first

    def node_score(
        self,
        devices: tuple[DeviceInfo, ...],
        usage: Mapping[str, DeviceUsage],
        fit: NodeFit,
        key: NodeKey | None = None,
        room: HostAmounts | None = None,
    ) -> float:
        after = usage_after(usage, fit)
        return -sum(free_fraction(d, after.get(d.uuid, NO_USAGE)) for d in devices)


@dataclass(frozen=True, slots=True)
class FragmentationAware:
    """The node where the request least raises the expected fragmentation against the recent
    mix of requests (services/allocator/core/fragmentation.py); devices tightest first."""

    name: str = "fragmentation"
    most_loaded_first: bool | None = None
    own_device_order: bool = True
    mix: MixSnapshot = EMPTY_SNAPSHOT
    flexible: tuple[bool, ...] = ()
    """Per container: no type selector, so it pays for the scarce models it takes."""
    prices: Prices = field(default=(), compare=False)
    """(device model, what a flexible container pays per device of it): the mix's prices
    (core/mix.py: WorkloadMix.prices), when some container is flexible. Not part of the
    policy's identity: ``node_score`` leaves them out and ``charge`` adds them, so what is
    remembered per node (the decision memo, the score index) outlives a change of prices."""
    need: HostAmounts = NO_HOST
    """The request's host CPU and memory: taken from the node's room once it is placed."""

    def device_order(self) -> DeviceOrder:
        return tightest_first

    def bind(
        self,
        signals: Signals,
        containers: tuple[ContainerRequest, ...],
        host: HostAmounts = NO_HOST,
    ) -> Policy:
        flexible = tuple(not c.use_types and not c.nouse_types for c in containers)
        prices = signals.mix.prices if any(flexible) else ()
        return FragmentationAware(
            mix=signals.mix.snapshot, flexible=flexible, need=host, prices=prices
        )

    def node_score(
        self,
        devices: tuple[DeviceInfo, ...],
        usage: Mapping[str, DeviceUsage],
        fit: NodeFit,
        key: NodeKey | None = None,
        room: HostAmounts | None = None,
    ) -> float:
        before = remembered(self.mix, devices, usage, key, room)
        left = None if room is None else (room[0] - self.need[0], room[1] - self.need[1])
        after = measure(self.mix, devices, usage_after(usage, fit), left)
        gradient = round((after - before) / TIE) * TIE
        # Among equal gradients (small terms that never outweigh TIE): a request for devices
        # takes the first node in a fixed order of names, so near-equal placements fill one
        # node after another and leave the rest whole (first fit among near-equals, as the
        # published FGD packs); an order by load or by name (which carries racks and models)
        # packed worse. One without devices takes the node left fullest, where its CPU
        # strands the fewest free devices (docs/benchmarks.md).
        if any(fit.containers):
            return -gradient - 1e-5 * name_rank(fit.node)
        return -gradient + 1e-5 * node_load_after(devices, usage, fit)

    @property
    def charges(self) -> bool:
        return any(self.flexible)

    def takes(self, devices: tuple[DeviceInfo, ...], fit: NodeFit) -> Takes:
        """What the fit's flexible containers take of each model, in devices."""
        taken: dict[str, float] = {}
        by_uuid: dict[str, DeviceInfo] | None = None
        for grants, flexible in zip(fit.containers, self.flexible, strict=False):
            for g in grants if flexible else ():
                if by_uuid is None:
                    by_uuid = {d.uuid: d for d in devices}
                part = taken_fraction(by_uuid[g.uuid], g.memory_mib, g.cores)
                taken[g.model] = taken.get(g.model, 0.0) + part
        return tuple(sorted(taken.items()))

    def charge(self, takes: Takes) -> float:
        """The price of what a fit takes, as a score (0 or less), in ``TIE`` steps of its own:
        added to a remembered score, never inside its rounding."""
        if not self.prices or not takes:
            return 0.0
        price = dict(self.prices)
        cost = sum(price.get(model, 0.0) * part for model, part in takes)
        return -round(cost / TIE) * TIE


POLICIES: dict[str, Policy] = {
    policy.name: policy for policy in (Binpack(), Spread(), BestFit(), FragmentationAware())
}


def policy_named(name: str, *, field: str = "policy") -> Policy:
    try:
        return POLICIES[name]
    except KeyError:
        raise unknown_policy(field, name) from None
