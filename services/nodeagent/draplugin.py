"""The node agent as a kubelet DRA plugin (dra v1 and plugin registration v1, over grpcio):
it publishes the node's ResourceSlice, and prepares the claims kube-scheduler allocated from
it as CDI devices that give each container its limits, the library and its region.

Prepared claims are checkpointed (`<state>/dra-checkpoint.json`, written durably) so a plugin
restart neither forgets nor redoes them; a claim prepared twice is prepared once. The region
and limits of a claim live under `<vgpu-root>/dra/`, apart from the device plugin's (whose
sweep removes what the kubelet's PodResources API does not list)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import msgspec
from nats.aio.client import Client

from services.nodeagent.core import dra
from services.nodeagent.core.containerspec import (
    CONTROL_NODES,
    REGION_FILE,
    ContainerSpec,
    HostLayout,
    limits_text,
    preload_text,
)
from services.nodeagent.core.containerusage import Busy, RegionOwner, container_samples
from services.nodeagent.core.inventory import SharingPolicy
from services.nodeagent.core.readings import DeviceReading, DriverInfo
from services.nodeagent.hostfiles import write_atomically
from services.nodeagent.kubeletapi.dra.v1 import api_pb2 as dra_pb
from services.nodeagent.kubeletapi.dra.v1 import api_pb2_grpc as dra_grpc
from services.nodeagent.kubeletapi.pluginregistration.v1 import api_pb2 as reg_pb
from services.nodeagent.kubeletapi.pluginregistration.v1 import api_pb2_grpc as reg_grpc
from services.nodeagent.regionfiles import RegionReader
from shared.errors import Conflict, HamiError, NotFound
from shared.kube.client import KubeClient
from shared.schemas.base import node_token
from shared.schemas.usage import USAGE, usage_codec

log = logging.getLogger("hami.nodeagent.dra")
SUPPORTED = ["v1.DRAPlugin"]


class PreparedDevice(msgspec.Struct, frozen=True):
    request_names: list[str]
    pool_name: str
    device_name: str
    cdi_device_ids: list[str]
    share_id: str | None = None


class ClaimGrant(msgspec.Struct, frozen=True):
    uuid: str
    memory_mib: int


class PreparedClaim(msgspec.Struct, frozen=True):
    namespace: str
    name: str
    devices: list[PreparedDevice]
    cdi_spec: str
    key: str
    grants: list[ClaimGrant] = []
    """What the claim holds per device, in order (its usage samples' limits)."""
    pod: str = ""
    """The pod the claim was reserved for when prepared (its usage samples' pod)."""


class Checkpoint(msgspec.Struct):
    version: int = 1
    claims: dict[str, PreparedClaim] = {}


@dataclass
class DraDriver:
    node: str
    kube: KubeClient
    layout: HostLayout
    """Under `<vgpu-root>/dra`: the claims' regions and limits, and a preload file."""
    policy: SharingPolicy
    driver: DriverInfo
    cdi_dir: Path
    checkpoint_path: Path
    readings: dict[str, DeviceReading] = field(default_factory=dict)
    generation: int = 0
    _published: Mapping[str, Any] | None = None
    _checkpoint: Checkpoint = field(default_factory=Checkpoint)
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    control_nodes: tuple[str, ...] = ()
    _busy: dict[str, Busy] = field(default_factory=dict)
    registered: asyncio.Event = field(default_factory=asyncio.Event)
    """Set when the kubelet accepted the plugin (NotifyRegistrationStatus)."""

    def load(self) -> None:
        """The checkpoint of an earlier run (a corrupt one stops the start: the claims it
        names would otherwise be prepared again beside what is there)."""
        write_atomically(self.layout.preload, preload_text())
        self.control_nodes = tuple(p for p in CONTROL_NODES if os.path.exists(p))
        try:
            data = self.checkpoint_path.read_bytes()
        except FileNotFoundError:
            return
        try:
            self._checkpoint = msgspec.json.decode(data, type=Checkpoint)
        except msgspec.DecodeError as e:
            raise HamiError(
                f"DRA checkpoint {self.checkpoint_path} is unreadable ({e}): move it aside "
                "once the claims it names are unprepared"
            ) from None

    def _save(self) -> None:
        write_atomically(
            self.checkpoint_path, msgspec.json.encode(self._checkpoint).decode(), durable=True
        )

    async def publish(self, readings: Sequence[DeviceReading]) -> None:
        """The node's ResourceSlice, replaced when the devices (or their health) changed.
        Only once the kubelet has registered the plugin: a device the scheduler can allocate
        is one the kubelet can prepare."""
        self.readings = {r.uuid: r for r in readings}
        if not self.registered.is_set():
            return
        body = dra.resource_slice(self.node, readings, self.policy, self.driver, self.generation)
        if (
            self._published is not None
            and self._published["spec"]["devices"] == (body["spec"]["devices"])
        ):
            return
        name = dra.slice_name(self.node)
        try:
            current = await self.kube.get_resource_slice(name)
        except NotFound:
            current = None
        version = None if current is None else current["metadata"]["resourceVersion"]
        if current is not None:
            before = current["spec"].get("pool", {}).get("generation", 0)
            self.generation = max(self.generation, int(before) + 1)
        body["spec"]["pool"]["generation"] = self.generation
        try:
            await self.kube.put_resource_slice(body, version)
        except Conflict:
            return  # changed meanwhile: the next heartbeat publishes again
        self._published = body
        log.info(
            "resource slice published",
            extra={"slice": name, "devices": len(body["spec"]["devices"]), "gen": self.generation},
        )

    async def withdraw(self) -> None:
        with contextlib.suppress(NotFound):
            await self.kube.delete_resource_slice(dra.slice_name(self.node))

    async def prepare(self, namespace: str, name: str, uid: str) -> list[PreparedDevice]:
        async with self._lock:
            done = self._checkpoint.claims.get(uid)
            if done is not None:
                return done.devices  # prepared twice: prepared once
            claim = await self.kube.get_resource_claim(namespace, name)
            if claim["metadata"].get("uid") != uid:
                raise dra.ClaimRefused(f"claim {namespace}/{name} was recreated (uid changed)")
            if not self.layout.library.is_file():
                raise dra.ClaimRefused(
                    f"the isolation library {self.layout.library} is missing on {self.node}"
                )
            readings = list(self.readings.values())
            results = dra.claim_results(claim, self.node, readings, self.policy)
            spec = dra.claim_spec(claim, results, self.readings, self.layout, self.control_nodes)
            key = dra.claim_key(uid)
            path = self.cdi_dir / f"hami-{uid}.json"
            await asyncio.to_thread(self._write_host_side, key, spec, path, uid, results)
            devices = [
                PreparedDevice(
                    request_names=[r.request],
                    pool_name=self.node,
                    device_name=r.device,
                    cdi_device_ids=dra.cdi_ids(uid, r),
                    share_id=r.share_id,
                )
                for r in results
            ]
            reserved = (claim.get("status") or {}).get("reservedFor") or []
            pod = next(
                (str(r.get("name", "")) for r in reserved if r.get("resource") == "pods"), ""
            )
            self._checkpoint.claims[uid] = PreparedClaim(
                namespace,
                name,
                devices,
                str(path),
                key,
                grants=[ClaimGrant(r.grant.uuid, r.grant.memory_mib) for r in results],
                pod=pod,
            )
            await asyncio.to_thread(self._save)
            log.info(
                "claim prepared",
                extra={
                    "claim": f"{namespace}/{name}",
                    "devices": [r.grant.uuid for r in results],
                    "memory_mib": [r.grant.memory_mib for r in results],
                    "cores": [r.grant.cores for r in results],
                },
            )
            return devices

    def _write_host_side(
        self,
        key: str,
        spec: ContainerSpec,
        cdi_path: Path,
        uid: str,
        results: Sequence[dra.Result],
    ) -> None:
        # Limits first, then the region, then the CDI spec that points at both: a spec the
        # runtime can see always has its limits.
        write_atomically(self.layout.limits_file(key), limits_text(spec), 0o444)
        self.layout.limits_file(key).parent.chmod(0o755)
        region = self.layout.region_dir(key)
        region.mkdir(parents=True, exist_ok=True)
        region.chmod(0o777)  # the container's processes (any uid) share the region file
        region.parent.chmod(0o711)
        text = msgspec.json.encode(dra.cdi_spec(uid, results, spec)).decode()
        write_atomically(cdi_path, text, 0o644)

    async def publish_usage(self, nc: Client, regions: RegionReader) -> None:
        """Each prepared claim's usage from its region, as the device plugin's containers'
        (allocation `claim/<uid>`, the claim's namespace, the pod it was reserved for)."""
        subject = f"{USAGE}.{node_token(self.node)}"
        for uid, claim in list(self._checkpoint.claims.items()):
            path = self.layout.region_dir(claim.key) / REGION_FILE
            reading = await asyncio.to_thread(regions.read, claim.key, path)
            owner = RegionOwner(
                namespace=claim.namespace,
                pod=claim.pod or claim.name,
                pod_uid="",
                container="",
                allocation_id=f"claim/{uid}",
                devices=[g.uuid for g in claim.grants],
                memory_mib=[g.memory_mib for g in claim.grants],
            )
            samples, busy = container_samples(
                owner, reading, self.node, time.time(), self._busy.get(uid)
            )
            for sample in samples:
                await nc.publish(subject, usage_codec.encode(sample))
            if busy is not None:
                self._busy[uid] = busy
        for gone in [k for k in self._busy if k not in self._checkpoint.claims]:
            del self._busy[gone]

    async def unprepare(self, uid: str) -> None:
        async with self._lock:
            done = self._checkpoint.claims.get(uid)
            if done is None:
                return  # unknown or unprepared already: nothing to undo
            await asyncio.to_thread(self._remove_host_side, done)
            del self._checkpoint.claims[uid]
            await asyncio.to_thread(self._save)
            log.info("claim unprepared", extra={"claim": f"{done.namespace}/{done.name}"})

    def _remove_host_side(self, done: PreparedClaim) -> None:
        Path(done.cdi_spec).unlink(missing_ok=True)  # first: nothing new starts with it
        self.layout.limits_file(done.key).unlink(missing_ok=True)
        region = self.layout.region_dir(done.key)
        for child in region.glob("*") if region.is_dir() else ():
            child.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            region.rmdir()


class DraServicer(dra_grpc.DRAPluginServicer):
    def __init__(self, driver: DraDriver) -> None:
        self.driver = driver

    async def NodePrepareResources(
        self, request: dra_pb.NodePrepareResourcesRequest, context: Any
    ) -> dra_pb.NodePrepareResourcesResponse:
        reply = dra_pb.NodePrepareResourcesResponse()
        for claim in request.claims:
            answer = reply.claims[claim.uid]  # every claim gets an entry, or the kubelet retries
            try:
                devices = await self.driver.prepare(claim.namespace, claim.name, claim.uid)
            except (dra.ClaimRefused, HamiError, OSError) as e:
                log.warning(
                    "claim not prepared",
                    extra={"claim": f"{claim.namespace}/{claim.name}", "reason": str(e)},
                )
                answer.error = f"HAMi: {e}"
                continue
            for d in devices:
                device = answer.devices.add(
                    request_names=d.request_names,
                    pool_name=d.pool_name,
                    device_name=d.device_name,
                    cdi_device_ids=d.cdi_device_ids,
                )
                if d.share_id:
                    device.share_id = d.share_id
        return reply

    async def NodeUnprepareResources(
        self, request: dra_pb.NodeUnprepareResourcesRequest, context: Any
    ) -> dra_pb.NodeUnprepareResourcesResponse:
        reply = dra_pb.NodeUnprepareResourcesResponse()
        for claim in request.claims:
            answer = reply.claims[claim.uid]
            try:
                await self.driver.unprepare(claim.uid)
            except OSError as e:
                answer.error = f"HAMi: {e}"
        return reply


class RegistrationServicer(reg_grpc.RegistrationServicer):
    def __init__(self, endpoint: Path, registered: asyncio.Event) -> None:
        self.endpoint = endpoint
        self.registered = registered

    async def GetInfo(self, request: reg_pb.InfoRequest, context: Any) -> reg_pb.PluginInfo:
        return reg_pb.PluginInfo(
            type="DRAPlugin",
            name=dra.DRIVER,
            endpoint=str(self.endpoint),
            supported_versions=SUPPORTED,
        )

    async def NotifyRegistrationStatus(
        self, request: reg_pb.RegistrationStatus, context: Any
    ) -> reg_pb.RegistrationStatusResponse:
        if request.plugin_registered:
            log.info("registered with the kubelet", extra={"driver": dra.DRIVER})
            self.registered.set()
        else:
            log.warning("the kubelet refused the plugin", extra={"error": request.error})
        return reg_pb.RegistrationStatusResponse()


async def serve_dra_plugin(
    driver: DraDriver, plugins_dir: Path, registry_dir: Path, stop: asyncio.Event
) -> None:
    """Serve the DRA service and the registration socket until stopped; removing the
    registration socket deregisters (the kubelet's plugin watcher)."""
    driver.load()
    endpoint = plugins_dir / dra.DRIVER / "dra.sock"
    registration = registry_dir / f"{dra.DRIVER}-reg.sock"
    for path in (endpoint, registration):
        path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    server = grpc.aio.server()
    dra_grpc.add_DRAPluginServicer_to_server(DraServicer(driver), server)
    server.add_insecure_port(f"unix://{endpoint}")
    registrar = grpc.aio.server()
    reg_grpc.add_RegistrationServicer_to_server(
        RegistrationServicer(endpoint, driver.registered), registrar
    )
    registrar.add_insecure_port(f"unix://{registration}")
    await server.start()
    await registrar.start()
    log.info("DRA plugin serving", extra={"endpoint": str(endpoint), "driver": dra.DRIVER})
    try:
        registered = asyncio.ensure_future(driver.registered.wait())
        stopped = asyncio.ensure_future(stop.wait())
        await asyncio.wait((registered, stopped), return_when=asyncio.FIRST_COMPLETED)
        registered.cancel()
        stopped.cancel()
        if driver.registered.is_set():
            try:  # at once, not a heartbeat later (which retries what fails here)
                await driver.publish(list(driver.readings.values()))
            except HamiError as e:
                log.warning("resource slice not published yet", extra={"error": str(e)})
        await stop.wait()
    finally:
        with contextlib.suppress(FileNotFoundError):
            registration.unlink()
        await registrar.stop(1)
        await server.stop(2)
