"""Dynamic Resource Allocation, pure: the node's GPUs as `resource.k8s.io/v1` devices with
consumable capacity (kube-scheduler allocates shares of them itself), and a prepared claim as
the same container contract the device plugin gives (limits' environment, the library and
`/etc/ld.so.preload`, the region, the limits file), written as a CDI spec.

A device offers `memory` (MiB, as the allocator counts it, after memory scaling), `cores`
(percent of the device) and `shares` (its split count): a claim that names no capacity takes
the whole device (the defaults are everything, and one share); a share names what it takes,
rounded up to whole MiB and cores by the request policies."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec

from services.nodeagent.core.containerspec import ContainerSpec, HostLayout, container_spec
from services.nodeagent.core.handshake import Assignment
from services.nodeagent.core.inventory import SharingPolicy, device_info
from services.nodeagent.core.readings import DeviceReading, DriverInfo
from shared.quantity import parse_k8s_quantity
from shared.schemas.placement import DeviceGrant

DRIVER = "gpu.hami.io"
"""The DRA driver's name: its ResourceSlices, DeviceClass, attributes' domain, CDI vendor."""
DEVICE_CLASS = DRIVER
CDI_KIND = f"{DRIVER}/claim"
API = "resource.k8s.io/v1"
MIB = 1024 * 1024

Obj = Mapping[str, Any]


class ClaimRefused(Exception):
    """This claim cannot be prepared here; the message says why (the kubelet puts it on the
    pod's events and retries)."""


def device_name(reading: DeviceReading) -> str:
    return f"gpu-{reading.index}"


def slice_name(node: str) -> str:
    return f"{node}-{DRIVER}"


def _device(reading: DeviceReading, policy: SharingPolicy, driver: DriverInfo) -> dict[str, Any]:
    info = device_info(reading, policy)
    attributes: dict[str, dict[str, Any]] = {
        "type": {"string": "gpu"},
        "uuid": {"string": info.uuid},
        "index": {"int": info.index},
        "productName": {"string": info.model},
        "driverVersion": {"string": driver.driver_version or "unknown"},
        "pciBusID": {"string": info.pci_bus_id or "unknown"},
        "migCapable": {"bool": False},
        "simulated": {"bool": info.simulated},
    }
    if info.numa_node is not None:
        attributes["numaNode"] = {"int": info.numa_node}
    return {
        "name": device_name(reading),
        "attributes": attributes,
        "capacity": {
            "memory": {
                "value": f"{info.memory_mib}Mi",
                "requestPolicy": {
                    "default": f"{info.memory_mib}Mi",
                    "validRange": {"min": "1Mi", "max": f"{info.memory_mib}Mi", "step": "1Mi"},
                },
            },
            "cores": {
                "value": str(info.cores),
                "requestPolicy": {
                    "default": str(info.cores),
                    "validRange": {"min": "0", "max": str(info.cores), "step": "1"},
                },
            },
            "shares": {
                "value": str(info.split_count),
                "requestPolicy": {"default": "1", "validValues": ["1"]},
            },
        },
        "allowMultipleAllocations": True,
    }


def resource_slice(
    node: str,
    readings: Sequence[DeviceReading],
    policy: SharingPolicy,
    driver: DriverInfo,
    generation: int,
) -> dict[str, Any]:
    """The node's one ResourceSlice: its healthy NVIDIA GPUs shared by interception (an
    unhealthy one is withdrawn, so no new claim is allocated on it; other kinds' devices, GPUs
    in MIG mode and MIG instances are not this driver's)."""
    return {
        "apiVersion": API,
        "kind": "ResourceSlice",
        "metadata": {"name": slice_name(node), "labels": {"app.kubernetes.io/managed-by": DRIVER}},
        "spec": {
            "driver": DRIVER,
            "nodeName": node,
            "pool": {"name": node, "generation": generation, "resourceSliceCount": 1},
            "devices": [
                _device(r, policy, driver)
                for r in sorted(readings, key=lambda r: r.index)
                if r.healthy and r.kind == "nvidia" and r.isolation is None
            ],
        },
    }


def device_class() -> dict[str, Any]:
    return {
        "apiVersion": API,
        "kind": "DeviceClass",
        "metadata": {"name": DEVICE_CLASS},
        "spec": {"selectors": [{"cel": {"expression": f'device.driver == "{DRIVER}"'}}]},
    }


class ClaimConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, rename="camel"):
    """The opaque configuration a claim may carry for this driver
    (`spec.devices.config[].opaque.parameters`)."""

    priority: int = 1
    """HAMi's task priority (CUDA_TASK_PRIORITY): 0 high, 1 normal."""

    def __post_init__(self) -> None:
        if self.priority not in (0, 1):
            raise ValueError("priority must be 0 (high) or 1 (normal)")


@dataclass(frozen=True, slots=True)
class Result:
    """One device result of the claim's allocation that is ours, on this node."""

    request: str
    device: str
    share_id: str | None
    grant: DeviceGrant


