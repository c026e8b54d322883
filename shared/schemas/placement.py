"""Placement API: place, renew, release and status, request/reply to the allocator."""

from __future__ import annotations

import hashlib
import hmac
from typing import Annotated, Literal

import msgspec
from msgspec import Meta

from shared.schemas.base import PREFIX, Codec, Endpoint, SubjectSpec, WireStruct
from shared.schemas.inventory import MAX_SLICES, HostAmount, NodeInventory

# Ranges checked when a message is decoded: out of range is a malformed request (InvalidRequest).
MAX_LEASE_TTL_S = 7 * 24 * 3600.0
Name = Annotated[str, Meta(max_length=253)]
Names = Annotated[tuple[Name, ...], Meta(max_length=256)]
Id = Annotated[str, Meta(min_length=1, max_length=256)]
Priority = Annotated[int, Meta(ge=0, le=1)]
Secret = Annotated[str, Meta(min_length=16, max_length=128)]
LeaseTtl = Annotated[float, Meta(gt=0, le=MAX_LEASE_TTL_S)]
"""Finite and positive: NaN and infinity are refused, never taken as "never expires"."""


class ContainerRequest(WireStruct, frozen=True, kw_only=True):
    """What one container (or one local job) asks for. A count of 0 asks for no device."""

    name: Name = ""
    kind: Name = "nvidia"
    count: Annotated[int, Meta(ge=0, le=16)] = 1
    memory_mib: Annotated[int, Meta(ge=1, le=2**40)] | None = None
    """Memory per device in MiB; None with memory_percent None means the whole device."""
    memory_percent: Annotated[int, Meta(ge=1, le=100)] | None = None
    """Memory per device as a percent of that device's allocatable memory."""
    cores: Annotated[int, Meta(ge=0, le=100)] = 0
    """Compute per device in percent; 100 asks for the device exclusively."""
    use_types: Names = ()
    nouse_types: Names = ()
    use_uuids: Names = ()
    nouse_uuids: Names = ()
    numa_bind: bool = False
    """All of this container's devices on one NUMA node."""
    device_mode: Literal["", "hami-core", "mig"] = ""
    """How the devices must be shared (HAMi's `nvidia.com/vgpu-mode`): "hami-core" on
    devices shared by interception only, "mig" on hardware partitions or whole instances
    only; empty: either."""


class Holder(WireStruct, frozen=True, kw_only=True):
    """Who holds an allocation, for people reading `hami status` and for reconciliation."""

    kind: Literal["local", "pod", "external"] = "local"
    host: Name = ""
    pid: int | None = None
    command: Annotated[str, Meta(max_length=4096)] = ""
    namespace: Name = ""
    pod: Name = ""
    pod_uid: Name = ""


class PlaceRequest(WireStruct, frozen=True, kw_only=True):
    request_id: Id
    """Chosen by the caller; a retried request with the same id gets the same allocation."""
    containers: Annotated[tuple[ContainerRequest, ...], Meta(max_length=64)]
    holder: Holder = Holder()
    lease_ttl_s: LeaseTtl | None = 30.0
    """The allocation is released when not renewed for this long; None: held until released."""
    candidate_nodes: Annotated[tuple[Name, ...], Meta(max_length=100_000)] | None = None
    """Restrict placement to these nodes (e.g. the nodes another scheduler kept)."""
    node_policy: Name | None = None
    """binpack, spread, best-fit or fragmentation; None: the allocator's default."""
    gpu_policy: Name | None = None
    """binpack, spread, best-fit or fragmentation; None: the node policy's own device order
    for best-fit and fragmentation, else the allocator's default."""
    priority: Priority = 1
    """0 is high, 1 is low (HAMi's CUDA_TASK_PRIORITY convention)."""
    holder_secret: Secret | None = None
    """Chosen by the caller and kept to itself: renew, release and commit of the allocation
    must present it (the record keeps only its digest). None: anyone with the id may."""
    cpu_milli: HostAmount = 0
    """Host CPU the job asks for beside its devices (milli-cores; a pod's requests). Not a
    filter (kube-scheduler filters on it): the fragmentation policy counts the devices of a
    node whose CPU the request shapes it expects could not get as stranded."""
    memory_mib: HostAmount = 0
    """Host memory the job asks for (MiB), counted as ``cpu_milli`` is."""


