"""Per-container usage on a Kubernetes node: the kubelet's PodResources API says which
containers hold our devices; each one's region (read only) says what it uses. Regions of
containers that are gone are removed, and their samples stop."""

from __future__ import annotations

import asyncio
import logging
import shutil
import time
from pathlib import Path

import grpc
import msgspec
from nats.aio.client import Client

from services.nodeagent.core.containerspec import REGION_FILE, HostLayout
from services.nodeagent.core.containerusage import (
    Busy,
    RegionOwner,
    container_samples,
    gone,
    listed_containers,
    owner_decoder,
)
from services.nodeagent.core.region import RegionReading
from services.nodeagent.kubeletapi.podresources.v1 import api_pb2 as pb
from services.nodeagent.kubeletapi.podresources.v1 import api_pb2_grpc as pb_grpc
from services.nodeagent.regionfiles import RegionReader
from shared.schemas.base import node_token
from shared.schemas.usage import USAGE, usage_codec

log = logging.getLogger("hami.nodeagent.podusage")


async def list_pod_resources(socket: Path, resource: str) -> set[tuple[str, str, str]]:
    async with grpc.aio.insecure_channel(f"unix://{socket}") as channel:
        reply = await pb_grpc.PodResourcesListerStub(channel).List(
            pb.ListPodResourcesRequest(), timeout=5
        )
    return listed_containers(
        (
            (
                p.namespace,
                p.name,
                [(c.name, [d.resource_name for d in c.devices]) for c in p.containers],
            )
            for p in reply.pod_resources
        ),
        resource,
    )


class ContainerUsage:
    def __init__(
        self,
        node: str,
        layout: HostLayout,
        socket: Path,
        resource: str,
        nc: Client,
        *,
        grace_s: float = 60.0,
        regions: RegionReader | None = None,
    ) -> None:
        self.node = node
        self.regions = regions if regions is not None else RegionReader()
        self.layout = layout
        self.socket = socket
        self.resource = resource
        self._nc = nc
        self.grace_s = grace_s
        self._busy: dict[str, Busy] = {}

    def _scan(self) -> tuple[dict[str, RegionOwner], dict[str, float]]:
        now = time.time()
        owners = {}
        for path in (self.layout.root / "owners").glob("*.json"):
            try:
                owner = owner_decoder.decode(path.read_bytes())
            except (OSError, msgspec.DecodeError) as e:
                log.warning("unreadable owner record", extra={"path": str(path), "error": str(e)})
                continue
            owners[owner.key] = owner
        ages = {}
        containers = self.layout.root / "containers"
        for region in containers.iterdir() if containers.is_dir() else ():
            try:
                ages[region.name] = now - region.stat().st_mtime
            except OSError:
                continue
        return owners, ages

    def _read(self, key: str) -> RegionReading | None:
        return self.regions.read(key, self.layout.region_dir(key) / REGION_FILE)

    def _remove(self, key: str) -> None:
        shutil.rmtree(self.layout.region_dir(key), ignore_errors=True)
        self.layout.owner_file(key).unlink(missing_ok=True)
        self.layout.limits_file(key).unlink(missing_ok=True)
        self._busy.pop(key, None)
        log.info("region of a finished container removed", extra={"container": key})

    async def publish(self) -> None:
        try:
            listed = await list_pod_resources(self.socket, self.resource)
        except grpc.aio.AioRpcError as e:  # kubelet away: remove nothing, publish nothing
            log.warning("pod resources unavailable", extra={"error": e.details() or str(e.code())})
            return
        owners, ages = await asyncio.to_thread(self._scan)
        for key in gone(owners, ages, listed, self.grace_s):
            await asyncio.to_thread(self._remove, key)
        subject = f"{USAGE}.{node_token(self.node)}"
        for key, owner in owners.items():
            if owner.listed_as not in listed:
                continue
            reading = await asyncio.to_thread(self._read, key)
            now = time.time()
            samples, busy = container_samples(owner, reading, self.node, now, self._busy.get(key))
            for sample in samples:
                await self._nc.publish(subject, usage_codec.encode(sample))
            if busy is not None:
                self._busy[key] = busy
