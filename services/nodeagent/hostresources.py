"""Where the inventory's host CPU and memory come from (services/nodeagent/core/hostfigures.py
says what they are).

On a Kubernetes node the figures come from the node's status and its pods, read at most every
READ_EVERY_S; on a machine of its own (local mode) from the machine, with nothing else counted.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from pathlib import Path

from services.nodeagent.core.hostfigures import HostFigures, node_figures
from services.nodeagent.nodeobject import READ_EVERY_S, NodeObject
from shared.errors import HamiError
from shared.resources import ResourceNames

log = logging.getLogger("hami.nodeagent")


def machine_figures(meminfo: Path = Path("/proc/meminfo")) -> HostFigures:
    """This machine's CPUs (those the process may run on) and memory; nothing else counted."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 0
    memory = None
    try:
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory = int(line.split()[1]) // 1024  # kB
                break
    except (OSError, ValueError, IndexError):
        memory = None
    return HostFigures(cpu_milli=cpus * 1000 or None, memory_mib=memory)


class NodeHostReader:
    """The Kubernetes node's figures: its allocatable from the shared node read, its pods
    listed as often (READ_EVERY_S); the last good figures while the API server is away (none
    yet: not known)."""

    def __init__(self, node: NodeObject, kinds: Iterable[ResourceNames]) -> None:
        self.node = node
        self.kinds = tuple(kinds)
        self._at = -READ_EVERY_S
        self.figures: HostFigures | None = None

    async def read(self) -> HostFigures | None:
        if self.node.clock() - self._at < READ_EVERY_S:
            return self.figures
        status = await self.node.get()
        if status is None:
            return self.figures
        try:
            pods, _ = await self.node.kube.list_pods(
                field_selector=f"spec.nodeName={self.node.name}"
            )
        except HamiError as e:
            log.warning("node's pods not listed", extra={"node": self.node.name, "error": str(e)})
            return self.figures
        self._at = self.node.clock()
        self.figures = node_figures(status, pods, self.kinds)
        return self.figures
