"""One pod parser for every service: from a Kubernetes pod (a raw dict, parsed here and
nowhere deeper) to placement requests with HAMi's defaults and selectors (the allocator), and
the walk over a pod's containers the webhook admits and mutates. The rules a container must
keep are shared/containerrules.py; problems come back typed and each shell maps them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from shared.containerrules import Limits, first_problem, requested
from shared.devicekinds import DEFAULT_KINDS, KindRegistry
from shared.errors import InvalidRequest
from shared.podresources import container_resources
from shared.resources import (
    GPU_POLICY,
    NODE_POLICY,
    NUMA_BIND,
    SCHEDULER_POLICIES,
    VGPU_MODE,
    VGPU_MODES,
    ResourceNames,
    unknown_policy,
)
from shared.schemas.placement import ContainerRequest


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


Obj = Mapping[str, Any]


def _m(value: object) -> Obj:
    """A mapping, or an empty one: pods are whatever the client sent."""
    return value if isinstance(value, Mapping) else {}


def annotations_of(obj: object) -> Obj:
    return _m(_m(_m(obj).get("metadata")).get("annotations"))


def pod_containers(pod: Obj) -> list[tuple[str, int, Obj]]:
    """(list name, index, container) for every container and init container that is a
    mapping, in the pod's order: what admission checks and patches."""
    spec = _m(pod.get("spec"))
    out = []
    for kind in ("containers", "initContainers"):
        items = spec.get(kind)
        for i, c in enumerate(items if isinstance(items, list) else []):
            if isinstance(c, Mapping):
                out.append((kind, i, c))
    return out


def requests_managed(pod: Obj, resources: ResourceNames) -> bool:
    """Whether any container names one of the resources HAMi manages."""
    return any(
        container_resources(c).get(name) is not None
        for _, _, c in pod_containers(pod)
        for name in resources.managed
    )


def _policy(value: object, key: str) -> str:
    name = str(value)
    if name not in SCHEDULER_POLICIES:
        raise unknown_policy(f"annotation {key}", name)
    return name


def _list(annotations: Mapping[str, Any], key: str) -> tuple[str, ...]:
    if not key:
        return ()  # the kind has no such selector
    value = annotations.get(key)
    if not isinstance(value, str):
        return ()
    return tuple(item.strip() for item in value.split(",") if item.strip())


HAMI_DEFAULTS = PodDefaults()
NO_DEFAULTS = PodDefaults()
"""Other kinds than the default: HAMi's defaultMem and defaultCores are NVIDIA's settings."""
ALLOCATOR_LIMITS = Limits()
"""The device count per container is bounded here too; device memory is checked by fit."""


def parse_pod(
    pod: Mapping[str, Any],
    kinds: KindRegistry = DEFAULT_KINDS,
    defaults: PodDefaults = HAMI_DEFAULTS,
) -> PodRequest:
    """One ContainerRequest per regular container, of the device kind whose resources it names
    (init containers run before and reuse the pod's devices in HAMi, so they ask for none)."""
    annotations = annotations_of(pod)
    node_policy = annotations.get(NODE_POLICY)
    gpu_policy = annotations.get(GPU_POLICY)
    for key, value in ((NODE_POLICY, node_policy), (GPU_POLICY, gpu_policy)):
        if value is not None:
            _policy(value, key)
    numa = str(annotations.get(NUMA_BIND, "")).lower() == "true"
    mode = str(annotations.get(VGPU_MODE, "")).strip().lower()
    if mode and mode not in VGPU_MODES:
        raise InvalidRequest(
            f"annotation {VGPU_MODE} {mode!r} is unknown; allowed: {', '.join(VGPU_MODES)}"
        )
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
        if memory is not None:  # in the kind's units (256 MiB for Cambricon, ...)
            memory = kind.memory_mib(memory, where)
        percent = values.get(names.memory_percentage)
        if (
            memory is None
            and percent is None
            and defaults.default_mem > 0
            and kind is kinds.kinds[0]
        ):
            memory = defaults.default_mem
        cores = (
            kind.cores_percent(values[names.cores], where)
            if names.cores in values
            else defaults.default_cores
        )
        chosen = kind.selectors
        use_types, nouse_types = (
            _list(annotations, chosen.use_type),
            _list(annotations, chosen.nouse_type),
        )
        use_uuids, nouse_uuids = (
            _list(annotations, chosen.use_uuid),
            _list(annotations, chosen.nouse_uuid),
        )
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
                device_mode=mode if kind.name == "nvidia" else "",  # type: ignore[arg-type]
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
