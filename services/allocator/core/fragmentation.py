"""Fragmentation-aware placement, in the spirit of FGD (Weng et al., USENIX ATC'23, "Beware of
Fragmentation"): place a request where it least increases the share of free device capacity that
the recent mix of requests could not use.

For one request shape, a node's *stranded* capacity is all of its free capacity when the shape
cannot fit there at all, and otherwise the free capacity of the devices that cannot take one
share of it. A node's fragmentation is the stranded capacity averaged over the mix. A candidate
placement scores by how much it raises that (a gradient step), plus the price of the devices
it takes of models that requests with type selectors depend on, from what is left of them
(``model_prices``: flexible requests leave a model to the requests that need it once it runs
short). Increases within ``TIE`` of each other are ties, and a
device request's ties go to the first node in a fixed order of names (policies.py:
``name_rank``).

Measured on the Alibaba openb trace (benchmarks/openb_replay.py, docs/benchmarks.md, with an
ablation of each choice, chosen on one set of generated mixes and reported on two others):
each request of the mix weighs one, coarse ties, the name order among them, and the price of
models pinned requests need.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import replace

from services.allocator.core.fit import (
    NodeFit,
    device_rejection,
    fit_node,
    fullest_first,
    type_allowed,
)
from services.allocator.core.mix import (
    EMPTY_SNAPSHOT,
    MIX_SHAPES,
    REFRESH_EVERY,
    MixKey,
    MixSnapshot,
    Shape,
    WorkloadMix,
)
from services.allocator.core.signals import Signals
from services.allocator.core.state import (
    NO_HOST,
    NO_USAGE,
    ClusterState,
    DeviceUsage,
    HostAmounts,
    NodeKey,
    free_fraction,
)
from shared.schemas.inventory import DeviceInfo
from shared.schemas.placement import AllocationRecord, ContainerRequest


def taken_fraction(device: DeviceInfo, memory_mib: int, cores: int) -> float:
    memory = memory_mib / device.memory_mib if device.memory_mib else 1.0
    return max(memory, cores / device.cores if device.cores else 0.0)


def short_of(need: HostAmounts, room: HostAmounts) -> bool:
    """Whether a node's host room cannot hold the ask: an amount asked that is more than is
    left (an amount not asked never is, even on a node its other pods overcommit, as
    kube-scheduler checks only what a pod requests)."""
    return (need[0] > 0 and room[0] < need[0]) or (need[1] > 0 and room[1] < need[1])


def stranded(
    devices: tuple[DeviceInfo, ...],
    usage: Mapping[str, DeviceUsage],
    shape: Shape,
    need: HostAmounts = NO_HOST,
    room: HostAmounts | None = None,
) -> float:
    """Free capacity on the node that this shape could not use (in devices): all of it where
    the shape does not fit, its devices or its host CPU and memory (``need``) in the node's
    ``room`` (None: not known, not counted)."""
    free = [free_fraction(d, usage.get(d.uuid, NO_USAGE)) for d in devices]
    if room is not None and short_of(need, room):
        return sum(free)  # the host's CPU or memory strands the devices
    if not isinstance(fit_node("", devices, usage, shape, fullest_first), NodeFit):
        return sum(free)
    return sum(
        f
        for d, f in zip(devices, free, strict=True)
        if f > 0
        and all(device_rejection(c, d, usage.get(d.uuid, NO_USAGE)) is not None for c in shape)
    )


def remembered(
    snapshot: MixSnapshot,
    devices: tuple[DeviceInfo, ...],
    usage: Mapping[str, DeviceUsage],
    key: NodeKey | None = None,
    room: HostAmounts | None = None,
) -> float:
    """The node's fragmentation under ``snapshot``, remembered per node generation (``key``:
    the generation moves with the node's host room too) while the snapshot lives; without a
    key, measured."""
    if key is None:
        return measure(snapshot, devices, usage, room)
    hit = snapshot.memo.get(key)
    if hit is not None:
        return hit
    value = measure(snapshot, devices, usage, room)
    if len(snapshot.memo) > 65536:
        snapshot.memo.clear()
    snapshot.memo[key] = value
    return value


def measure(
    snapshot: MixSnapshot,
    devices: tuple[DeviceInfo, ...],
    usage: Mapping[str, DeviceUsage],
    room: HostAmounts | None = None,
) -> float:
    """The node's expected stranded capacity over the mix (``stranded`` per shape, weighted).
    The usual shape, one container not bound to a NUMA node, fits exactly where enough
    devices take one share each, so it is judged from the devices' verdicts alone: the same
    answer as ``stranded`` without a fit search per shape (a test holds them equal)."""
    used = [usage.get(d.uuid, NO_USAGE) for d in devices]
    key: object = None
    if snapshot.shapes and not snapshot.names_devices:
        fits_host = None if room is None else snapshot.masks.get(room)
        if fits_host is None and room is not None:
            fits_host = tuple(not short_of(n, room) for (_, n), _ in snapshot.shapes)
            if len(snapshot.masks) > 65536:
                snapshot.masks.clear()
            snapshot.masks[room] = fits_host
        key = (content(devices, used), fits_host)
        hit = snapshot.by_content.get(key)
        if hit is not None:
            return hit
    free = [free_fraction(d, u) for d, u in zip(devices, used, strict=True)]
    total = sum(free)
    value = 0.0
    for (shape, need), p in snapshot.shapes:
        if room is not None and short_of(need, room):
            value += p * total
        elif len(shape) == 1 and not shape[0].numa_bind:
            c = shape[0]
            taking = 0
            left = 0.0
            for d, u, f in zip(devices, used, free, strict=True):
                if device_rejection(c, d, u) is None:
                    taking += 1
                elif f > 0:
                    left += f
            value += p * (total if taking < c.count else left)
        else:
            value += p * stranded(devices, usage, shape, need, room)
    if key is not None:
        if len(snapshot.by_content) > 65536:
            snapshot.by_content.clear()
        snapshot.by_content[key] = value
    return value


def content(devices: tuple[DeviceInfo, ...], used: list[DeviceUsage]) -> tuple[object, ...]:
    """What the measure reads of a node's devices and their usage, everything but their names,
    as one flat tuple (one object to hash and to keep, not one per device)."""
    out: list[object] = []
    for d, u in zip(devices, used, strict=True):
        out += (
            d.kind,
            d.model,
            d.memory_mib,
            d.cores,
            d.split_count,
            d.healthy,
            d.isolation,
            d.numa_node,
            d.profiles,
            d.slices,
            d.slices_held,
            u.memory_mib,
            u.cores,
            u.count,
            u.slices,
        )
    return tuple(out)


def refreshed(mix: WorkloadMix, models: Mapping[str, int]) -> WorkloadMix:
    """A new snapshot when enough requests were seen since the last (or there is none).
    ``models``: devices per model in the cluster, for the pinned shares."""
    if mix.snapshot is not EMPTY_SNAPSHOT and mix.since_snapshot < REFRESH_EVERY:
        return mix
    if not mix.weights:
        return mix
    fresh = snapshot_of(mix.weights, models)
    if fresh.close_to(mix.snapshot):
        return replace(mix, since_snapshot=0)  # keep the old one: its memo stays valid
    return replace(mix, since_snapshot=0, snapshot=fresh)


def devices_asked(shape: Shape) -> float:
    """Devices' worth a request asks for: a share counts as its fraction where it says one."""
    total = 0.0
    for c in shape:
        share = max(c.cores, c.memory_percent or 0) / 100
        total += c.count * (share if 0 < share < 1 else 1.0)
    return total


