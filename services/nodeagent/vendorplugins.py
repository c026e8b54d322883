"""Devices of kinds this agent leaves to their vendors' device plugins are offered only while
such a plugin serves them here: the node's allocatable lists the kind's count resource.

Without one, kube-scheduler and the allocator would still place pods on the node (the kinds'
resources are the extender's, ignored by kube-scheduler) and the kubelet would start them with
no device at all, holding an allocation nobody uses (seen on a real kubelet). Until a vendor's
plugin advertises the resource, the kind's devices are published unhealthy (fails closed)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from services.nodeagent.core.readings import DeviceReading
from services.nodeagent.nodeobject import NodeObject
from shared.devicekinds import KindRegistry

log = logging.getLogger("hami.nodeagent.vendorplugins")


def advertised(node: Mapping[str, Any], resource: str) -> bool:
    """Whether the node's allocatable has some of ``resource``."""
    status = node.get("status")
    allocatable = status.get("allocatable") if isinstance(status, Mapping) else None
    if not isinstance(allocatable, Mapping):
        return False
    value = str(allocatable.get(resource, "0")).strip()
    return value not in ("", "0") and not value.startswith("-")


def offered(
    readings: Sequence[DeviceReading],
    unserved: Mapping[str, str],
    node: Mapping[str, Any] | None,
) -> list[DeviceReading]:
    """``readings`` with the devices of ``unserved`` kinds (kind: count resource) unhealthy
    unless ``node`` (None: not read yet) advertises the kind's resource."""
    out = []
    for reading in readings:
        resource = unserved.get(reading.kind)
        if resource is not None and (node is None or not advertised(node, resource)):
            reading = replace(reading, healthy=False)
        out.append(reading)
    return out


def unserved_kinds(registry: KindRegistry, serves: Callable[[Any], bool]) -> dict[str, str]:
    """The kinds left to vendors' plugins, with their count resources."""
    return {
        k.name: k.resources.count for k in registry.kinds if k.name != "nvidia" and not serves(k)
    }


class VendorPluginCheck:
    """The node as the kubelet reports it (nodeobject.py: read at most every 30 s), looked at
    only while the node has devices of kinds left to vendors' plugins."""

    def __init__(
        self, node: NodeObject, registry: KindRegistry, serves: Callable[[Any], bool]
    ) -> None:
        self.node = node
        self._unserved = unserved_kinds(registry, serves)
        self._told: set[str] = set()

    async def apply(self, readings: Sequence[DeviceReading]) -> list[DeviceReading]:
        present = {r.kind: self._unserved[r.kind] for r in readings if r.kind in self._unserved}
        if not present:
            return list(readings)
        seen = await self.node.get()
        for kind, resource in present.items():
            served = seen is not None and advertised(seen, resource)
            if not served and kind not in self._told:
                self._told.add(kind)
                log.warning(
                    "no device plugin advertises this kind here: its devices are not offered",
                    extra={"node": self.node.name, "kind": kind, "resource": resource},
                )
            elif served:
                self._told.discard(kind)
        return offered(readings, present, seen)
