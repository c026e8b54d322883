"""The node agent's I/O shell: read devices, publish the inventory on a heartbeat, stream usage."""

from __future__ import annotations

import asyncio
import logging
import os
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from pathlib import Path

from nats.aio.client import Client
from nats.js.kv import KeyValue

from services.nodeagent.allocations import NodeAllocations
from services.nodeagent.core import dra
from services.nodeagent.core.containerspec import HostLayout
from services.nodeagent.core.hostfigures import HostFigures
from services.nodeagent.core.inventory import SharingPolicy, build_inventory, device_set_changed
from services.nodeagent.core.readings import DeviceReading
from services.nodeagent.core.vendorspec import VendorHost, serves
from services.nodeagent.culedger import CuLedger
from services.nodeagent.deviceplugin import Allocation, DeviceList, serve_device_plugin
from services.nodeagent.devices import DeviceManager, open_device_manager
from services.nodeagent.draplugin import DraDriver, serve_dra_plugin
from services.nodeagent.hostresources import NodeHostReader, machine_figures
from services.nodeagent.localusage import LocalJobUsage
from services.nodeagent.migwork import MigLedger, MigWork
from services.nodeagent.nodeobject import NodeObject
from services.nodeagent.podusage import ContainerUsage
from services.nodeagent.regionfiles import RegionReader
from services.nodeagent.settings import NodeAgentSettings
from services.nodeagent.vendorplugins import VendorPluginCheck, offered, unserved_kinds
from shared.devicekinds import NVIDIA
from shared.errors import HamiError
from shared.kube.client import KubeClient
from shared.natsauth import credentials_of
from shared.natsutil import allocations_bucket, connect, nodes_bucket
from shared.runloop import every
from shared.schemas.base import node_token
from shared.schemas.inventory import INVENTORY_CHANGED, NodeInventory, inventory_codec
from shared.schemas.usage import USAGE, UsageSample, usage_codec
from shared.vendorkinds import VENDOR_KINDS

log = logging.getLogger("hami.nodeagent")


class NodeAgent:
    def __init__(
        self, settings: NodeAgentSettings, manager: DeviceManager, nc: Client, nodes: KeyValue
    ) -> None:
        self.settings = settings
        self.node = settings.node_name
        self.agent_id = uuid.uuid4().hex
        self.policy = SharingPolicy(
            split_count=settings.split_count,
            memory_scaling=settings.memory_scaling,
            core_scaling=settings.core_scaling,
        )
        self._manager = manager
        self.manager = manager
        """Where readings come from (and MIG instances are made)."""
        self._driver = manager.driver()
        self.driver_info = self._driver
        self._nc = nc
        self._nodes = nodes
        self._seq = 0
        self._last: NodeInventory | None = None
        self.plugin_devices = DeviceList(settings.split_count)
        self.vendor_devices: dict[str, DeviceList] = {}
        """Other kinds' devices, each kind served by its own device plugin."""
        self.readings: list[DeviceReading] = []
        self.listeners: list[Callable[[Sequence[DeviceReading]], Awaitable[None]]] = []
        """Told each heartbeat's readings (the DRA plugin's ResourceSlice)."""
        self.regions = RegionReader()
        """Every region this agent reads (pods', local jobs'): its skips go in the inventory."""
        self.vendor_check: VendorPluginCheck | None = None
        """On a Kubernetes node: kinds left to vendors' plugins are offered while one serves."""
        machine = machine_figures()
        self.host_figures: Callable[[], Awaitable[HostFigures | None]] = _constant(machine)
        """The host CPU and memory for the inventory: the machine's (local mode) or the
        Kubernetes node's, with its other pods' requests (a device plugin node)."""

    async def heartbeat(self) -> None:
        readings = await asyncio.to_thread(self._manager.devices)
        if self.vendor_check is not None:
            readings = await self.vendor_check.apply(readings)
        elif self.settings.device_plugin:  # not checked yet: not offered yet
            readings = offered(readings, unserved_kinds(VENDOR_KINDS, serves), None)
        self.readings = readings
        await self.plugin_devices.update(readings)
        for devices in self.vendor_devices.values():
            await devices.update(readings)
        for listener in self.listeners:
            try:
                await listener(readings)
            except HamiError as e:  # the API server away: the next beat tries again
                log.warning("device listener failed", extra={"error": str(e)})
        self._seq += 1
        host = await self.host_figures()
        inventory = build_inventory(
            self.node,
            self.agent_id,
            readings,
            self.policy,
            self._driver,
            seq=self._seq,
            now=time.time(),
            heartbeat_interval_s=self.settings.heartbeat_interval_s,
            unreadable_regions=self.regions.skipped,
            host=host,
        )
        payload = inventory_codec.encode(inventory)
        await self._nodes.put(self.node, payload)
        if device_set_changed(self._last, inventory):
            await self._nc.publish(f"{INVENTORY_CHANGED}.{node_token(self.node)}", payload)
            log.info(
                "inventory published", extra={"node": self.node, "devices": len(inventory.devices)}
            )
        self._last = inventory

    async def publish_usage(self) -> None:
        readings = await asyncio.to_thread(self._manager.usage)
        now = time.time()
        subject = f"{USAGE}.{node_token(self.node)}"
        for r in readings:
            sample = UsageSample(
                node=self.node,
                device_uuid=r.uuid,
                at=now,
                memory_used_bytes=r.memory_used_bytes,
                memory_total_bytes=r.memory_total_bytes,
                utilization_percent=r.utilization_percent,
            )
            await self._nc.publish(subject, usage_codec.encode(sample))

    async def leave(self) -> None:
        try:
            await self._nodes.delete(self.node)
        except Exception as e:  # NATS gone: the allocator's node TTL removes us instead
            log.warning("could not withdraw inventory", extra={"node": self.node, "error": repr(e)})