def snapshot_of(counts: Mapping[MixKey, float], models: Mapping[str, int]) -> MixSnapshot:
    """``counts``: recent requests per shape. A shape weighs its share of requests: the
    measure is the expected capacity stranded for the next request (FGD's definition), and a
    multi-device shape's stranded term already counts every device it cannot use (weighing it
    by its devices too, as before, over-protects empty nodes wherever multi-device requests
    are common: docs/benchmarks.md). ``models``: devices per model, to spread a selector that
    allows several models over them by size."""
    top = sorted(counts.items(), key=lambda kv: (-kv[1], repr(kv[0])))[:MIX_SHAPES]
    total = sum(w for _, w in top)
    volume = sum(n * devices_asked(k[0]) for k, n in counts.items())
    demand: dict[str, float] = {}
    for (shape, _), n in counts.items():
        for c in shape:
            if not c.use_types and not c.nouse_types:
                continue
            allowed = {
                m: k for m, k in models.items() if type_allowed(m, c.use_types, c.nouse_types)
            }
            capacity = sum(allowed.values())
            asked = n * devices_asked((c,))
            for model, k in allowed.items():
                demand[model] = demand.get(model, 0.0) + asked * k / capacity
    pinned = {m: d / volume for m, d in demand.items() if volume}
    return MixSnapshot(shapes=tuple((s, w / total) for s, w in top), pinned=pinned)


