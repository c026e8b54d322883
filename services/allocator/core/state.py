"""The ledger: nodes, per-device use and allocations (and their indexes), as immutable values.
What the allocator learns by watching (heat, the request mix) lives beside it: core/signals.py.

Big maps are persistent (``immutables.Map``) so that a decision copies O(log n), not the cluster.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace

from immutables import Map

from services.allocator.core.index import LoadIndex, merged
from shared.schemas.inventory import DeviceInfo, NodeInventory
from shared.schemas.placement import AllocationRecord, DeviceGrant


@dataclass(frozen=True, slots=True)
class DeviceUsage:
    """What the allocations on one device take from it."""

    memory_mib: int = 0
    cores: int = 0
    count: int = 0
    slices: int = 0
    """Bitmask of the memory slices granted partitions hold (devices with a geometry)."""

    def plus(self, grant: DeviceGrant) -> DeviceUsage:
        return DeviceUsage(
            self.memory_mib + grant.memory_mib,
            self.cores + grant.cores,
            self.count + 1,
            self.slices | slice_mask(grant.placement, grant.slices),
        )

    def minus(self, grant: DeviceGrant) -> DeviceUsage:
        # Never below zero: a record from before a device's restart must not drive usage negative.
        return DeviceUsage(
            max(0, self.memory_mib - grant.memory_mib),
            max(0, self.cores - grant.cores),
            max(0, self.count - 1),
            self.slices & ~slice_mask(grant.placement, grant.slices),
        )


def slice_mask(start: int | None, slices: int) -> int:
    """The bits of ``slices`` memory slices from ``start`` on (none without a placement)."""
    return 0 if start is None else ((1 << slices) - 1) << start


NO_USAGE = DeviceUsage()
EMPTY_INDEX = LoadIndex()
NO_NODE_USAGE: Map[str, DeviceUsage] = Map()
"""One shared empty map: an idle node's usage is the same object from decision to decision."""
NO_HEAT: Map[str, int] = Map()

HostAmounts = tuple[int, int]
"""Host CPU (milli-cores) and memory (MiB)."""
NO_HOST: HostAmounts = (0, 0)


def host_room(inventory: NodeInventory, taken: HostAmounts) -> HostAmounts | None:
    """What is left of the node's host CPU and memory after the pods without HAMi allocations
    (as its agent last said) and this ledger's allocations there (``taken``); None when the
    agent does not say the node's allocatable CPU. Memory not said: unlimited."""
    if inventory.cpu_milli is None:
        return None
    cpu = inventory.cpu_milli - inventory.others_cpu_milli - taken[0]
    if inventory.memory_mib is None:
        return (cpu, 2**62)
    return (cpu, inventory.memory_mib - inventory.others_memory_mib - taken[1])


def device_load(device: DeviceInfo, usage: DeviceUsage) -> float:
    """How full a device is, 0..3: the sum of its used fractions of slots, cores and memory
    (the same three terms HAMi's device score uses)."""
    slots = usage.count / device.split_count if device.split_count else 1.0
    cores = usage.cores / device.cores if device.cores else 0.0
    memory = usage.memory_mib / device.memory_mib if device.memory_mib else 1.0
    return slots + cores + memory


def free_fraction(device: DeviceInfo, usage: DeviceUsage) -> float:
    """How much of the device is still free: its scarcer dimension, 0 when no share fits."""
    if not device.healthy or usage.count >= device.split_count:
        return 0.0
    memory = 1 - usage.memory_mib / device.memory_mib if device.memory_mib else 0.0
    cores = 1 - usage.cores / device.cores if device.cores else 1.0
    return max(0.0, min(memory, cores))


def node_load(devices: tuple[DeviceInfo, ...], usage: Map[str, DeviceUsage]) -> float:
    if not devices:
        return 0.0
    return sum(device_load(d, usage.get(d.uuid, NO_USAGE)) for d in devices) / len(devices)


def offer_key(kind: str, shared: bool) -> str:
    """A kind index's key for one kind in one sharing (interception or not)."""
    return f"{kind}|{'shared' if shared else 'partitioned'}"


