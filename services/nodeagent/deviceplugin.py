"""The kubelet device plugin (API v1beta1) over gRPC: the I/O shell around core/handshake.py,
core/containerspec.py and core/virtual.py.

It serves `DevicePlugin` on a socket in the kubelet's device-plugin directory and registers
with `kubelet.sock`. A kubelet that restarts re-creates its socket and deletes every plugin
socket; the plugin notices either and serves and registers again by itself."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import msgspec
from opentelemetry.context import Context
from opentelemetry.trace import Span, SpanKind

from services.nodeagent.allocations import NodeAllocations
from services.nodeagent.core import handshake, virtual
from services.nodeagent.core.containerspec import (
    CONTROL_NODES,
    MIG_MINORS,
    ContainerSpec,
    HostLayout,
    container_spec,
    hardware_isolated,
    limits_text,
    mig_container_spec,
    preload_text,
)
from services.nodeagent.core.containerusage import RegionOwner
from services.nodeagent.core.cumask import cus_for
from services.nodeagent.core.inventory import SharingPolicy, device_info
from services.nodeagent.core.readings import DeviceReading
from services.nodeagent.core.vendorspec import VendorHost, needs_cu_mask, vendor_container_spec
from services.nodeagent.culedger import CuLedger
from services.nodeagent.hostfiles import write_atomically
from services.nodeagent.kubeletapi.deviceplugin.v1beta1 import api_pb2 as pb
from services.nodeagent.kubeletapi.deviceplugin.v1beta1 import api_pb2_grpc as pb_grpc
from services.nodeagent.mig import MigDevices
from services.nodeagent.migwork import MIG_INSTANCES, MigEntry, MigWork, with_entries
from shared import tracing
from shared.devicekinds import NVIDIA, DeviceKind
from shared.errors import HamiError, InvalidRequest
from shared.kube.client import KubeClient
from shared.resources import BIND_TIME
from shared.runloop import sleep_or_stop
from shared.vendorkinds import VENDOR_KINDS

log = logging.getLogger("hami.nodeagent.deviceplugin")
API_VERSION = "v1beta1"
KUBELET_SOCKET = "kubelet.sock"
RECORD_WAIT_S = 5.0
RECENT_BIND_S = 30.0
ANNOTATION_TYPES = {k.name: k.annotation_type for k in VENDOR_KINDS.kinds}
"""Every kind's device type in HAMi's annotations."""
TO_ALLOCATE = VENDOR_KINDS.to_allocate_annotations()
"""Every kind's to-allocate annotation: a pod is served once all are empty."""


def socket_name(resource: str) -> str:
    return "hami-" + resource.replace("/", "-").replace(".", "-") + ".sock"


class DeviceList:
    """The devices of one kind the node agent last read (each kind is its own plugin and
    resource); ListAndWatch streams follow its changes."""

    def __init__(
        self, split_count: int, kind: str = "nvidia", policy: SharingPolicy | None = None
    ) -> None:
        self.split_count = split_count
        self.kind = kind
        self.policy = policy or SharingPolicy(split_count=split_count)
        self.readings: dict[str, DeviceReading] = {}
        self.everything: dict[str, DeviceReading] = {}
        """Every kind's devices on the node (a pod mixing kinds is checked whole)."""
        self.advertised: tuple[virtual.VirtualDevice, ...] = ()
        self.version = 0
        self._changed = asyncio.Condition()

    def _slots(self, reading: DeviceReading) -> int:
        """How many containers may hold a device at once: NVIDIA's split count (its MIG
        instances and geometry are bounded by the allocator), another kind's by its isolation
        (a whole device: one)."""
        if self.kind == "nvidia":
            return self.split_count
        return device_info(reading, self.policy).split_count

    async def update(self, readings: Sequence[DeviceReading]) -> None:
        self.everything = {r.uuid: r for r in readings}
        readings = [r for r in readings if r.kind == self.kind]
        advertised = virtual.virtual_devices(readings, self._slots)
        self.readings = {r.uuid: r for r in readings}
        if advertised != self.advertised:
            self.advertised = advertised
            self.version += 1
            async with self._changed:
                self._changed.notify_all()

    async def changes(
        self, done: Callable[[], bool]
    ) -> AsyncIterator[tuple[virtual.VirtualDevice, ...]]:
        seen = -1
        while not done():
            if self.version != seen:
                seen = self.version
                yield self.advertised
            async with self._changed:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), 1.0)


