"""The kubelet's view of this node's devices: each physical device as `split_count` virtual
devices (HAMi's meaning: the node counts vGPUs, a container counts physical cards, one slice
of each card it gets), and the kubelet's choice among them."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from services.nodeagent.core.readings import DeviceReading

MAX_ID = 63
"""The kubelet refuses longer device ids."""


@dataclass(frozen=True, slots=True)
class VirtualDevice:
    id: str
    physical: str
    healthy: bool
    numa_node: int | None


def virtual_id(uuid: str, i: int) -> str:
    vid = f"{uuid}-{i}"
    if len(vid) > MAX_ID:
        raise ValueError(f"device id {vid!r} is longer than the kubelet's {MAX_ID} characters")
    return vid


def virtual_devices(
    readings: Sequence[DeviceReading], split_count: int | Callable[[DeviceReading], int]
) -> tuple[VirtualDevice, ...]:
    """``split_count``: the same for every device, or each device's own (a whole device: 1)."""
    count = split_count if callable(split_count) else (lambda _: split_count)
    return tuple(
        VirtualDevice(virtual_id(r.uuid, i), r.uuid, r.healthy, r.numa_node)
        for r in sorted(readings, key=lambda r: r.index)
        for i in range(count(r))
    )


def physical_of(vid: str) -> str:
    return vid.rsplit("-", 1)[0]


def preferred(available: Sequence[str], must_include: Sequence[str], size: int) -> list[str]:
    """`size` ids, each from a different physical device where the kubelet leaves room (a
    container's devices are distinct cards), the least taken cards first. The kubelet's pick
    does not decide which cards the container gets (the allocator did): it keeps the
    kubelet's count of slices in step with one slice per card."""
    chosen = list(dict.fromkeys(must_include))[:size]
    taken = {physical_of(v) for v in chosen}
    free = Counter(physical_of(v) for v in available)
    for vid in sorted(available, key=lambda v: (-free[physical_of(v)], v)):
        if len(chosen) >= size:
            break
        if vid not in chosen and physical_of(vid) not in taken:
            chosen.append(vid)
            taken.add(physical_of(vid))
    for vid in available:  # fewer cards than asked: the allocator refuses at bind anyway
        if len(chosen) >= size:
            break
        if vid not in chosen:
            chosen.append(vid)
    return chosen
