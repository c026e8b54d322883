"""Allocation records that cannot be read fail closed: what they name stays out of use.

Deleting or ignoring an unreadable record would hand its devices out a second time. Whatever
can still be made out of it (device uuids, else its node) is kept from new placements until
an operator repairs or deletes the record; a record that names nothing keeps everything out."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from msgspec.structs import replace

from shared.schemas.inventory import NodeInventory

EVERYTHING = "*"


@dataclass(frozen=True, slots=True)
class Quarantine:
    devices: dict[str, str] = field(default_factory=dict)
    """device uuid -> the record key that names it"""
    nodes: dict[str, str] = field(default_factory=dict)
    """node (or EVERYTHING) -> the record key"""

    def __bool__(self) -> bool:
        return bool(self.devices or self.nodes)

    def add(self, key: str, value: bytes) -> None:
        uuids, node = _names_in(value)
        if uuids:
            self.devices.update(dict.fromkeys(uuids, key))
        else:
            self.nodes[node or EVERYTHING] = key

    def remove(self, key: str) -> None:
        for table in (self.devices, self.nodes):
            for name in [n for n, k in table.items() if k == key]:
                del table[name]

    def apply(self, inventory: NodeInventory) -> NodeInventory:
        """The inventory with quarantined devices marked unhealthy (so nothing is placed)."""
        whole = inventory.node in self.nodes or EVERYTHING in self.nodes
        if not whole and not any(d.uuid in self.devices for d in inventory.devices):
            return inventory
        devices = tuple(
            replace(d, healthy=False) if whole or d.uuid in self.devices else d
            for d in inventory.devices
        )
        return replace(inventory, devices=devices)

    def describe(self) -> list[str]:
        keys: dict[str, list[str]] = {}
        for name, key in [*self.devices.items(), *self.nodes.items()]:
            keys.setdefault(key, []).append("all nodes" if name == EVERYTHING else name)
        return [
            f"allocation record {key} is unreadable: {', '.join(sorted(names))} kept out of use "
            "until it is repaired or deleted"
            for key, names in sorted(keys.items())
        ]


_UUID = re.compile(rb'"uuid"\s*:\s*"([^"\\]{1,128})"')
_NODE = re.compile(rb'"node"\s*:\s*"([^"\\]{1,253})"')


def _names_in(value: bytes) -> tuple[list[str], str | None]:
    """Device uuids and the node a record names, read loosely: a torn or half-written record
    (the usual way one becomes unreadable) still says them."""
    uuids = list(dict.fromkeys(m.decode(errors="replace") for m in _UUID.findall(value)))
    node = _NODE.search(value)
    return uuids, node.group(1).decode(errors="replace") if node else None