def model_prices(pinned: Mapping[str, float], free: Mapping[str, int]) -> dict[str, float]:
    """What taking one device of each model costs a request without a type selector, in
    devices: the model's pinned share of what is asked, over its share of what is free. Above
    one, requests pinned to the model would take all that is left of it before the cluster
    fills (arrivals being of about its free capacity): flexible requests should leave it.
    Priced from what is free now, the charge grows as the model runs short and is small while
    plenty is left; a fixed price from installed counts sent small requests off a model with
    room to spare and onto whole nodes that larger requests needed (docs/benchmarks.md)."""
    everything = sum(free.values())
    return {
        m: quantised(share * everything / max(free.get(m, 0), 1)) for m, share in pinned.items()
    }


PRICE_STEP = 1.25
"""Prices move in steps of 25% (and below 0.01 of a device are none). They are renewed with
each snapshot (every REFRESH_EVERY requests), not at each allocation, and kept out of the
memo: the score index groups nodes by what they would take and adds each group's charge at
the top, so a new price re-sorts nothing. Coarse steps keep a price from flickering between
two neighbours as the free capacity moves a little (finer steps and renewing at every
request measured no better: docs/benchmarks.md)."""


def quantised(price: float) -> float:
    if price < 0.01:
        return 0.0
    return float(PRICE_STEP ** round(math.log(price, PRICE_STEP)))


def observe_request(
    signals: Signals,
    state: ClusterState,
    containers: Shape,
    now: float,
    host: HostAmounts = NO_HOST,
) -> Signals:
    """Count a request into the mix (every request the allocator is asked to place, with the
    host CPU and memory it asks beside its devices); the ledger ``state`` says how many
    devices of each model there are, for the pinned shares, and how much of each is free,
    for the prices (renewed whenever the snapshot is due, kept or not)."""
    mix = signals.mix.observe(containers, now, host)
    if mix.since_snapshot >= REFRESH_EVERY or mix.snapshot is EMPTY_SNAPSHOT:
        # The ledger keeps the counts and the free capacity: O(models), not O(cluster).
        mix = refreshed(mix, state.models)
        prices = model_prices(mix.snapshot.pinned, state.free)
        mix = replace(mix, prices=tuple(sorted((m, p) for m, p in prices.items() if p)))
    return replace(signals, mix=mix)


def shape_of_record(record: AllocationRecord) -> Shape:
    """A request shape recovered from what was granted (for the mix after a restart)."""
    return tuple(
        ContainerRequest(
            kind=grants[0].kind,
            count=len(grants),
            memory_mib=grants[0].memory_mib,
            cores=grants[0].cores,
        )
        for grants in record.containers
        if grants
    )
