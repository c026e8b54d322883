"""From a Kubernetes pod (a raw dict, parsed here and nowhere deeper) to placement requests,
with HAMi's defaults and selectors; and back to HAMi's annotation encoding."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from services.allocator.core.kinds import DEFAULT_KINDS, KindRegistry
from services.allocator.core.policies import policy_named
from shared import deviceannotation
from shared.deviceannotation import AnnotatedDevice
from shared.errors import InvalidRequest
from shared.podresources import container_resources, whole_quantity
from shared.resources import (
    GPU_POLICY,
    NODE_POLICY,
    NOUSE_TYPE,
    NOUSE_UUID,
    NUMA_BIND,
    USE_TYPE,
    USE_UUID,
)
from shared.schemas.placement import ContainerRequest, DeviceGrant


@dataclass(frozen=True, slots=True)
class PodDefaults:
    default_mem: int = 0
    """MiB when only a count is given; 0: the whole device (HAMi's defaultMem)."""
    default_cores: int = 0
    default_gpu_num: int = 1


@dataclass(frozen=True, slots=True)
class PodRequest:
    containers: tuple[ContainerRequest, ...]
    node_policy: str | None
    gpu_policy: str | None
    priority: int

    @property
    def wants_devices(self) -> bool:
        return any(c.count for c in self.containers)


def _m(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _whole(value: object, where: str, name: str) -> int:
    number = whole_quantity(value)
    if number is None or number < 0:
        raise InvalidRequest(f"{where}: {name}={value!r} must be a whole number >= 0")
    return number


def _list(annotations: Mapping[str, Any], key: str) -> tuple[str, ...]:
    value = annotations.get(key)
    if not isinstance(value, str):
        return ()
    return tuple(item.strip() for item in value.split(",") if item.strip())


HAMI_DEFAULTS = PodDefaults()


def parse_pod(
    pod: Mapping[str, Any],
    kinds: KindRegistry = DEFAULT_KINDS,
    defaults: PodDefaults = HAMI_DEFAULTS,
) -> PodRequest:
    """One ContainerRequest per regular container, of the device kind whose resources it names
    (init containers run before and reuse the pod's devices in HAMi, so they ask for none)."""
    annotations = _m(_m(pod.get("metadata")).get("annotations"))
    node_policy = annotations.get(NODE_POLICY)
    gpu_policy = annotations.get(GPU_POLICY)
    for key, value in ((NODE_POLICY, node_policy), (GPU_POLICY, gpu_policy)):
        if value is not None:
            policy_named(str(value), field=f"annotation {key}")
    numa = str(annotations.get(NUMA_BIND, "")).lower() == "true"
    use_types, nouse_types = _list(annotations, USE_TYPE), _list(annotations, NOUSE_TYPE)
    use_uuids, nouse_uuids = _list(annotations, USE_UUID), _list(annotations, NOUSE_UUID)
    containers = []
    priority = 1
    raw = _m(pod.get("spec")).get("containers")
    for i, container in enumerate(raw if isinstance(raw, Sequence) else []):
        container = _m(container)
        where = f"container {container.get('name') or i!r}"
        values = container_resources(container)
        kind = kinds.asked_by(values, where) or kinds.kinds[0]
        names = kind.resources
        has = {n: n in values for n in names.managed}
        count = _whole(values[names.count], where, names.count) if has[names.count] else 0
        if not count and (has[names.memory] or has[names.memory_percentage] or has[names.cores]):
            count = defaults.default_gpu_num
        memory = _whole(values[names.memory], where, names.memory) if has[names.memory] else None
        percent = (
            _whole(values[names.memory_percentage], where, names.memory_percentage)
            if has[names.memory_percentage]
            else None
        )
        if memory is None and percent is None and defaults.default_mem > 0:
            memory = defaults.default_mem
        cores = (
            _whole(values[names.cores], where, names.cores)
            if has[names.cores]
            else defaults.default_cores
        )
        if names.priority in values:
            priority = min(priority, _whole(values[names.priority], where, names.priority))
        containers.append(
            ContainerRequest(
                name=str(container.get("name") or i),
                kind=kind.name,
                count=count,
                memory_mib=memory,
                memory_percent=percent,
                cores=cores,
                numa_bind=numa,
                use_types=use_types,
                nouse_types=nouse_types,
                use_uuids=use_uuids,
                nouse_uuids=nouse_uuids,
            )
        )
    return PodRequest(
        containers=tuple(containers),
        node_policy=node_policy,
        gpu_policy=gpu_policy,
        priority=priority,
    )


def encode_devices(
    containers: Sequence[Sequence[DeviceGrant]], kinds: KindRegistry = DEFAULT_KINDS
) -> str:
    """HAMi's `hami.io/vgpu-devices-to-allocate` encoding (shared.deviceannotation)."""
    return deviceannotation.encode(
        [
            [
                AnnotatedDevice(g.uuid, kinds.named(g.kind).annotation_type, g.memory_mib, g.cores)
                for g in grants
            ]
            for grants in containers
        ]
    )


decode_devices = deviceannotation.decode