@dataclass(frozen=True, slots=True)
class NodeRecord:
    """A node's last inventory and when this allocator last heard from it (its own clock)."""

    inventory: NodeInventory
    last_seen: float
    offered: frozenset[tuple[str, bool]] = field(init=False, compare=False)
    """The kinds and sharing its devices offer (core/fit.py: Offer), for searches to pass
    nodes of other kinds without looking at their devices."""

    kinds: frozenset[str] = field(init=False, compare=False)
    """The keys of the kind indexes it is in: each kind it has in each sharing (offer_key)."""

    def __post_init__(self) -> None:
        offered = frozenset((d.kind, d.isolation == "interception") for d in self.inventory.devices)
        object.__setattr__(self, "offered", offered)
        object.__setattr__(self, "kinds", frozenset(offer_key(*o) for o in offered))

    @property
    def name(self) -> str:
        return self.inventory.node

    @property
    def devices(self) -> tuple[DeviceInfo, ...]:
        return self.inventory.devices


@dataclass(frozen=True, slots=True)
class Allocation:
    record: AllocationRecord
    expires_at: float | None
    """Lease deadline on the allocator's clock; None for allocations without a lease."""

    @property
    def allocation_id(self) -> str:
        return self.record.allocation_id

    def grants(self) -> tuple[DeviceGrant, ...]:
        return tuple(grant for container in self.record.containers for grant in container)


_GENERATIONS = itertools.count(1)
"""Generation numbers, unique in the process: a cache keyed by (node, generation) can never take
another state's node (a restored ledger, a test's) for this one."""


def next_generation() -> int:
    """A number larger than any handed out before: the larger of two generations moves on
    whenever either does (the ledger's and the signals' share this counter)."""
    return next(_GENERATIONS)


NodeKey = tuple[str, int]
"""A node as caches know it: its name and its generation."""

CHANGES_KEPT = 4096
"""Touches a change log remembers: a cache that last looked further back asks every node again."""

LogMark = tuple[int, int]
"""A point in a change log: the position of its newest entry and that entry's generation."""


@dataclass(frozen=True, slots=True)
class ChangeLog:
    """The nodes touched lately, in order, each with the generation it was given: a cache of
    per-node answers (core/scoreindex.py) catches up on what changed since it last looked
    instead of asking every node whether it did. Persistent, like the state it is part of."""

    last: int = 0
    """Position of the newest entry (0: none yet)."""
    entries: Map[int, tuple[int, str]] = field(default_factory=Map)
    """position -> (generation, node), the newest CHANGES_KEPT of them."""
    origin: int = field(default_factory=next_generation)
    """Unique per log started empty, kept by what it becomes: the mark of an empty log, so two
    states built apart are never taken for one another."""

    def logged(self, node: str, generation: int) -> ChangeLog:
        position = self.last + 1
        with self.entries.mutate() as entries:
            entries[position] = (generation, node)
            entries.pop(position - CHANGES_KEPT, None)
            kept: Map[int, tuple[int, str]] = entries.finish()
        return ChangeLog(position, kept, self.origin)

    @property
    def mark(self) -> LogMark:
        newest = self.entries.get(self.last)
        return (self.last, newest[0] if newest is not None else self.origin)

    def since(self, mark: LogMark) -> list[str] | None:
        """The nodes touched after ``mark`` (repeats possible), or None when this log cannot
        say: the mark is older than what is kept, or from a log this one does not descend
        from. Generations are unique in the process, so an entry at the mark's position with
        the mark's generation is the very touch the mark was taken after."""
        position, generation = mark
        if position > self.last:
            return None
        if position == 0:
            if generation != self.origin or (self.last and 1 not in self.entries):
                return None
        else:
            entry = self.entries.get(position)
            if entry is None or entry[0] != generation:
                return None
        entries = self.entries
        return [entries[p][1] for p in range(position + 1, self.last + 1)]


