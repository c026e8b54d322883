"""Does a request fit a node, and on which devices? HAMi's matching rules, as pure functions.

A device takes a container's share when it is healthy, matches the type and UUID selectors, has a
free split slot, enough free memory and cores, and the exclusivity rules hold (a 100-core request
needs an idle device; a device whose cores are all taken accepts no further share).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from services.allocator.core.state import NO_USAGE, DeviceUsage, device_load, free_fraction
from shared.schemas.inventory import DeviceInfo, PartitionProfile
from shared.schemas.placement import ContainerRequest, DeviceGrant

DeviceOrder = Callable[[DeviceInfo, DeviceUsage], float]
"""Sort key for candidate devices of one container: lower is tried first. The orders are
module-level functions, not lambdas: one object each, so memoised fits can key on them."""


def fullest_first(device: DeviceInfo, usage: DeviceUsage) -> float:
    return -device_load(device, usage)


def emptiest_first(device: DeviceInfo, usage: DeviceUsage) -> float:
    return device_load(device, usage)


def tightest_first(device: DeviceInfo, usage: DeviceUsage) -> float:
    """The device with the least free capacity (that fits) first."""
    return free_fraction(device, usage)


def type_allowed(model: str, use: Sequence[str], nouse: Sequence[str]) -> bool:
    """HAMi's rule: a selector matches when it is a case-insensitive substring of the model."""
    if len(use) + len(nouse) <= REMEMBERED_SELECTORS:
        return _remembered_type_allowed(model, tuple(use), tuple(nouse))
    return _type_allowed(model, use, nouse)


REMEMBERED_SELECTORS = 8
"""Verdicts are remembered for requests naming at most this many selectors: every fit asks one
per device, and a cluster has few models and requests name few selectors (a tenth of a judged
node's cost on the openb trace otherwise). The bound keeps what a request can make the cache
hold small (4,096 verdicts of at most 8 names of 253 characters), whatever it sends."""


@functools.lru_cache(maxsize=4096)
def _remembered_type_allowed(model: str, use: tuple[str, ...], nouse: tuple[str, ...]) -> bool:
    return _type_allowed(model, use, nouse)


def _type_allowed(model: str, use: Sequence[str], nouse: Sequence[str]) -> bool:
    upper = model.upper()
    if use and not any(sel.strip().upper() in upper for sel in use if sel.strip()):
        return False
    return not any(sel.strip() and sel.strip().upper() in upper for sel in nouse)


def uuid_allowed(uuid: str, use: Sequence[str], nouse: Sequence[str]) -> bool:
    if use and uuid not in use:
        return False
    return uuid not in nouse


def memory_needed(request: ContainerRequest, device: DeviceInfo) -> int:
    if request.memory_mib is not None:
        return request.memory_mib
    percent = 100 if request.memory_percent is None else request.memory_percent
    return device.memory_mib * percent // 100


def wants_whole(request: ContainerRequest) -> bool:
    """Asks for no amount: the whole device (what a count alone means on partition kinds)."""
    return request.memory_mib is None and request.memory_percent is None and request.cores == 0


def profile_for(request: ContainerRequest, device: DeviceInfo) -> PartitionProfile | None:
    """The smallest of the device's partitions that holds the request (memory, then cores);
    a request naming cores alone takes the smallest with that much compute."""
    named = request.memory_mib is not None or request.memory_percent is not None
    memory = memory_needed(request, device) if named else 0
    for profile in device.profiles:
        if profile.memory_mib >= memory and profile.cores >= request.cores:
            return profile
    return None


def _placeable(profile: PartitionProfile, slices: int) -> bool:
    return profile.slices > 0 and all(
        start >= 0 and start + profile.slices <= slices for start in profile.placements
    )


@functools.lru_cache(maxsize=65536)
def _free_placements(profile: PartitionProfile, held: int) -> tuple[int, ...]:
    size = (1 << profile.slices) - 1
    return tuple(start for start in profile.placements if not held & (size << start))


@functools.lru_cache(maxsize=65536)
def _usefulness(profiles: tuple[PartitionProfile, ...], held: int) -> tuple[int, int]:
    """What a device's free geometry can still take: its largest placeable partition (in
    slices), then how many placements stay free over all its profiles. Remembered: a GPU's
    geometry has a few hundred states at most."""
    largest, options = 0, 0
    for profile in profiles:
        free = len(_free_placements(profile, held))
        if free:
            largest = max(largest, profile.slices)
            options += free
    return largest, options


