"""Placement policies as one table. Each policy orders a node's devices for a container and
scores a node's fit; all share one placement loop (``placement.decide``).

An unknown policy name is refused where settings and requests are decoded, not mid-decision.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from services.allocator.core.fit import DeviceOrder, NodeFit
from services.allocator.core.state import NO_USAGE, DeviceUsage, device_load
from shared.errors import InvalidRequest
from shared.schemas.inventory import DeviceInfo


def node_load_after(
    devices: tuple[DeviceInfo, ...], usage: Mapping[str, DeviceUsage], fit: NodeFit
) -> float:
    """Mean device load on the node once the fit is applied."""
    if not devices:
        return 0.0
    after = dict(usage)
    for grants in fit.containers:
        for grant in grants:
            after[grant.uuid] = after.get(grant.uuid, NO_USAGE).plus(grant)
    return sum(device_load(d, after.get(d.uuid, NO_USAGE)) for d in devices) / len(devices)


def _fullest_first(device: DeviceInfo, usage: DeviceUsage) -> float:
    # A module-level function, not a lambda: one object, so memoised fits can key on it.
    return -device_load(device, usage)


class Policy(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def most_loaded_first(self) -> bool | None:
        """Where good nodes are found: True among the most loaded, False among the least,
        None: anywhere (every node must be scored)."""
        ...

    def device_order(self) -> DeviceOrder: ...

    def node_score(
        self, devices: tuple[DeviceInfo, ...], usage: Mapping[str, DeviceUsage], fit: NodeFit
    ) -> float:
        """Higher is better."""
        ...


@dataclass(frozen=True, slots=True)
class Binpack:
    """Fill the fullest device and node first, keeping whole devices free for large requests."""

    name: str = "binpack"
    most_loaded_first: bool | None = True

    def device_order(self) -> DeviceOrder:
        return _fullest_first

    def node_score(
        self, devices: tuple[DeviceInfo, ...], usage: Mapping[str, DeviceUsage], fit: NodeFit
    ) -> float:
        return node_load_after(devices, usage, fit)


@dataclass(frozen=True, slots=True)
class Spread:
    """Use the emptiest device and node first, for the least interference between jobs."""

    name: str = "spread"
    most_loaded_first: bool | None = False

    def device_order(self) -> DeviceOrder:
        return device_load

    def node_score(
        self, devices: tuple[DeviceInfo, ...], usage: Mapping[str, DeviceUsage], fit: NodeFit
    ) -> float:
        return -node_load_after(devices, usage, fit)


POLICIES: dict[str, Policy] = {policy.name: policy for policy in (Binpack(), Spread())}


def policy_named(name: str, *, field: str = "policy") -> Policy:
    try:
        return POLICIES[name]
    except KeyError:
        raise InvalidRequest(
            f"{field} {name!r} is unknown; allowed: {', '.join(sorted(POLICIES))}"
        ) from None
