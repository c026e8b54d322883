"""HAMi's device annotation (`hami.io/vgpu-devices-to-allocate` / `-allocated`), in one place for
the allocator that writes it and the node agent that reads it back at Allocate.

Each device is `uuid,type,memory_mib,cores:`; each container's devices end with `;`, and a
container without devices is an empty entry, so positions follow `spec.containers`."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import NamedTuple

from shared.errors import InvalidRequest

MAX_TEXT = 64 * 1024
MAX_DEVICES_PER_CONTAINER = 16
_UUID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_TYPE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_NUMBER = re.compile(r"^[0-9]{1,12}$")


class AnnotatedDevice(NamedTuple):
    uuid: str
    type: str
    memory_mib: int
    cores: int


def encode(containers: Sequence[Sequence[AnnotatedDevice]]) -> str:
    return "".join(
        "".join(f"{d.uuid},{d.type},{d.memory_mib},{d.cores}:" for d in devices) + ";"
        for devices in containers
    )


def _device(item: str) -> AnnotatedDevice:
    fields = item.split(",")
    if len(fields) != 4:
        raise InvalidRequest(f"malformed device entry {item[:80]!r}: expected uuid,type,mem,cores")
    uuid, kind, memory, cores = fields
    if not _UUID.match(uuid) or not _TYPE.match(kind):
        raise InvalidRequest(f"malformed device entry {item[:80]!r}: bad uuid or type")
    if not _NUMBER.match(memory) or not _NUMBER.match(cores):
        raise InvalidRequest(
            f"malformed device entry {item[:80]!r}: memory and cores must be whole numbers >= 0"
        )
    return AnnotatedDevice(uuid, kind, int(memory), int(cores))


def decode(text: str) -> list[list[AnnotatedDevice]]:
    """The inverse of encode; anything else is refused with InvalidRequest (never guessed at)."""
    if len(text) > MAX_TEXT:
        raise InvalidRequest(f"device annotation is {len(text)} bytes; at most {MAX_TEXT}")
    parts = text.split(";")
    if parts[-1]:
        raise InvalidRequest("malformed device annotation: the last container has no ';'")
    out = []
    for part in parts[:-1]:
        items = part.split(":")
        if items[-1]:
            raise InvalidRequest(f"malformed device entry {items[-1][:80]!r}: no closing ':'")
        devices = [_device(item) for item in items[:-1]]
        if len(devices) > MAX_DEVICES_PER_CONTAINER:
            raise InvalidRequest(f"a container names {len(devices)} devices; at most 16")
        out.append(devices)
    return out
