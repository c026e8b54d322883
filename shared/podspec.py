"""One pod parser for every service: from a Kubernetes pod (a raw dict, parsed here and
nowhere deeper) to placement requests with HAMi's defaults and selectors (the allocator), and
the walk over a pod's containers the webhook admits and mutates. The rules a container must
keep are shared/containerrules.py; problems come back typed and each shell maps them."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from shared.containerrules import Limits, first_problem, requested
from shared.devicekinds import DEFAULT_KINDS, KindRegistry
from shared.errors import InvalidRequest
from shared.podresources import container_resources
from shared.quantity import parse_k8s_quantity
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
from shared.schemas.inventory import HOST_MAX
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
    cpu_milli: int = 0
    """The pod's host CPU request as kube-scheduler counts it (host_requests)."""
    memory_mib: int = 0

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
    cpu, memory = host_requests(pod)
    return PodRequest(
        containers=tuple(containers),
        node_policy=node_policy,
        gpu_policy=gpu_policy,
        priority=priority,
        cpu_milli=cpu,
        memory_mib=memory,
    )


def _host_amount(value: object, unit: Fraction, where: str) -> int:
    """A CPU (``unit`` 1/1000: milli-cores) or memory (2**20: MiB) quantity, rounded up."""
    try:
        amount = parse_k8s_quantity(str(value))
    except ValueError as e:
        raise InvalidRequest(f"{where}: {e}") from None
    if amount < 0:
        raise InvalidRequest(f"{where}: {value!r} is negative")
    whole = math.ceil(amount / unit)
    if whole > HOST_MAX:
        raise InvalidRequest(f"{where}: {value!r} is out of range")
    return whole


def _container_host(container: Obj, where: str) -> tuple[int, int]:
    """A container's CPU and memory requests (a limit alone stands for the request, as the API
    server defaults it)."""
    resources = _m(container.get("resources"))
    requests, limits = _m(resources.get("requests")), _m(resources.get("limits"))
    out = []
    for name, unit in (("cpu", Fraction(1, 1000)), ("memory", Fraction(2**20))):
        value = requests.get(name, limits.get(name))
        out.append(0 if value is None else _host_amount(value, unit, f"{where} {name}"))
    return out[0], out[1]


def host_requests(pod: Obj) -> tuple[int, int]:
    """The pod's CPU (milli-cores) and memory (MiB) requests as kube-scheduler sums them: the
    containers and restartable init containers (sidecars) together, or the largest other init
    container with the sidecars started before it if that is more, plus the pod's overhead."""
    spec = _m(pod.get("spec"))
    total = [0, 0]
    sidecars = [0, 0]
    init_peak = [0, 0]
    for kind in ("initContainers", "containers"):
        items = spec.get(kind)
        for i, c in enumerate(items if isinstance(items, list) else []):
            c = _m(c)
            cpu, memory = _container_host(c, f"{kind}[{c.get('name') or i}]")
            if kind == "containers":
                total = [total[0] + cpu, total[1] + memory]
            elif c.get("restartPolicy") == "Always":
                sidecars = [sidecars[0] + cpu, sidecars[1] + memory]
            else:
                init_peak = [
                    max(init_peak[0], sidecars[0] + cpu),
                    max(init_peak[1], sidecars[1] + memory),
                ]
    overhead = _container_host({"resources": {"requests": _m(spec.get("overhead"))}}, "overhead")
    cpu = max(total[0] + sidecars[0], init_peak[0]) + overhead[0]
    memory = max(total[1] + sidecars[1], init_peak[1]) + overhead[1]
    return min(cpu, HOST_MAX), min(memory, HOST_MAX)