class DeviceGrant(WireStruct, frozen=True, kw_only=True):
    uuid: str
    index: int
    model: str
    kind: str = "nvidia"
    memory_mib: int
    cores: int
    profile: str = ""
    """The hardware partition granted (partition devices); empty: a share or the whole device."""
    placement: Annotated[int, Meta(ge=0, lt=MAX_SLICES)] | None = None
    """Where the partition starts, on a device with a geometry (MIG: its first memory slice)."""
    slices: Annotated[int, Meta(ge=0, le=MAX_SLICES)] = 0
    """How many memory slices the partition takes from ``placement`` on."""


class AllocationRecord(WireStruct, frozen=True, kw_only=True):
    """The durable record of one allocation (value in the ``hami_allocations`` bucket)."""

    allocation_id: str
    request_id: str
    node: str
    containers: tuple[tuple[DeviceGrant, ...], ...]
    holder: Holder = Holder()
    priority: int = 1
    created_at: float
    lease_ttl_s: float | None = 30.0
    request_digest: str = ""
    """What was asked (request_digest()); a retry with the same request_id must ask the same.
    Empty in records written before it existed."""
    holder_digest: str = ""
    """secret_digest() of the placer's holder_secret; empty: no secret was given."""
    term: int = 0
    """The leader term of the allocator that wrote it (hami_leader): who decided, for audits."""
    trace_id: str = ""
    """The placement's trace (W3C trace id, hex) when tracing was on: where to read why."""
    cpu_milli: HostAmount = 0
    """The request's host CPU (milli-cores): the ledger counts it taken on the node."""
    memory_mib: HostAmount = 0
    """The request's host memory (MiB), likewise."""


def secret_digest(secret: str | None) -> str:
    return "" if secret is None else hashlib.sha256(secret.encode()).hexdigest()


def holds(record: AllocationRecord, secret: str | None) -> bool:
    """Whether a caller presenting ``secret`` may renew, release or commit ``record``."""
    return not record.holder_digest or hmac.compare_digest(
        record.holder_digest, secret_digest(secret)
    )


def request_digest(request: PlaceRequest) -> str:
    """The shape of a request: its containers, priority and policies (not its candidates: a
    retried bind names the node it chose)."""
    shape: tuple[object, ...] = (
        request.containers,
        request.priority,
        request.node_policy,
        request.gpu_policy,
    )
    if request.cpu_milli or request.memory_mib:  # records from before these fields still match
        shape += (request.cpu_milli, request.memory_mib)
    return hashlib.sha256(msgspec.json.encode(shape)).hexdigest()[:32]


class PlaceReply(WireStruct, frozen=True, kw_only=True):
    outcome: Literal["placed", "wait", "never"]
    """placed: here is the allocation; wait: fits an empty cluster but not now (retry after a
    release); never: no device known now could ever satisfy it. A malformed request gets a
    service error with code ``invalid`` instead."""
    allocation: AllocationRecord | None = None
    reason: str = ""


class RenewRequest(WireStruct, frozen=True, kw_only=True):
    allocation_id: Id
    holder_secret: Secret | None = None


class RenewReply(WireStruct, frozen=True, kw_only=True):
    ok: bool
    """False when the allocation is gone (released or expired): the holder must stop using it."""
    expires_in_s: float | None = None


class ReleaseRequest(WireStruct, frozen=True, kw_only=True):
    allocation_id: Id
    reason: Annotated[str, Meta(max_length=1024)] = "released"
    holder_secret: Secret | None = None


class ReleaseReply(WireStruct, frozen=True, kw_only=True):
    released: bool
    """False when there was nothing to release (already released or expired): not an error."""


class CommitRequest(WireStruct, frozen=True, kw_only=True):
    allocation_id: Id
    holder_secret: Secret | None = None
    lease_ttl_s: LeaseTtl | None = None
    """The lease from now on; None: held until released (the usual choice once bound)."""


class CommitReply(WireStruct, frozen=True, kw_only=True):
    committed: bool
    """False when the reservation is gone (expired or released): place again."""
    allocation: AllocationRecord | None = None


class StatusRequest(WireStruct, frozen=True, kw_only=True):
    node: str | None = None
    waiting_only: bool = False
    """Only the waiting requests (and problems): what a poller needs, without every node,
    device and allocation of the cluster in each reply."""