def _device_message(device: virtual.VirtualDevice) -> pb.Device:
    topology = (
        pb.TopologyInfo(nodes=[pb.NUMANode(ID=device.numa_node)])
        if device.numa_node is not None
        else None
    )
    return pb.Device(
        ID=device.id, health="Healthy" if device.healthy else "Unhealthy", topology=topology
    )


def _response(spec: ContainerSpec) -> pb.ContainerAllocateResponse:
    return pb.ContainerAllocateResponse(
        envs=dict(spec.envs),
        mounts=[
            pb.Mount(container_path=m.container_path, host_path=m.host_path, read_only=m.read_only)
            for m in spec.mounts
        ],
        devices=[
            pb.DeviceSpec(
                container_path=d.container_path, host_path=d.host_path, permissions=d.permissions
            )
            for d in spec.devices
        ],
    )


@dataclass
class Allocation:
    """Allocate's work: find the pod, check it, prepare the host side, record progress."""

    node: str
    kube: KubeClient
    records: NodeAllocations
    devices: DeviceList
    layout: HostLayout
    policy: SharingPolicy
    control_nodes: tuple[str, ...] = ()
    mig: MigWork | None = None
    """Where this node makes MIG instances (`--gpu-mode mig`)."""
    mig_devices: MigDevices | None = None
    """The node's GPUs' MIG instances (whole ones are granted in `hami-core` mode)."""
    kind: DeviceKind = NVIDIA
    """Whose devices this plugin serves; another vendor's get its conventions."""
    vendor_host: VendorHost | None = None
    cu_ledger: CuLedger | None = None
    """Who holds which CUs of the node's AMD GPUs (compute shares as CU masks)."""

    def prepare_host(self) -> None:
        """The preload file every container mounts, written at start (and kept); the driver's
        control nodes this host has."""
        self.control_nodes = tuple(p for p in CONTROL_NODES if os.path.exists(p))
        if not self.layout.preload.is_file() or self.layout.preload.read_text() != preload_text():
            write_atomically(self.layout.preload, preload_text())

    async def _candidates(self) -> list[Mapping[str, Any]]:
        pods, _ = await self.kube.list_pods(field_selector=f"spec.nodeName={self.node}")
        pending = handshake.pending_pods(pods, self.node)
        # Give the ledger watch a moment for pods bound just now (bind writes the record first);
        # a pod bound long ago without a record is refused at once.
        now = time.time()
        for pod in pending:
            uid = str(pod["metadata"].get("uid", ""))
            bound = str(pod["metadata"].get("annotations", {}).get(BIND_TIME, ""))
            recent = bound.isdigit() and now - int(bound) < RECENT_BIND_S
            if recent and self.records.for_pod(uid) is None:
                await self.records.wait_for_pod(uid, RECORD_WAIT_S)
        return pending

    def _node_devices(self) -> dict[str, int]:
        return {
            uuid: device_info(r, self.policy).memory_mib
            for uuid, r in self.devices.everything.items()
        }

    async def _assign(self, count: int) -> tuple[handshake.Assignment, Context | None]:
        """The container's assignment, and its pod's trace context (shared/tracing.py)."""
        pods = await self._candidates()
        chosen = handshake.assign(
            pods,
            self.node,
            count,
            self.records.for_pod,
            self._node_devices(),
            ANNOTATION_TYPES,
            self.kind,
        )
        pod = next((p for p in pods if p["metadata"].get("uid") == chosen.pod_uid), None)
        return chosen, tracing.of_pod(pod)

    async def container(self, count: int) -> pb.ContainerAllocateResponse:
        """The answer for one container asking for ``count`` devices, or AllocateRefused (the
        pod, where known, is marked failed with the reason)."""
        started = time.monotonic()
        began = time.time_ns()
        try:
            chosen, parent = await self._assign(count)
        except handshake.AllocateRefused as e:
            with _allocate_span(None, began) as span:
                tracing.failed(span, str(e))
            await self._mark_failed(e)
            raise
        # The pod is known only now: the span starts when Allocate did, under the pod's trace.
        with _allocate_span(parent, began) as span:
            span.set_attribute("k8s.namespace.name", chosen.namespace)
            span.set_attribute("k8s.pod.name", chosen.pod)
            span.set_attribute("container.name", chosen.container)
            span.set_attribute("hami.allocation_id", chosen.allocation_id)
            span.set_attribute("hami.devices", [g.uuid for g in chosen.grants])
            try:
                return await self._prepared(chosen, started)
            except handshake.AllocateRefused as e:
                tracing.failed(span, str(e))
                raise

    async def _prepared(
        self, chosen: handshake.Assignment, started: float
    ) -> pb.ContainerAllocateResponse:
        try:
            readings = self.devices.readings
            if self.kind.name != NVIDIA.name:
                host = self.vendor_host or VendorHost(os.path.exists)
                masks = await self._cu_masks(chosen)
                spec = vendor_container_spec(self.kind, chosen, readings, host, masks)
                await self.kube.patch_pod_annotations(
                    chosen.namespace,
                    chosen.pod,
                    lambda a: handshake.consume(a, chosen, TO_ALLOCATE),
                )
            elif not self.layout.library.is_file():
                raise handshake.AllocateRefused(
                    f"the isolation library {self.layout.library} is missing on {self.node}"
                )
            elif hardware_isolated(chosen, readings):
                spec, made = await self._mig_container(chosen)
                await self.kube.patch_pod_annotations(
                    chosen.namespace,
                    chosen.pod,
                    lambda a: with_entries(
                        handshake.consume(a, chosen, TO_ALLOCATE), a.get(MIG_INSTANCES), made
                    ),
                )
            else:
                spec = container_spec(chosen, readings, self.layout, self.control_nodes)
                self._prepare_container(chosen, spec)
                await self.kube.patch_pod_annotations(
                    chosen.namespace,
                    chosen.pod,
                    lambda a: handshake.consume(a, chosen, TO_ALLOCATE),
                )
        except (HamiError, OSError) as e:
            refused = handshake.AllocateRefused(
                f"pod {chosen.namespace}/{chosen.pod} container {chosen.container}: {e}",
                pod=(chosen.namespace, chosen.pod),
            )
            await self._mark_failed(refused)
            raise refused from e
        log.info(
            "container allocated",
            extra={
                "pod": f"{chosen.namespace}/{chosen.pod}",
                "container": chosen.container,
                "devices": [g.uuid for g in chosen.grants],
                "allocate_ms": round((time.monotonic() - started) * 1000, 2),
            },
        )
        return _response(spec)

    async def _cu_masks(self, chosen: handshake.Assignment) -> list[tuple[int, ...] | None]:
        """The container's CUs on each GPU it has a compute share of (none: whole GPUs)."""
        if self.cu_ledger is None:  # only the AMD plugin has one
            return []
        shares = [(i, g) for i, g in enumerate(chosen.grants) if needs_cu_mask(g)]
        if not shares:
            return []
        readings = self.devices.readings
        wants = []
        for _, grant in shares:
            units = readings[grant.uuid].compute_units if grant.uuid in readings else 0
            if units <= 0:
                return []  # vendor_container_spec refuses it, saying why
            wants.append((grant.uuid, units, cus_for(grant.cores, units)))
        got = await self.cu_ledger.masks_for(chosen.allocation_id, chosen.key, wants)
        masks: list[tuple[int, ...] | None] = [None] * len(chosen.grants)
        for (i, _), cus in zip(shares, got, strict=True):
            masks[i] = cus
        return masks

    async def _mig_container(
        self, chosen: handshake.Assignment
    ) -> tuple[ContainerSpec, list[MigEntry]]:
        """MIG instances for the container: made where the allocator placed its partitions
        (recorded before the container gets them), or the whole instances it was granted."""
        made: list[MigEntry] = []
        if any(g.placement is not None for g in chosen.grants):
            if self.mig is None:
                raise InvalidRequest(f"{self.node} makes no MIG instances (not in mig mode)")
            made = await self.mig.instances_for(
                chosen.allocation_id, chosen.pod_uid, chosen.container, chosen.grants
            )
        by_position = {e.position: e for e in made}
        instances = [
            (by_position[i].uuid, by_position[i].gpu_instance, by_position[i].compute_instance)
            if i in by_position
            else (g.uuid, *_instance_ids(self.mig_devices, g.uuid, self.devices.readings))
            for i, g in enumerate(chosen.grants)
        ]
        minors = await asyncio.to_thread(_read_or_empty, Path(MIG_MINORS))
        spec = mig_container_spec(
            chosen, self.devices.readings, instances, self.control_nodes, minors
        )
        return spec, made

    def _prepare_container(self, chosen: handshake.Assignment, spec: ContainerSpec) -> None:
        # Read-only to the container (mounted so, and 0444): its processes are held to it.
        write_atomically(self.layout.limits_file(chosen.key), limits_text(spec), 0o444)
        self.layout.limits_file(chosen.key).parent.chmod(0o755)
        region = self.layout.region_dir(chosen.key)
        region.mkdir(parents=True, exist_ok=True)
        # The container's processes (any uid) create and share the region file here.
        region.chmod(0o777)
        region.parent.chmod(0o711)
        owner = RegionOwner(
            namespace=chosen.namespace,
            pod=chosen.pod,
            pod_uid=chosen.pod_uid,
            container=chosen.container,
            allocation_id=chosen.allocation_id,
            devices=[g.uuid for g in chosen.grants],
            memory_mib=[g.memory_mib for g in chosen.grants],
        )
        write_atomically(
            self.layout.owner_file(chosen.key), msgspec.json.encode(owner).decode(), 0o600
        )

    async def _mark_failed(self, e: handshake.AllocateRefused) -> None:
        log.warning("allocate refused", extra={"node": self.node, "reason": str(e)})
        if e.pod is None:
            return
        namespace, name = e.pod
        try:
            await self.kube.patch_pod_annotations(
                namespace, name, lambda _: handshake.refuse(str(e))
            )
        except HamiError as failure:  # the container still does not start; say so in the log
            log.warning(
                "could not mark the pod failed",
                extra={"pod": f"{namespace}/{name}", "error": str(failure)},
            )


