"""Per-job usage in local mode: each `hami run` job on this node has its region at
`<jobs dir>/<allocation id>.cache` (services/local/run.py); the allocation record says which
devices and limits it holds. Read only, as the pods' regions are (podusage.py)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from nats.aio.client import Client

from services.nodeagent.allocations import NodeAllocations
from services.nodeagent.core.containerusage import Busy, RegionOwner, container_samples
from services.nodeagent.regionfiles import RegionReader
from shared.schemas.base import node_token
from shared.schemas.placement import AllocationRecord
from shared.schemas.usage import USAGE, usage_codec


def owner_of(record: AllocationRecord) -> RegionOwner:
    """A local job's region as the pods' owner records describe theirs (one container)."""
    grants = [g for container in record.containers for g in container]
    return RegionOwner(
        namespace="",
        pod="",
        pod_uid="",
        container="",
        allocation_id=record.allocation_id,
        devices=[g.uuid for g in grants],
        memory_mib=[g.memory_mib for g in grants],
    )


class LocalJobUsage:
    def __init__(
        self,
        node: str,
        jobs_dir: Path,
        records: NodeAllocations,
        nc: Client,
        regions: RegionReader,
    ) -> None:
        self.node = node
        self.jobs_dir = jobs_dir
        self.records = records
        self.regions = regions
        self._nc = nc
        self._busy: dict[str, Busy] = {}

    async def publish(self) -> None:
        subject = f"{USAGE}.{node_token(self.node)}"
        jobs = self.records.local_jobs()
        for record in jobs:
            key = record.allocation_id
            path = self.jobs_dir / f"{key}.cache"
            reading = await asyncio.to_thread(self.regions.read, key, path)
            samples, busy = container_samples(
                owner_of(record), reading, self.node, time.time(), self._busy.get(key)
            )
            for sample in samples:
                await self._nc.publish(subject, usage_codec.encode(sample))
            if busy is not None:
                self._busy[key] = busy
        live = {r.allocation_id for r in jobs}
        for key in [k for k in self._busy if k not in live]:
            del self._busy[key]
