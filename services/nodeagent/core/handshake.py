"""HAMi's handshake between the scheduler and the device plugin, as pure functions.

The allocator's bind wrote each kind's `hami.io/<word>-devices-to-allocate` (NVIDIA's
`vgpu-devices-to-allocate`), `bind-phase=allocating` and `vgpu-node`. The kubelet's Allocate
names only how many (virtual) devices a container gets, not which pod it is for, so the pod is
found as HAMi finds it: the pending pod in `allocating` phase on this node, oldest bind first,
whose next container asks for that many devices of the plugin's kind. Its entry is checked
against the allocator's durable record and this node's devices, and anything that does not
agree is refused: a container never starts without the limits it was granted."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from shared import deviceannotation
from shared.deviceannotation import AnnotatedDevice
from shared.devicekinds import NVIDIA, DeviceKind
from shared.errors import HamiError, InvalidRequest
from shared.resources import (
    ALLOCATE_FAILURE,
    ASSIGNED_NODE,
    BIND_PHASE,
    BIND_TIME,
    DEVICES_TO_ALLOCATE,
)
from shared.schemas.placement import AllocationRecord, DeviceGrant

_UID = re.compile(r"^[A-Za-z0-9-]{1,64}$")
_CONTAINER = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
PENDING = "allocating"


class AllocateRefused(HamiError):
    """Allocate cannot be answered; the container must not start. ``pod`` names the pod to
    mark failed where one was identified (namespace, name)."""

    code = "allocate_refused"

    def __init__(self, message: str, *, pod: tuple[str, str] | None = None) -> None:
        super().__init__(message)
        self.pod = pod


@dataclass(frozen=True, slots=True)
class Assignment:
    namespace: str
    pod: str
    pod_uid: str
    container_index: int
    container: str
    grants: tuple[DeviceGrant, ...]
    priority: int
    allocation_id: str
    entry: tuple[AnnotatedDevice, ...]
    """The to-allocate entry consumed; the annotation patch checks it is still there."""
    annotation: str = DEVICES_TO_ALLOCATE
    """The kind's to-allocate annotation the entry is in."""

    @property
    def key(self) -> str:
        """Names the container's region directory: `<podUID>_<container>` as in HAMi."""
        return f"{self.pod_uid}_{self.container}"