def _allocate_span(parent: Context | None, began_ns: int) -> AbstractContextManager[Span]:
    """The kubelet's Allocate call (RPC semantic conventions)."""
    return tracing.tracer().start_as_current_span(
        f"{API_VERSION}.DevicePlugin/Allocate",
        context=parent,
        kind=SpanKind.SERVER,
        start_time=began_ns,
        attributes={
            "rpc.system": "grpc",
            "rpc.service": f"{API_VERSION}.DevicePlugin",
            "rpc.method": "Allocate",
        },
    )


class DevicePluginServicer(pb_grpc.DevicePluginServicer):
    def __init__(self, allocation: Allocation, done: Callable[[], bool]) -> None:
        self.allocation = allocation
        self.done = done

    async def GetDevicePluginOptions(
        self, request: pb.Empty, context: Any
    ) -> pb.DevicePluginOptions:
        return pb.DevicePluginOptions(
            pre_start_required=False, get_preferred_allocation_available=True
        )

    async def ListAndWatch(
        self, request: pb.Empty, context: Any
    ) -> AsyncIterator[pb.ListAndWatchResponse]:
        async for devices in self.allocation.devices.changes(self.done):
            yield pb.ListAndWatchResponse(devices=[_device_message(d) for d in devices])

    async def GetPreferredAllocation(
        self, request: pb.PreferredAllocationRequest, context: Any
    ) -> pb.PreferredAllocationResponse:
        return pb.PreferredAllocationResponse(
            container_responses=[
                pb.ContainerPreferredAllocationResponse(
                    deviceIDs=virtual.preferred(
                        list(r.available_deviceIDs),
                        list(r.must_include_deviceIDs),
                        r.allocation_size,
                    )
                )
                for r in request.container_requests
            ]
        )

    async def Allocate(self, request: pb.AllocateRequest, context: Any) -> pb.AllocateResponse:
        responses = []
        for container in request.container_requests:
            try:
                responses.append(await self.allocation.container(len(container.devices_ids)))
            except handshake.AllocateRefused as e:
                await context.abort(grpc.StatusCode.FAILED_PRECONDITION, f"HAMi: {e}")
        return pb.AllocateResponse(container_responses=responses)

    async def PreStartContainer(
        self, request: pb.PreStartContainerRequest, context: Any
    ) -> pb.PreStartContainerResponse:
        return pb.PreStartContainerResponse()