class DeviceStatus(WireStruct, frozen=True, kw_only=True):
    node: str
    uuid: str
    index: int
    model: str
    memory_mib: int
    cores: int
    split_count: int
    used_memory_mib: int
    used_cores: int
    used_count: int
    healthy: bool
    kind: str = "nvidia"
    isolation: str = "interception"
    """interception (shared by a library), partition (MIG and other hardware partitions) or
    whole."""
    partitions: tuple[str, ...] = ()
    """The partitions granted on it: `<profile>` or, with a geometry, `<profile>@<start>`."""


class WaitingRequest(WireStruct, frozen=True, kw_only=True):
    """A request told to wait that has not been placed since (and still asks)."""

    request_id: Name
    holder: Holder
    reason: Annotated[str, Meta(max_length=4096)]
    since: float
    """When it was first told to wait."""
    last_asked: float


class StatusReply(WireStruct, frozen=True, kw_only=True):
    nodes: tuple[NodeInventory, ...]
    devices: tuple[DeviceStatus, ...]
    allocations: tuple[AllocationRecord, ...]
    problems: tuple[str, ...] = ()
    """What keeps capacity out of use that an operator must fix (unreadable records)."""
    waiting: tuple[WaitingRequest, ...] = ()
    """Requests told to wait, oldest first, each with the reason it was last given."""


DEFAULT_RESERVATION_TTL_S = 30.0
ALLOCATIONS_BUCKET = "hami_allocations"
allocation_codec = Codec(AllocationRecord)

PLACE = Endpoint(
    subject=f"{PREFIX}.alloc.place",
    request=PlaceRequest,
    reply=PlaceReply,
    publisher="hami run, external schedulers",
    consumers="allocator (queue group)",
    doc="Place a job. The allocation is written durably before the reply is sent; a retry "
    "with the same request_id returns the same allocation instead of a second one.",
)
RESERVE = Endpoint(
    subject=f"{PREFIX}.alloc.reserve",
    request=PlaceRequest,
    reply=PlaceReply,
    publisher="external schedulers (two-phase)",
    consumers="allocator (queue group)",
    doc="Like place, but always with a lease (the request's, or 30 s): the devices are held "
    "while the caller binds, and return to the pool unless committed or renewed in time.",
)
COMMIT = Endpoint(
    subject=f"{PREFIX}.alloc.commit",
    request=CommitRequest,
    reply=CommitReply,
    publisher="external schedulers (two-phase)",
    consumers="allocator",
    doc="Turn a reservation into an allocation with the given lease (none: held until "
    "released). Idempotent; the durable record is updated before the reply.",
)
RENEW = Endpoint(
    subject=f"{PREFIX}.alloc.renew",
    request=RenewRequest,
    reply=RenewReply,
    publisher="hami run (every lease_ttl/3)",
    consumers="allocator",
    doc="Keep an allocation's lease alive.",
)
RELEASE = Endpoint(
    subject=f"{PREFIX}.alloc.release",
    request=ReleaseRequest,
    reply=ReleaseReply,
    publisher="hami run, external schedulers",
    consumers="allocator",
    doc="Release an allocation. Idempotent.",
)
STATUS = Endpoint(
    subject=f"{PREFIX}.alloc.status",
    request=StatusRequest,
    reply=StatusReply,
    publisher="hami status",
    consumers="allocator",
    doc="The allocator's view: nodes, per-device use, allocations.",
)
ENDPOINTS = (PLACE, RESERVE, COMMIT, RENEW, RELEASE, STATUS)

SUBJECTS = (
    *(endpoint.spec for endpoint in ENDPOINTS),
    SubjectSpec(
        subject=f"$KV.{ALLOCATIONS_BUCKET}.<allocation_id>",
        pattern="jetstream kv",
        publisher="allocator",
        consumers="allocator (rebuild on start), telemetry (watch)",
        message=AllocationRecord,
        doc="The durable allocation record: created before a placement is acknowledged, deleted "
        "on release or lease expiry; the deletion marker expires after 24 h (a per-message TTL, "
        "which the leader turns on for the bucket's stream when it takes over; NATS 2.11 or "
        "later, older servers keep the markers), so the bucket holds the live allocations and "
        "a day of deletions, not every allocation ever made. The allocator rebuilds its state "
        "from it on start. Only "
        "the leader writes, each write conditional on the stream's last sequence "
        "(Nats-Expected-Last-Sequence); a new leader first deletes the never-written key "
        "`_sealed`, so a write an earlier leader still had in flight is refused.",
    ),
)