def _m(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _bind_order(pod: Mapping[str, Any]) -> tuple[int, str, str]:
    metadata = _m(pod.get("metadata"))
    raw = str(_m(metadata.get("annotations")).get(BIND_TIME, ""))
    bind_time = int(raw) if raw.isdigit() else 2**62
    return bind_time, str(metadata.get("creationTimestamp", "")), str(metadata.get("name", ""))


def pending_pods(pods: Sequence[Mapping[str, Any]], node: str) -> list[Mapping[str, Any]]:
    """Pods on this node waiting for Allocate, in the order the kubelet admits them."""
    out = []
    for pod in pods:
        metadata = _m(pod.get("metadata"))
        annotations = _m(metadata.get("annotations"))
        if (
            annotations.get(BIND_PHASE) == PENDING
            and annotations.get(ASSIGNED_NODE) == node
            and _m(pod.get("status")).get("phase", "Pending") == "Pending"
            and not metadata.get("deletionTimestamp")
        ):
            out.append(pod)
    return sorted(out, key=_bind_order)


def _container_names(pod: Mapping[str, Any]) -> list[str]:
    raw = _m(pod.get("spec")).get("containers")
    return [str(_m(c).get("name", "")) for c in (raw if isinstance(raw, list) else [])]


def _expected(
    record: AllocationRecord, types: Mapping[str, str], kind: str
) -> list[list[AnnotatedDevice]]:
    """The record's devices of ``kind`` per container, as its annotation must list them."""
    return [
        [
            AnnotatedDevice(g.uuid, types.get(g.kind, g.kind), g.memory_mib, g.cores)
            for g in c
            if g.kind == kind
        ]
        for c in record.containers
    ]


def _holds_kind(record: AllocationRecord, kind: str) -> bool:
    return any(g.kind == kind for c in record.containers for g in c)


def _check(
    pod: Mapping[str, Any],
    node: str,
    record: AllocationRecord | None,
    node_devices: Mapping[str, int],
    types: Mapping[str, str],
    kind: DeviceKind,
) -> tuple[list[list[AnnotatedDevice]], int | None, AllocationRecord]:
    """The decoded to-allocate entries of ``kind``, the index of the next one and the pod's
    allocation, or InvalidRequest saying why this pod's annotations cannot be trusted."""
    metadata = _m(pod.get("metadata"))
    annotations = _m(metadata.get("annotations"))
    uid = str(metadata.get("uid", ""))
    to_allocate, allocated_key = kind.to_allocate_annotation, kind.allocated_annotation
    if not _UID.match(uid):
        raise InvalidRequest(f"pod uid {uid[:80]!r} is not a Kubernetes uid")
    text = annotations.get(to_allocate)
    if not isinstance(text, str):
        raise InvalidRequest(f"annotation {to_allocate} is missing")
    entries = deviceannotation.decode(text)
    if record is None:
        raise InvalidRequest("the allocator's ledger has no allocation for this pod")
    if record.node != node:
        raise InvalidRequest(f"the allocator placed this pod on {record.node!r}, not {node!r}")
    expected = _expected(record, types, kind.name)
    names = _container_names(pod)
    if len(entries) != len(expected) or len(entries) != len(names):
        raise InvalidRequest(
            f"annotation {to_allocate} has {len(entries)} containers; the pod has "
            f"{len(names)} and its allocation {len(expected)}"
        )
    allocated = annotations.get(allocated_key)
    if allocated is not None and allocated != deviceannotation.encode(expected):
        raise InvalidRequest(f"annotation {allocated_key} differs from the allocation")
    for i, entry in enumerate(entries):
        if entry and entry != expected[i]:
            raise InvalidRequest(
                f"annotation {to_allocate} for container {names[i]!r} differs from the "
                f"allocation: {deviceannotation.encode([entry])!r} is not "
                f"{deviceannotation.encode([expected[i]])!r}"
            )
        for device in entry:
            if device.uuid not in node_devices:
                raise InvalidRequest(f"device {device.uuid} is not on node {node}")
            if not 0 < device.memory_mib <= node_devices[device.uuid]:
                raise InvalidRequest(
                    f"device {device.uuid}: {device.memory_mib} MiB is outside 1.."
                    f"{node_devices[device.uuid]}"
                )
            if not 0 <= device.cores <= 100:
                raise InvalidRequest(f"device {device.uuid}: cores {device.cores} not in 0..100")
    if not all(_CONTAINER.match(n) for n in names):
        raise InvalidRequest("a container name is not a DNS label")
    return entries, next((i for i, e in enumerate(entries) if e), None), record


def assign(
    pods: Sequence[Mapping[str, Any]],
    node: str,
    count: int,
    record_for: Callable[[str], AllocationRecord | None],
    node_devices: Mapping[str, int],
    types: Mapping[str, str],
    kind: DeviceKind = NVIDIA,
) -> Assignment:
    """The container an Allocate for ``count`` devices of ``kind`` is for.

    ``record_for`` finds the allocator's record by pod uid; ``node_devices`` maps this node's
    device uuids to their allocatable MiB; ``types`` maps a device kind to its annotation type.
    Each kind has its own device plugin and its own annotations (a pod may mix kinds across
    containers); a pod whose allocation holds none of ``kind`` is not this plugin's.
    Pods are tried in bind order. A pod whose annotations cannot be trusted stops the search
    there: it may be the one being admitted, and guessing past it could hand its container
    another pod's limits. Raises AllocateRefused."""
    if count < 1:
        raise AllocateRefused("Allocate named no devices")
    for pod in pending_pods(pods, node):
        metadata = _m(pod.get("metadata"))
        namespace, name = str(metadata.get("namespace", "")), str(metadata.get("name", ""))
        uid = str(metadata.get("uid", ""))
        found = record_for(uid)
        if found is not None and not _holds_kind(found, kind.name):
            continue
        try:
            entries, index, record = _check(pod, node, found, node_devices, types, kind)
        except InvalidRequest as e:
            raise AllocateRefused(f"pod {namespace}/{name}: {e}", pod=(namespace, name)) from e
        if index is None or len(entries[index]) != count:
            continue
        return Assignment(
            namespace=namespace,
            pod=name,
            pod_uid=uid,
            container_index=index,
            container=_container_names(pod)[index],
            grants=tuple(g for g in record.containers[index] if g.kind == kind.name),
            priority=record.priority,
            allocation_id=record.allocation_id,
            entry=tuple(entries[index]),
            annotation=kind.to_allocate_annotation,
        )
    raise AllocateRefused(
        f"no pod on node {node} is waiting for {count} {kind.name} device(s) "
        f"(bind-phase {PENDING!r} with a matching {kind.to_allocate_annotation} entry)"
    )


def consume(
    annotations: Mapping[str, str],
    assignment: Assignment,
    every: Iterable[str] = (DEVICES_TO_ALLOCATE,),
) -> dict[str, str | None]:
    """The annotation patch for a served container: its entry leaves its kind's to-allocate
    (the positions stay); once every kind's to-allocate (``every``) is empty, bind-phase
    becomes `success`. Raises InvalidRequest when the entry is no longer there (another writer
    changed the pod since it was read)."""
    key = assignment.annotation
    entries = deviceannotation.decode(annotations.get(key, ""))
    i = assignment.container_index
    if i >= len(entries) or tuple(entries[i]) != assignment.entry:
        raise InvalidRequest(f"the entry of container {assignment.container!r} changed meanwhile")
    entries[i] = []
    changes: dict[str, str | None] = {key: deviceannotation.encode(entries)}
    others = (annotations[k] for k in every if k != key and k in annotations)
    if not any(entries) and not any(any(deviceannotation.decode(t)) for t in others):
        changes[BIND_PHASE] = "success"
    return changes


def refuse(reason: str) -> dict[str, str | None]:
    """The annotation patch for a refused pod: bind-phase `failed` and why."""
    return {BIND_PHASE: "failed", ALLOCATE_FAILURE: reason[:1024]}