@dataclass(frozen=True, slots=True)
class ClusterState:
    nodes: Map[str, NodeRecord] = field(default_factory=Map)
    usage: Map[str, Map[str, DeviceUsage]] = field(default_factory=Map)
    """node -> device uuid -> usage; kept apart from inventory so a re-registering node keeps it."""
    allocations: Map[str, Allocation] = field(default_factory=Map)
    by_request: Map[str, str] = field(default_factory=Map)
    """request_id -> allocation_id, so a retried request is answered, not placed twice."""
    kind_index: Map[str, LoadIndex] = field(default_factory=Map)
    """Nodes by current load, for bounded searches (derived from nodes and usage), one index
    per device kind in one sharing (`offer_key`) over the nodes that have some of it: a search
    for one kind walks only its nodes (core/index.py: merged, over both sharings when it asks
    for either, over all of them for a request of several kinds), however many of other
    kinds the cluster holds. A node is in each of its offers' indexes, at the same bucket."""

    def bucket_of(self, node: str) -> int | None:
        """The node's load bucket (the same in each index it is in)."""
        record = self.nodes.get(node)
        for key in record.kinds if record is not None else ():
            index = self.kind_index.get(key)
            if index is not None:
                bucket = index.bucket_of.get(node)
                if bucket is not None:
                    return bucket
        return None

    def walk(self, keys: Iterable[str] | None, *, most_loaded_first: bool) -> Iterator[str]:
        """The nodes of those indexes (None: all) in load order, each once."""
        chosen = self.kind_index.keys() if keys is None else keys
        indexes = [self.kind_index[k] for k in chosen if k in self.kind_index]
        return merged(indexes, most_loaded_first=most_loaded_first)

    models: Map[str, int] = field(default_factory=Map)
    """device model -> devices of it in the cluster (derived from nodes; for scarcity)."""
    free: Map[str, int] = field(default_factory=Map)
    """device model -> its free capacity in the cluster, in millionths of a device (whole
    numbers, so adding and taking back leaves it exact); derived from nodes and usage, for
    the price of scarce models (core/fragmentation.py: model_prices)."""

    def refreed(
        self,
        removed: tuple[DeviceInfo, ...],
        removed_usage: Mapping[str, DeviceUsage],
        added: tuple[DeviceInfo, ...],
        added_usage: Mapping[str, DeviceUsage],
    ) -> Map[str, int]:
        """The free capacity per model with one node's devices and usage replaced."""
        with self.free.mutate() as free:
            for devices, usage, sign in ((removed, removed_usage, -1), (added, added_usage, 1)):
                for device in devices:
                    micro = round(free_fraction(device, usage.get(device.uuid, NO_USAGE)) * 1e6)
                    if micro:
                        left = free.get(device.model, 0) + sign * micro
                        if left:
                            free[device.model] = left
                        else:
                            free.pop(device.model, None)
            counted: Map[str, int] = free.finish()
        return counted

    host: Map[str, HostAmounts] = field(default_factory=Map)
    """node -> the host CPU and memory this ledger's allocations there asked for."""

    def room(self, node: str) -> HostAmounts | None:
        """The node's host CPU and memory left (``host_room``), None when not known."""
        record = self.nodes.get(node)
        if record is None:
            return None
        return host_room(record.inventory, self.host.get(node, NO_HOST))

    def _host_moved(self, record: AllocationRecord, sign: int) -> Map[str, HostAmounts]:
        if not record.cpu_milli and not record.memory_mib:
            return self.host
        cpu, mem = self.host.get(record.node, NO_HOST)
        # Never below zero: a record restored twice or released late must not drive it negative.
        moved = (
            max(0, cpu + sign * record.cpu_milli),
            max(0, mem + sign * record.memory_mib),
        )
        if moved != NO_HOST:
            return self.host.set(record.node, moved)
        return self.host.delete(record.node) if record.node in self.host else self.host

    generation: Map[str, int] = field(default_factory=Map)
    """node -> a number that changes whenever the node's devices or their usage change. Every
    cache of per-node answers is keyed by it, with the signals' (core/signals.py: heat)
    (core/placement.py: FitMemo, core/fragmentation.py: the snapshot's memo)."""

    def recounted(
        self, removed: tuple[DeviceInfo, ...], added: tuple[DeviceInfo, ...]
    ) -> Map[str, int]:
        """The model counts with one node's devices replaced: O(its devices)."""
        with self.models.mutate() as models:
            for device in removed:
                left = models.get(device.model, 0) - 1
                if left > 0:
                    models[device.model] = left
                else:
                    models.pop(device.model, None)
            for device in added:
                models[device.model] = models.get(device.model, 0) + 1
            counted: Map[str, int] = models.finish()
        return counted

    changes: ChangeLog = field(default_factory=ChangeLog, compare=False, repr=False)
    """The touches behind ``generation``, in order (a cache reads what changed since)."""

    def touched(self, node: str) -> ClusterState:
        """This state with the node's generation moved on: its cached answers are stale."""
        generation = next_generation()
        return replace(
            self,
            generation=self.generation.set(node, generation),
            changes=self.changes.logged(node, generation),
        )

    def indexed(self, node: str, before: frozenset[str] = frozenset()) -> ClusterState:
        """This state with the node in the load indexes at its current load, and out of the
        indexes of the kinds it had ``before`` and has no more (all of them once it is gone)."""
        record = self.nodes.get(node)
        kinds = record.kinds if record is not None else frozenset()
        kind_index = self.kind_index
        for kind in before - kinds:
            if kind in kind_index:
                rest = kind_index[kind].without(node)
                kind_index = (
                    kind_index.set(kind, rest) if rest.bucket_of else kind_index.delete(kind)
                )
        if record is not None:
            load = node_load(record.devices, self.node_usage(node))
            for kind in kinds:
                known = kind_index.get(kind, EMPTY_INDEX)
                moved = known.with_load(node, load)
                if moved is not known:
                    kind_index = kind_index.set(kind, moved)
        return self if kind_index is self.kind_index else replace(self, kind_index=kind_index)

    def _devices_of(self, node: str) -> tuple[DeviceInfo, ...]:
        record = self.nodes.get(node)
        return record.devices if record is not None else ()

    def node_usage(self, node: str) -> Map[str, DeviceUsage]:
        return self.usage.get(node, NO_NODE_USAGE)

    def device_usage(self, node: str, uuid: str) -> DeviceUsage:
        return self.node_usage(node).get(uuid, NO_USAGE)

    def with_allocation(self, allocation: Allocation) -> ClusterState:
        record = allocation.record
        node_usage = self.node_usage(record.node)
        with node_usage.mutate() as mutable:
            for grant in allocation.grants():
                mutable[grant.uuid] = mutable.get(grant.uuid, NO_USAGE).plus(grant)
            node_usage = mutable.finish()
        devices = self._devices_of(record.node)
        state = replace(
            self,
            usage=self.usage.set(record.node, node_usage),
            free=self.refreed(devices, self.node_usage(record.node), devices, node_usage),
            allocations=self.allocations.set(record.allocation_id, allocation),
            by_request=self.by_request.set(record.request_id, record.allocation_id),
            host=self._host_moved(record, +1),
        ).touched(record.node)
        return state.indexed(record.node)

    def without_allocation(self, allocation_id: str) -> ClusterState:
        allocation = self.allocations.get(allocation_id)
        if allocation is None:
            return self
        record = allocation.record
        node_usage = self.node_usage(record.node)
        with node_usage.mutate() as mutable:
            for grant in allocation.grants():
                left = mutable.get(grant.uuid, NO_USAGE).minus(grant)
                if left == NO_USAGE:
                    del mutable[grant.uuid]
                else:
                    mutable[grant.uuid] = left
            node_usage = mutable.finish()
        devices = self._devices_of(record.node)
        state = replace(
            self,
            usage=self.usage.set(record.node, node_usage),
            free=self.refreed(devices, self.node_usage(record.node), devices, node_usage),
            allocations=self.allocations.delete(allocation_id),
            host=self._host_moved(record, -1),
            by_request=self.by_request.delete(record.request_id)
            if self.by_request.get(record.request_id) == allocation_id
            else self.by_request,
        ).touched(record.node)
        return state.indexed(record.node)
