"""From a Kubernetes pod (a raw dict, parsed here and nowhere deeper) to placement requests,
with HAMi's defaults and selectors; and back to HAMi's annotation encoding."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from services.allocator.core.kinds import DEFAULT_KINDS, KindRegistry
from services.allocator.core.policies import policy_named
from shared import deviceannotation
from shared.containerrules import Limits, first_problem, requested
from shared.deviceannotation import AnnotatedDevice
from shared.errors import InvalidRequest
from shared.podresources import container_resources
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


def _list(annotations: Mapping[str, Any], key: str) -> tuple[str, ...]:
    value = annotations.get(key)
    if not isinstance(value, str):
        return ()
    return tuple(item.strip() for item in value.split(",") if item.strip())


HAMI_DEFAULTS = PodDefaults()
ALLOCATOR_LIMITS = Limits()
"""The device count per container is bounded here too; device memory is checked by fit."""


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
        kind = kinds.asked_by(container_resources(container), where) or kinds.kinds[0]
        names = kind.resources
        problem = first_problem(container, where, names, ALLOCATOR_LIMITS)
        if problem is not None:  # the webhook's rules, so a pod it admits is read the same
            raise InvalidRequest(str(problem))
        values, _ = requested(container, where, names)
        count = values.get(names.count, 0)
        if not count and any(
            n in values for n in (names.memory, names.memory_percentage, names.cores)
        ):
            count = defaults.default_gpu_num
        memory = values.get(names.memory)
        percent = values.get(names.memory_percentage)
        if memory is None and percent is None and defaults.default_mem > 0:
            memory = defaults.default_mem
        cores = values.get(names.cores, defaults.default_cores)
        if names.priority in values:
            priority = min(priority, values[names.priority])
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
