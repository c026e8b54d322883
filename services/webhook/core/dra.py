"""HAMi's pod YAML on a cluster in DRA mode: a container that asks for `nvidia.com/gpu`,
`gpumem` and `gpucores` gets a ResourceClaim of the same shape instead (from a
ResourceClaimTemplate per shape and namespace, which the webhook makes when missing), so
kube-scheduler allocates the share itself and HAMi users still do not change their YAML.

Pure: the pod in; the JSONPatch and the templates it needs out, or the reason it cannot be
expressed (a memory percentage names no amount until a device is chosen: DRA requests are
absolute)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from services.webhook.core.settings import WebhookSettings
from shared.podresources import container_resources, whole_quantity
from shared.podspec import Obj, annotations_of, pod_containers
from shared.resources import VGPU_MODE

DRIVER = "gpu.hami.io"
DEVICE_CLASS = DRIVER
CLAIM_PREFIX = "hami-gpu"
TEMPLATE_LABEL = "app.kubernetes.io/managed-by"


@dataclass(frozen=True, slots=True)
class Shape:
    count: int
    memory_mib: int | None
    """None: the whole device's memory."""
    cores: int | None
    """None: the whole device's compute."""
    priority: int | None = None
    """HAMi's task priority (nvidia.com/priority), carried as the claim's opaque config."""

    @property
    def template(self) -> str:
        memory = "all" if self.memory_mib is None else f"{self.memory_mib}mi"
        cores = "all" if self.cores is None else str(self.cores)
        priority = "" if self.priority is None else f"-p{self.priority}"
        return f"{CLAIM_PREFIX}-{self.count}x-{memory}-{cores}c{priority}"


class NotExpressible(ValueError):
    """The request has no DRA form; the message says which container and why."""


def _escape(key: str) -> str:
    return key.replace("~", "~0").replace("/", "~1")


def shape_of(container: Obj, settings: WebhookSettings, where: str) -> Shape | None:
    values = container_resources(container)
    names = settings.resources
    if all(values.get(n) is None for n in names.managed):
        return None
    if values.get(names.memory_percentage) is not None:
        raise NotExpressible(
            f"{where}: {names.memory_percentage} cannot be asked through DRA (claims name "
            f"amounts): ask {names.memory} in MiB instead"
        )
    count = whole_quantity(values.get(names.count, settings.default_gpu_num))
    raw_priority = values.get(names.priority)
    priority = None if raw_priority is None else whole_quantity(raw_priority)
    if raw_priority is not None and priority not in (0, 1):
        raise NotExpressible(f"{where}: {names.priority} must be 0 or 1")
    memory = values.get(names.memory)
    cores = values.get(names.cores)
    mem = whole_quantity(memory) if memory is not None else (settings.default_mem or None)
    # A memory share without cores takes the default cores (0: no compute reserved, as the
    # allocator counts it), not the device's default of all of them, which would keep every
    # other share off the device; a count alone is the whole device.
    if cores is not None:
        core = whole_quantity(cores)
    else:
        core = settings.default_cores if mem is not None else None
    if (
        count is None
        or count < 1
        or (mem is not None and mem < 1)
        or (core is not None and not 0 <= core <= 100)
    ):
        raise NotExpressible(f"{where}: {names.count}, {names.memory} or {names.cores} is invalid")
    return Shape(count, mem, core, priority)


def claim_template(shape: Shape, namespace: str) -> dict[str, Any]:
    exactly: dict[str, Any] = {"deviceClassName": DEVICE_CLASS, "count": shape.count}
    requests = {}
    if shape.memory_mib is not None:
        requests["memory"] = f"{shape.memory_mib}Mi"
    if shape.cores is not None:
        requests["cores"] = str(shape.cores)
    if requests:
        exactly["capacity"] = {"requests": requests}
    spec: dict[str, Any] = {"devices": {"requests": [{"name": "gpu", "exactly": exactly}]}}
    if shape.priority is not None:
        opaque = {"driver": DRIVER, "parameters": {"priority": shape.priority}}
        spec["devices"]["config"] = [{"requests": ["gpu"], "opaque": opaque}]
    return {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaimTemplate",
        "metadata": {
            "name": shape.template,
            "namespace": namespace,
            "labels": {TEMPLATE_LABEL: "hami-webhook"},
        },
        "spec": {"spec": spec},
    }


def mutation(pod: Obj, settings: WebhookSettings) -> tuple[list[dict[str, Any]], list[Shape]]:
    """The patch turning each managed container's HAMi resources into a claim of its own, and
    the shapes whose templates must exist. Raises NotExpressible."""
    ops: list[dict[str, Any]] = []
    shapes: list[Shape] = []
    claims: list[dict[str, str]] = []
    names = settings.resources
    mode = str(annotations_of(pod).get(VGPU_MODE, "")).strip().lower()
    if mode == "mig":
        raise NotExpressible(
            f"{VGPU_MODE}: mig cannot be asked through DRA (its claims are shares of GPUs "
            "shared by interception); use a node in mig mode with the device plugin"
        )
    for kind, i, container in pod_containers(pod):
        where = f"{kind}[{i}] {container.get('name', '')!r}"
        shape = shape_of(container, settings, where)
        if shape is None:
            continue
        base = f"/spec/{kind}/{i}/resources"
        resources = container.get("resources") or {}
        for section in ("limits", "requests"):
            given = resources.get(section) or {}
            for name in (*names.managed, names.priority):
                if name in given:
                    ops.append({"op": "remove", "path": f"{base}/{section}/{_escape(name)}"})
        claim = f"{CLAIM_PREFIX}-{'init-' if kind == 'initContainers' else ''}{i}"
        entry = {"name": claim}
        if isinstance(resources.get("claims"), list):
            ops.append({"op": "add", "path": f"{base}/claims/-", "value": entry})
        else:
            ops.append({"op": "add", "path": f"{base}/claims", "value": [entry]})
        claims.append({"name": claim, "resourceClaimTemplateName": shape.template})
        if shape not in shapes:
            shapes.append(shape)
    if not claims:
        return [], []
    spec = pod.get("spec") or {}
    if isinstance(spec.get("resourceClaims"), list):
        ops += [{"op": "add", "path": "/spec/resourceClaims/-", "value": c} for c in claims]
    else:
        ops.append({"op": "add", "path": "/spec/resourceClaims", "value": claims})
    return ops, shapes