def _amount(consumed: Obj, name: str, whole: int, unit: int) -> int:
    raw = consumed.get(name)
    if raw is None:
        return whole
    try:
        value = parse_k8s_quantity(str(raw)) / unit
    except (ValueError, ZeroDivisionError) as e:
        raise ClaimRefused(f"consumed {name} {raw!r} is not a quantity: {e}") from None
    amount = math.ceil(value)  # the request policy's step is 1: a fraction is rounded up
    if not 0 <= amount <= whole:
        raise ClaimRefused(f"consumed {name} {raw!r} is outside 0..{whole} on this device")
    return amount


def claim_results(
    claim: Obj, node: str, readings: Sequence[DeviceReading], policy: SharingPolicy
) -> tuple[Result, ...]:
    """What the scheduler allocated to ``claim`` from this node's pool, as grants; refused
    when the allocation names a device this node does not have or amounts it cannot give."""
    allocation = ((claim.get("status") or {}).get("allocation") or {}).get("devices") or {}
    by_name = {device_name(r): r for r in readings}
    out = []
    for result in allocation.get("results") or ():
        if result.get("driver") != DRIVER or result.get("pool") != node:
            continue
        name = str(result.get("device", ""))
        reading = by_name.get(name)
        if reading is None:
            raise ClaimRefused(f"device {name!r} of pool {node} is not on this node")
        info = device_info(reading, policy)
        consumed = result.get("consumedCapacity") or {}
        grant = DeviceGrant(
            uuid=info.uuid,
            index=info.index,
            model=info.model,
            kind=info.kind,
            memory_mib=_amount(consumed, "memory", info.memory_mib, MIB),
            cores=_amount(consumed, "cores", info.cores, 1),
        )
        out.append(Result(str(result.get("request", "")), name, result.get("shareID"), grant))
    if not out:
        raise ClaimRefused(f"the claim has no device of driver {DRIVER} allocated on {node}")
    return tuple(out)


def claim_config(claim: Obj) -> ClaimConfig:
    """The claim's opaque configuration for this driver; a malformed one refuses the claim."""
    found: dict[str, Any] = {}
    for entry in ((claim.get("spec") or {}).get("devices") or {}).get("config") or ():
        opaque = entry.get("opaque") or {}
        if opaque.get("driver") != DRIVER:
            continue
        parameters = opaque.get("parameters")
        if not isinstance(parameters, Mapping):
            raise ClaimRefused("the opaque configuration's parameters must be an object")
        found.update(parameters)
    found.pop("apiVersion", None)
    found.pop("kind", None)
    try:
        return msgspec.convert(found, ClaimConfig)
    except (msgspec.ValidationError, ValueError) as e:
        raise ClaimRefused(f"opaque configuration for {DRIVER}: {e}") from None


def claim_key(uid: str) -> str:
    """The region and limits directory of a claim (one per claim, shared by its containers)."""
    return f"{uid}_claim"


def claim_spec(
    claim: Obj,
    results: Sequence[Result],
    readings: Mapping[str, DeviceReading],
    layout: HostLayout,
    control: Sequence[str] = (),
) -> ContainerSpec:
    """The container contract of a claim: what the device plugin path gives a container."""
    metadata = claim.get("metadata") or {}
    uid = str(metadata.get("uid", ""))
    if not uid:
        raise ClaimRefused("the claim has no metadata.uid")
    config = claim_config(claim)
    assignment = Assignment(
        namespace=str(metadata.get("namespace", "")),
        pod=str(metadata.get("name", "")),
        pod_uid=uid,
        container_index=0,
        container="claim",
        grants=tuple(r.grant for r in results),
        priority=config.priority,
        allocation_id=f"claim/{uid}",
        entry=(),
    )
    return container_spec(assignment, readings, layout, control)


def cdi_spec(uid: str, results: Sequence[Result], spec: ContainerSpec) -> dict[str, Any]:
    """One CDI spec per claim: a CDI device per allocated device (what the kubelet injects),
    the contract's environment, mounts and device nodes once for the spec."""
    return {
        "cdiVersion": "0.6.0",
        "kind": CDI_KIND,
        # CDI refuses a device with empty edits: each names its GPU (visible device i).
        "devices": [
            {
                "name": f"{uid}-{r.device}",
                "containerEdits": {"env": [f"HAMI_CLAIM_DEVICE_{i}={r.grant.uuid}"]},
            }
            for i, r in enumerate(results)
        ],
        "containerEdits": {
            "env": [f"{k}={v}" for k, v in sorted(spec.envs.items())],
            "mounts": [
                {
                    "hostPath": m.host_path,
                    "containerPath": m.container_path,
                    "options": ["ro" if m.read_only else "rw", "bind", "nosuid", "nodev"],
                }
                for m in spec.mounts
            ],
            "deviceNodes": [
                {"path": d.container_path, "hostPath": d.host_path} for d in spec.devices
            ],
        },
    }


def cdi_ids(uid: str, result: Result) -> list[str]:
    return [f"{CDI_KIND}={uid}-{result.device}"]
