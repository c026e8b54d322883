"""Reading a container's shared accounting region (native/src/region.h, docs/native.md, layout
version 2) from its bytes. The node agent only ever reads it: the container's own processes
keep it, so its numbers are the container's word about itself, checked for shape, never trusted
for anything but reporting that container's usage."""

from __future__ import annotations

import struct
from dataclasses import dataclass

MAGIC = 0x494D4148
VERSION = 2
MAX_DEVICES = 16
SLOT_COUNT = 1024
_HEADER = struct.Struct("<4I40x16Qi16i4x16q16Q16Q16Q")
_SLOT = struct.Struct("<iiQ16Q16Q")
HEADER_BYTES = _HEADER.size
REGION_BYTES = HEADER_BYTES + SLOT_COUNT * _SLOT.size


class RegionUnreadable(ValueError):
    """Not a region of the layout this agent knows (another version, torn, or not one)."""


class RegionCorrupt(RegionUnreadable):
    """Says it is our layout (magic and version) but its shape is wrong: scribbled over. The
    library refuses it; the agent may recreate it once no process holds a slot in it."""


@dataclass(frozen=True, slots=True)
class RegionReading:
    limit_bytes: tuple[int, ...]
    used_bytes: tuple[int, ...]
    oversub_bytes: tuple[int, ...]
    busy_ns: tuple[int, ...]
    sm_limit: int
    processes: int
    """Slots held by processes (live, or dead and not reaped yet)."""


def read_region(data: bytes) -> RegionReading:
    if len(data) < 16:
        raise RegionUnreadable(f"{len(data)} bytes is too short for a region header")
    magic, version, header_bytes, slot_count = struct.unpack_from("<4I", data)
    if magic != MAGIC:
        raise RegionUnreadable(f"magic {magic:#x} is not {MAGIC:#x} (not initialised, or not one)")
    if version != VERSION:
        raise RegionUnreadable(f"layout version {version}; this agent reads {VERSION}")
    if header_bytes != HEADER_BYTES or slot_count != SLOT_COUNT or len(data) < REGION_BYTES:
        raise RegionCorrupt(
            f"header {header_bytes} B, {slot_count} slots, {len(data)} B: expected "
            f"{HEADER_BYTES}, {SLOT_COUNT}, {REGION_BYTES}"
        )
    fields = _HEADER.unpack_from(data)
    n = MAX_DEVICES
    limit = fields[4 : 4 + n]
    sm_limit = fields[4 + n]
    busy = fields[5 + 4 * n : 5 + 5 * n]
    used = fields[5 + 5 * n : 5 + 6 * n]
    oversub = [0] * n
    processes = 0
    for slot in _SLOT.iter_unpack(data[HEADER_BYTES:REGION_BYTES]):
        if slot[0] > 0:
            processes += 1
            for d in range(n):
                oversub[d] += slot[3 + n + d]
    return RegionReading(
        limit_bytes=tuple(limit),
        used_bytes=tuple(used),
        oversub_bytes=tuple(oversub),
        busy_ns=tuple(busy),
        sm_limit=int(sm_limit),
        processes=processes,
    )
