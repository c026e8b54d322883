"""Where the inventory's host CPU and memory come from (services/nodeagent/core/hostfigures.py
says what they are).

On a Kubernetes node the figures come from the node's status and its pods, read at most every
READ_EVERY_S; on a machine of its own (local mode) from the machine, with nothing else counted.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from services.nodeagent.core.hostfigures import HostFigures, node_figures
from shared.errors import HamiError
from shared.kube.client import KubeClient
from shared.resources import ResourceNames

log = logging.getLogger("hami.nodeagent")

READ_EVERY_S = 30.0
"""Pods come and go faster than this, but the figures only weigh placements (kube-scheduler
filters on CPU and memory itself): a list of the node's pods per heartbeat is not worth it."""


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
    """The Kubernetes node's figures, read at most every READ_EVERY_S; the last good ones
    while the API server is away (none yet: not known)."""

    def __init__(
        self,
        kube: KubeClient,
        node: str,
        kinds: Iterable[ResourceNames],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.kube = kube
        self.node = node
        self.kinds = tuple(kinds)
        self._clock = clock
        self._at = -READ_EVERY_S
        self.figures: HostFigures | None = None

    async def read(self) -> HostFigures | None:
        if self._clock() - self._at < READ_EVERY_S:
            return self.figures
        try:
            node = await self.kube.get_node(self.node)
            pods, _ = await self.kube.list_pods(field_selector=f"spec.nodeName={self.node}")
        except HamiError as e:
            log.warning("node's host figures not read", extra={"node": self.node, "error": str(e)})
            return self.figures
        self._at = self._clock()
        self.figures = node_figures(node, pods, self.kinds)
        return self.figures
