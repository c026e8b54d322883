"""The agent's Node object as the API server has it, read once for every reader (the check of
vendors' device plugins, the host figures) at most every READ_EVERY_S."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from shared.errors import HamiError
from shared.kube.client import KubeClient

log = logging.getLogger("hami.nodeagent")

READ_EVERY_S = 30.0
"""What is read of the node (its allocatable, its pods' requests) changes far less often than
the heartbeat, and only weighs decisions kube-scheduler also checks: a read per beat is not
worth it."""


class NodeObject:
    """The last good read of the node (None before the first); while the API server is away
    the last one stands and every call tries again."""

    def __init__(
        self, kube: KubeClient, name: str, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.kube = kube
        self.name = name
        self.clock = clock
        self._seen: Mapping[str, Any] | None = None
        self._at = -READ_EVERY_S

    async def get(self) -> Mapping[str, Any] | None:
        if self.clock() - self._at >= READ_EVERY_S:
            try:
                self._seen = await self.kube.get_node(self.name)
                self._at = self.clock()
            except HamiError as e:
                log.warning("node not read", extra={"node": self.name, "error": str(e)})
        return self._seen