def _constant(figures: HostFigures) -> Callable[[], Awaitable[HostFigures | None]]:
    async def read() -> HostFigures | None:
        return figures

    return read


def host_layout(settings: NodeAgentSettings) -> HostLayout:
    root = Path(settings.vgpu_root)
    return HostLayout(
        root=root,
        library=Path(settings.libvgpu) if settings.libvgpu else root / "libvgpu.so",
        core_policy=settings.core_policy,
        oversubscribe=settings.memory_scaling > 1,
    )


async def _kubernetes_node(
    settings: NodeAgentSettings,
    agent: NodeAgent,
    nc: Client,
    stop: asyncio.Event,
    tasks: asyncio.TaskGroup,
) -> KubeClient:
    """The device plugin, the ledger it checks pods against, and per-container usage."""
    kube = await KubeClient.from_config(settings.kubeconfig)
    node = NodeObject(kube, agent.node)  # one read of the node for both
    agent.vendor_check = VendorPluginCheck(node, VENDOR_KINDS, serves)
    agent.host_figures = NodeHostReader(node, [k.resources for k in VENDOR_KINDS.kinds]).read
    records = NodeAllocations(agent.node)
    layout = host_layout(settings)
    mig = agent.manager.mig
    work: MigWork | None = None
    if settings.gpu_mode == "mig" and mig is not None:
        ledger = MigLedger(layout.root / "mig" / "instances.json")
        work = MigWork(mig, ledger, records.holds, grace_s=settings.region_grace_s)
        agent.manager.held_slices = work.held  # from the next beat on
        tasks.create_task(
            every(stop, settings.heartbeat_interval_s, "mig-reap", work.reap), name="mig-reap"
        )
    allocation = Allocation(
        node=agent.node,
        kube=kube,
        records=records,
        devices=agent.plugin_devices,
        layout=layout,
        policy=agent.policy,
        mig=work,
        mig_devices=mig,
    )
    usage = ContainerUsage(
        agent.node,
        layout,
        Path(settings.pod_resources_socket),
        settings.resource_name,
        nc,
        grace_s=settings.region_grace_s,
        regions=agent.regions,
    )
    allocations = await allocations_bucket(nc.jetstream(), create=False)
    tasks.create_task(records.follow(allocations, stop), name="follow-allocations")
    tasks.create_task(
        serve_device_plugin(allocation, Path(settings.plugin_dir), settings.resource_name, stop),
        name="device-plugin",
    )
    await _vendor_plugins(settings, agent, allocation, stop, tasks)
    tasks.create_task(
        every(stop, settings.usage_interval_s, "container-usage", usage.publish),
        name="container-usage",
    )
    return kube