def partition_for(
    request: ContainerRequest, device: DeviceInfo, usage: DeviceUsage, *, choose: bool = True
) -> tuple[PartitionProfile, int] | str:
    """On a device with a geometry (MIG): the smallest profile that holds the request and has
    a free placement with compute to spare, and the placement that leaves the rest of the
    device most useful (the largest partition still placeable, then the most placements;
    the fragmentation policy's idea on one device); or why none ("profile": none is that
    large; "geometry": no large enough one has a free placement; "cores": the free ones lack
    compute). ``choose`` False: any free placement (whether it fits at all)."""
    named = request.memory_mib is not None or request.memory_percent is not None
    memory = memory_needed(request, device) if named else 0
    held = usage.slices | device.slices_held
    why = "profile"
    for profile in device.profiles:  # smallest first
        if profile.memory_mib < memory or profile.cores < request.cores:
            continue
        if not _placeable(profile, device.slices):
            continue  # a profile that takes no slice, or runs past the device: never granted
        free = _free_placements(profile, held)
        if not free:
            why = "geometry" if why == "profile" else why
            continue
        if device.cores - usage.cores < profile.cores:
            why = "cores"
            continue
        if not choose:
            return profile, free[0]
        mask = (1 << profile.slices) - 1
        profiles = device.profiles
        start = max(free, key=lambda s: (_usefulness(profiles, held | mask << s), -s))
        return profile, start
    return why


def _rejection_by_model(
    request: ContainerRequest, device: DeviceInfo, usage: DeviceUsage
) -> str | None:
    """The whole-device and hardware-partition models (docs/architecture.md)."""
    if device.isolation == "whole" or (wants_whole(request) and not device.slices):
        if memory_needed(request, device) > device.memory_mib:
            return "memory"
        return "whole" if usage.count > 0 else None
    if device.slices:
        if usage.count >= device.split_count:
            return "split"
        chosen = partition_for(request, device, usage, choose=False)
        return chosen if isinstance(chosen, str) else None
    profile = profile_for(request, device)
    if profile is None:
        return "profile"
    if usage.count >= device.split_count:
        return "split"
    if device.memory_mib - usage.memory_mib < profile.memory_mib:
        return "memory"
    if device.cores - usage.cores < profile.cores:
        return "cores"
    return None


def device_rejection(
    request: ContainerRequest, device: DeviceInfo, usage: DeviceUsage
) -> str | None:
    """Why this device cannot take one share of the request now, or None when it can."""
    if device.kind != request.kind:
        return "kind"
    if not device.healthy:
        return "unhealthy"
    if request.device_mode and (request.device_mode == "hami-core") != (
        device.isolation == "interception"
    ):
        return "mode"
    if (request.use_types or request.nouse_types) and not type_allowed(
        device.model, request.use_types, request.nouse_types
    ):
        return "type"
    if (request.use_uuids or request.nouse_uuids) and not uuid_allowed(
        device.uuid, request.use_uuids, request.nouse_uuids
    ):
        return "uuid"
    if device.isolation != "interception":
        return _rejection_by_model(request, device, usage)
    if usage.count >= device.split_count:
        return "split"
    if device.memory_mib - usage.memory_mib < memory_needed(request, device):
        return "memory"
    if device.cores - usage.cores < request.cores:
        return "cores"
    if request.cores >= 100 and usage.count > 0:
        return "exclusive"
    if usage.cores >= device.cores and request.cores == 0 and device.cores > 0:
        return "cores"
    return None


@dataclass(frozen=True, slots=True)
class NodeFit:
    """Devices chosen for each container of a request on one node."""

    node: str
    containers: tuple[tuple[DeviceGrant, ...], ...]


@dataclass(frozen=True, slots=True)
class Reason:
    """Why a request does not fit a node: a code (a key of REASONS, or "count": too few devices
    passed, ``detail`` says how many, ``cause`` is what stopped most of the others). Shells
    render it (``text``); tests and callers compare codes."""

    code: str
    detail: str = ""
    cause: str = ""

    @property
    def text(self) -> str:
        if self.code == "count":
            return f"{self.detail} (others: {REASONS[self.cause]})" if self.cause else self.detail
        return REASONS[self.code] + (f": {self.detail}" if self.detail else "")

    def about(self, code: str) -> bool:
        """Whether this reason is, or mostly comes from, ``code`` (e.g. "memory")."""
        return code in (self.code, self.cause)


REASONS = {
    "kind": "no device of this kind",
    "unhealthy": "device unhealthy",
    "type": "no device of the requested type (use-gputype/nouse-gputype)",
    "uuid": "no device with the requested UUID (use-gpuuuid/nouse-gpuuuid)",
    "split": "device split count reached",
    "memory": "not enough free device memory",
    "cores": "not enough free device cores",
    "exclusive": "exclusive use (100 cores) needs an idle device",
    "whole": "device in use (its kind is allocated whole)",
    "profile": "no partition of the device is that large",
    "geometry": "no free placement for a partition that large (the device's slices are taken)",
    "mode": "no device shared the way the pod asks (nvidia.com/vgpu-mode)",
    "numa": "not enough fitting devices on one NUMA node",
    "no-inventory": "no HAMi device inventory from this node (node agent not running?)",
    "no-node": "no live node with devices",
}


