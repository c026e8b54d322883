"""Device inventory: what each node agent reports about its node."""

from __future__ import annotations

from typing import Annotated, Literal

from msgspec import Meta

from shared.schemas.base import PREFIX, Codec, SubjectSpec, WireStruct

HOST_MAX = 2**48
"""The most host CPU (milli-cores) or memory (MiB) any figure may say: past any machine."""
HostAmount = Annotated[int, Meta(ge=0, le=HOST_MAX)]

MAX_SLICES = 16
"""Memory slices a partitioned device may have (MIG has 8)."""

Isolation = Literal["interception", "partition", "whole"]
"""How a device kind is shared (docs/architecture.md): shares enforced by a library in the
container; fixed hardware partitions the scheduler picks from; or not shared at all."""


Slice = Annotated[int, Meta(ge=0, lt=MAX_SLICES)]


class PartitionProfile(WireStruct, frozen=True, kw_only=True):
    """One hardware partition a device can be cut into (an Ascend vNPU template, an Enflame
    DRS slice, a Kunlunxin vXPU, a MIG profile): a share asking for less is rounded up to the
    smallest profile that holds it."""

    name: str
    memory_mib: int
    cores: int
    """Percent of the device's compute the partition has."""
    slices: Annotated[int, Meta(ge=0, le=MAX_SLICES)] = 0
    """Memory slices it takes on a device with a geometry (MIG: 1, 2, 4 or 8 of 8); 0: the
    device has none (its partitions are counted by capacity only)."""
    placements: Annotated[tuple[Slice, ...], Meta(max_length=MAX_SLICES)] = ()
    """The slices it may start at (NVML's possible placements)."""


class DeviceInfo(WireStruct, frozen=True, kw_only=True):
    """One shareable device as the scheduler sees it."""

    uuid: str
    """Vendor UUID, e.g. ``GPU-9ca492be-...``."""
    index: int
    """Index on its node (NVML index)."""
    model: str
    """Model name as the vendor reports it, e.g. ``NVIDIA H200``; type selectors match it."""
    kind: str = "nvidia"
    """Device kind in the device-kind registry (vendor family)."""
    memory_mib: int
    """Allocatable memory in MiB (physical memory times the memory scaling)."""
    physical_memory_mib: int
    """Memory the device really has, in MiB."""
    cores: int = 100
    """Allocatable compute in percent of the device (100 times the core scaling)."""
    split_count: int = 10
    """How many allocations may share this device at once."""
    pci_bus_id: str = ""
    numa_node: int | None = None
    """NUMA node, or None where the platform does not say."""
    healthy: bool = True
    simulated: bool = False
    isolation: Isolation = "interception"
    profiles: tuple[PartitionProfile, ...] = ()
    """For partition devices: the profiles it can be cut into, smallest first."""
    slices: Annotated[int, Meta(ge=0, le=MAX_SLICES)] = 0
    """Memory slices of a device whose partitions have a geometry (MIG: 8); 0: none."""
    slices_held: Annotated[int, Meta(ge=0, lt=2**MAX_SLICES)] = 0
    """Bitmask of the slices held by partitions the scheduler did not grant (MIG instances
    made by hand, or left from a restart before they were matched): never placed over."""


class MigInstanceInfo(WireStruct, frozen=True, kw_only=True):
    """A MIG instance on one of the node's GPUs, as NVML reports it (for metrics and people:
    the scheduler reads the geometry from the devices)."""

    gpu_uuid: str
    uuid: str
    """The MIG device's UUID (`MIG-...`); empty while it has no compute instance."""
    profile: str
    gpu_instance: int
    compute_instance: int | None = None
    start: int
    slices: int


class NodeInventory(WireStruct, frozen=True, kw_only=True):
    """A node's devices, put into the ``hami_nodes`` bucket on every heartbeat."""

    node: str
    agent_id: str
    """Random id of the agent process; a new id means the agent restarted."""
    devices: tuple[DeviceInfo, ...]
    heartbeat_seq: int = 0
    sent_at: float = 0.0
    """Agent's wall clock (unix seconds); informational, liveness uses the receiver's clock."""
    heartbeat_interval_s: float = 5.0
    driver_version: str = ""
    cuda_driver_version: int = 0
    cpu_milli: HostAmount | None = None
    """The node's allocatable host CPU (milli-cores); None: not known."""
    memory_mib: HostAmount | None = None
    """The node's allocatable host memory (MiB); None: not known."""
    others_cpu_milli: HostAmount = 0
    """Host CPU requested by the node's pods that hold no HAMi allocation (the allocator
    counts its own allocations' from its ledger), as of ``sent_at``."""
    others_memory_mib: HostAmount = 0
    """Host memory requested likewise."""
    unreadable_regions: int = 0
    """Reads of containers' regions the agent skipped since it started (malformed or of
    another layout): each was logged once; usage of those containers is not known."""
    mig_instances: tuple[MigInstanceInfo, ...] = ()
    """The MIG instances on the node's GPUs."""


NODES_BUCKET = "hami_nodes"
INVENTORY_CHANGED = f"{PREFIX}.inventory.changed"

inventory_codec = Codec(NodeInventory)

SUBJECTS = (
    SubjectSpec(
        subject=f"$KV.{NODES_BUCKET}.<node>",
        pattern="jetstream kv",
        publisher="nodeagent",
        consumers="allocator (watch), telemetry (watch)",
        message=NodeInventory,
        doc="One key per node, put on every heartbeat. A node whose key is not refreshed within "
        "the allocator's node TTL leaves the pool; a graceful agent stop deletes its key.",
    ),
    SubjectSpec(
        subject=f"{INVENTORY_CHANGED}.<node-token>",
        pattern="pub/sub",
        publisher="nodeagent",
        consumers="anyone interested (hami status --watch, external schedulers)",
        message=NodeInventory,
        doc="Published when a node's device set or health changes (not on plain heartbeats). "
        "`<node-token>` is the node name with `.` replaced by `_`.",
    ),
)