async def _vendor_plugins(
    settings: NodeAgentSettings,
    agent: NodeAgent,
    nvidia: Allocation,
    stop: asyncio.Event,
    tasks: asyncio.TaskGroup,
) -> None:
    """A device plugin per other kind the node has (its count resource), each handing out
    its vendor's conventions (core/vendorspec.py). Kinds are those of the first reading: a
    kind that appears later is served after the agent restarts."""
    host = VendorHost(os.path.exists, str(nvidia.layout.root / "libamvgpu.so"))
    for name in sorted({r.kind for r in agent.readings} - {NVIDIA.name}):
        kind = VENDOR_KINDS.named(name)
        if not serves(kind):
            log.info(
                "kind left to its vendor's device plugin",
                extra={
                    "kind": name,
                    "resource": kind.resources.count,
                    "annotations": kind.to_allocate_annotation,
                },
            )
            continue
        devices = DeviceList(settings.split_count, name, agent.policy)
        await devices.update(agent.readings)
        agent.vendor_devices[name] = devices
        ledger = (
            CuLedger(nvidia.layout.root / "amd" / "cu-masks.json", nvidia.records.holds)
            if kind.vendor == "AMD"
            else None
        )
        allocation = replace(
            nvidia, devices=devices, kind=kind, vendor_host=host, mig=None, cu_ledger=ledger
        )
        tasks.create_task(
            serve_device_plugin(allocation, Path(settings.plugin_dir), kind.resources.count, stop),
            name=f"device-plugin-{name}",
        )


async def _dra_node(
    settings: NodeAgentSettings,
    agent: NodeAgent,
    nc: Client,
    stop: asyncio.Event,
    tasks: asyncio.TaskGroup,
) -> KubeClient:
    """The DRA plugin: the node's ResourceSlice on each beat, claims prepared on request."""
    kube = await KubeClient.from_config(settings.kubeconfig)
    main = host_layout(settings)
    driver = DraDriver(
        node=agent.node,
        kube=kube,
        layout=HostLayout(
            root=main.root / "dra",
            library=main.library,
            core_policy=main.core_policy,
            oversubscribe=main.oversubscribe,
        ),
        policy=agent.policy,
        driver=agent.driver_info,
        cdi_dir=Path(settings.cdi_dir),
        checkpoint_path=main.root / "dra" / "checkpoint.json",
    )
    await kube.ensure_device_class(dra.device_class())
    agent.listeners.append(driver.publish)
    tasks.create_task(
        every(
            stop,
            settings.usage_interval_s,
            "claim-usage",
            lambda: driver.publish_usage(nc, agent.regions),
        ),
        name="claim-usage",
    )
    tasks.create_task(
        serve_dra_plugin(
            driver, Path(settings.dra_plugins_dir), Path(settings.dra_registry_dir), stop
        ),
        name="dra-plugin",
    )
    return kube


async def _local_jobs(
    settings: NodeAgentSettings,
    agent: NodeAgent,
    nc: Client,
    stop: asyncio.Event,
    tasks: asyncio.TaskGroup,
) -> None:
    """Usage of the `hami run` jobs on this node, from their regions."""
    assert settings.local_jobs_dir is not None
    records = NodeAllocations(agent.node)
    allocations = await allocations_bucket(nc.jetstream(), create=False)
    usage = LocalJobUsage(agent.node, Path(settings.local_jobs_dir), records, nc, agent.regions)
    tasks.create_task(records.follow(allocations, stop), name="follow-local-jobs")
    tasks.create_task(
        every(stop, settings.usage_interval_s, "local-job-usage", usage.publish),
        name="local-job-usage",
    )


async def serve(settings: NodeAgentSettings, stop: asyncio.Event) -> None:
    manager = open_device_manager(
        settings.simulate,
        settings.node_name,
        require_nvml=settings.require_nvml,
        gpu_mode=settings.gpu_mode,
        mig_state=Path(settings.vgpu_root) / "mig" / "simulated-gpus.json",
        backend=settings.device_backend,
    )
    nc = await connect(
        settings.nats_url,
        f"hami-nodeagent-{settings.node_name}",
        credentials=credentials_of(settings.nats_credentials),
    )
    kube: KubeClient | None = None
    dra_kube: KubeClient | None = None
    try:
        agent = NodeAgent(
            settings,
            manager,
            nc,
            await nodes_bucket(nc.jetstream(), replicas=settings.nats_replicas),
        )
        await agent.heartbeat()  # the device plugin advertises what the first beat read
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(
                every(stop, settings.heartbeat_interval_s, "heartbeat", agent.heartbeat)
            )
            tasks.create_task(every(stop, settings.usage_interval_s, "usage", agent.publish_usage))
            if settings.device_plugin:
                kube = await _kubernetes_node(settings, agent, nc, stop, tasks)
            if settings.local_jobs_dir is not None:
                await _local_jobs(settings, agent, nc, stop, tasks)
            if settings.dra:
                dra_kube = await _dra_node(settings, agent, nc, stop, tasks)
                await agent.heartbeat()  # the readings, for the slice once registered
        await agent.leave()
    finally:
        manager.close()
        if kube is not None:
            await kube.close()
        if dra_kube is not None:
            await dra_kube.close()
        await nc.drain()