def _grant(request: ContainerRequest, device: DeviceInfo, usage: DeviceUsage) -> DeviceGrant:
    memory, cores, profile = memory_needed(request, device), request.cores, ""
    placement: int | None = None
    slices = 0
    if device.isolation == "partition" and device.slices:
        chosen = partition_for(request, device, usage)
        assert not isinstance(chosen, str)  # device_rejection passed it
        part, placement = chosen
        memory, cores, profile, slices = part.memory_mib, part.cores, part.name, part.slices
    elif device.isolation == "whole" or (device.isolation == "partition" and wants_whole(request)):
        memory, cores = device.memory_mib, device.cores  # the device, nobody beside
    elif device.isolation == "partition":
        capacity = profile_for(request, device)
        assert capacity is not None  # device_rejection passed it
        memory, cores, profile = capacity.memory_mib, capacity.cores, capacity.name
    return DeviceGrant(
        uuid=device.uuid,
        index=device.index,
        model=device.model,
        kind=device.kind,
        memory_mib=memory,
        cores=cores,
        profile=profile,
        placement=placement,
        slices=slices,
    )


def _choose(request: ContainerRequest, candidates: list[DeviceInfo]) -> list[DeviceInfo] | None:
    if not request.numa_bind:
        return candidates[: request.count] if len(candidates) >= request.count else None
    by_numa: dict[int | None, list[DeviceInfo]] = {}
    for device in candidates:
        by_numa.setdefault(device.numa_node, []).append(device)
    for group in by_numa.values():  # dicts keep insertion order: the best-ordered group wins
        if len(group) >= request.count:
            return group[: request.count]
    return None


Offer = tuple[str, bool]
"""What a device offers a request: its kind, and whether it is shared by interception."""


def acceptable(request: ContainerRequest) -> frozenset[Offer]:
    """The offers a container can take: its kind, in the sharing it asks for (any if none)."""
    if request.device_mode == "hami-core":
        return frozenset({(request.kind, True)})
    if request.device_mode == "mig":
        return frozenset({(request.kind, False)})
    return frozenset({(request.kind, True), (request.kind, False)})


def refusal_by_offer(
    offered: frozenset[Offer] | set[Offer], containers: Sequence[ContainerRequest]
) -> Reason | None:
    """Why no device of a node could ever take one of the containers (kind or sharing), or
    None: checked before any device is looked at (on a mixed cluster most nodes a search
    passes are of other kinds)."""
    for request in containers:
        if request.count and offered.isdisjoint(acceptable(request)):
            kinds = {kind for kind, _ in offered}
            return Reason("kind" if request.kind not in kinds else "mode")
    return None


def fit_node(
    node: str,
    devices: Iterable[DeviceInfo],
    usage: Mapping[str, DeviceUsage],
    containers: Sequence[ContainerRequest],
    order: DeviceOrder,
    heat: Mapping[str, int] | None = None,
) -> NodeFit | Reason:
    """Place every container on this node's devices, or say why not (the most telling reason).
    Devices the order ranks equal go cooler first (``heat``: usage feedback, core/heat.py).

    Containers are placed one after the other, each seeing the shares taken by the ones before,
    so two containers of one pod can share a device only where its split count allows.
    """
    devices = tuple(devices)
    taken: dict[str, DeviceUsage] = {}
    chosen: list[tuple[DeviceGrant, ...]] = []
    for request in containers:
        if request.count == 0:
            chosen.append(())
            continue
        rejections: dict[str, int] = {}
        candidates: list[tuple[float, int, int, int, DeviceInfo]] = []
        for device in devices:
            current = taken.get(device.uuid) or usage.get(device.uuid, NO_USAGE)
            why = device_rejection(request, device, current)
            if why is None:
                warmth = heat.get(device.uuid, 0) if heat else 0
                # Among whole devices (MIG instances made by hand) the smallest that holds it.
                size = device.memory_mib if device.isolation == "whole" else 0
                candidates.append((order(device, current), size, warmth, device.index, device))
            else:
                rejections[why] = rejections.get(why, 0) + 1
        candidates.sort(key=lambda c: (c[0], c[1], c[2], c[3]))
        picked = _choose(request, [c[4] for c in candidates])
        if picked is None:
            if candidates and request.numa_bind:
                return Reason("numa")
            main = max(rejections, key=lambda k: rejections[k]) if rejections else ""
            if candidates or not rejections:
                count = f"{len(candidates)} of {len(devices)} devices fit, {request.count} asked"
                return Reason("count", count, main)
            return Reason(main)
        grants = []
        for device in picked:
            current = taken.get(device.uuid) or usage.get(device.uuid, NO_USAGE)
            grant = _grant(request, device, current)
            taken[grant.uuid] = current.plus(grant)
            grants.append(grant)
        chosen.append(tuple(grants))
    return NodeFit(node=node, containers=tuple(chosen))