def _until(stop: asyncio.Event, generation: asyncio.Event) -> Callable[[], bool]:
    return lambda: stop.is_set() or generation.is_set()


def _inode(path: Path) -> int | None:
    try:
        return path.stat().st_ino
    except OSError:
        return None


async def _register(directory: Path, endpoint: str, resource: str) -> None:
    async with grpc.aio.insecure_channel(f"unix://{directory / KUBELET_SOCKET}") as channel:
        await pb_grpc.RegistrationStub(channel).Register(
            pb.RegisterRequest(
                version=API_VERSION,
                endpoint=endpoint,
                resource_name=resource,
                options=pb.DevicePluginOptions(
                    pre_start_required=False, get_preferred_allocation_available=True
                ),
            ),
            timeout=10,
        )


async def serve_device_plugin(
    allocation: Allocation, directory: Path, resource: str, stop: asyncio.Event
) -> None:
    """Serve and register until stopped; start over whenever the kubelet restarts (its socket
    is a new file) or our socket disappears."""
    allocation.prepare_host()
    endpoint = socket_name(resource)
    path = directory / endpoint
    while not stop.is_set():
        kubelet_inode = _inode(directory / KUBELET_SOCKET)
        if kubelet_inode is None:
            await sleep_or_stop(stop, 1.0)
            continue
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        generation = asyncio.Event()  # ends this server's ListAndWatch streams
        server = grpc.aio.server()
        pb_grpc.add_DevicePluginServicer_to_server(
            DevicePluginServicer(allocation, _until(stop, generation)), server
        )
        server.add_insecure_port(f"unix://{path}")
        await server.start()
        try:
            await _register(directory, endpoint, resource)
            log.info("registered", extra={"resource": resource, "socket": str(path)})
            while not stop.is_set():
                await sleep_or_stop(stop, 1.0)
                if _inode(directory / KUBELET_SOCKET) != kubelet_inode or _inode(path) is None:
                    log.info("kubelet restarted or our socket is gone; registering again")
                    break
        except grpc.aio.AioRpcError as e:
            log.warning(
                "registration failed, retrying",
                extra={"resource": resource, "error": e.details() or str(e.code())},
            )
            await sleep_or_stop(stop, 2.0)
        finally:
            generation.set()
            await server.stop(grace=1.0)
            if _inode(path) is not None and not stop.is_set():
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def _read_or_empty(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def _instance_ids(
    mig: MigDevices | None, uuid: str, readings: Mapping[str, DeviceReading]
) -> tuple[int, int]:
    """A whole MIG instance's GPU and compute instance ids (for its capability nodes)."""
    reading = readings.get(uuid)
    if mig is None or reading is None or not reading.parent_uuid:
        raise InvalidRequest(f"device {uuid} is not a MIG instance on this node")
    for instance in mig.instances(reading.parent_uuid):
        if instance.uuid == uuid:
            return instance.gpu_instance, instance.compute_instances[0]
    raise InvalidRequest(f"MIG instance {uuid} is not on {reading.parent_uuid} any more")
