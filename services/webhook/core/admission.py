"""Admission decisions for pods, as pure functions of the AdmissionRequest and the settings.

Returns what to answer: allowed or not, with a message that names the container, the field and
the allowed values, and the JSONPatch operations for mutation. Raw Kubernetes dicts enter here
and nowhere deeper.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from services.webhook.core import dra
from services.webhook.core.settings import INTERNAL_ANNOTATIONS, POLICY_ANNOTATIONS, WebhookSettings
from shared.containerrules import Limits, first_problem
from shared.podresources import container_resources
from shared.podspec import Obj, annotations_of, pod_containers, requests_managed
from shared.resources import TRACE_ANNOTATION
from shared.vendorkinds import VENDOR_KINDS


@dataclass(frozen=True, slots=True)
class Verdict:
    allowed: bool
    message: str = ""
    patch: tuple[dict[str, Any], ...] = field(default=())
    templates: tuple[dict[str, Any], ...] = field(default=())
    """ResourceClaimTemplates the patched pod names (DRA mode): made before the answer."""


ALLOW = Verdict(allowed=True)


def _m(value: object) -> Obj:
    """A mapping, or an empty one: admission input is whatever the client sent."""
    return value if isinstance(value, Mapping) else {}


def _escape(key: str) -> str:
    return key.replace("~", "~0").replace("/", "~1")


def _resource(container: Obj, name: str) -> object | None:
    return container_resources(container).get(name)


def validate_pod(pod: Obj, settings: WebhookSettings) -> str | None:
    """The first reason to refuse this pod (the shared container rules), or None."""
    limits = Limits(
        max_devices_per_container=settings.max_devices_per_container,
        max_device_memory_mib=settings.max_device_memory_mib,
    )
    for kind, i, container in pod_containers(pod):
        where = f"{kind[:-1]} {container.get('name') or i!r}"
        problem = first_problem(container, where, settings.resources, limits)
        if problem is not None:
            return str(problem)
    return None


def _add_limit(kind: str, i: int, container: Obj, name: str, value: str) -> list[dict[str, Any]]:
    base = f"/spec/{kind}/{i}/resources"
    ops: list[dict[str, Any]] = []
    resources = container.get("resources")
    if not isinstance(resources, Mapping):
        return [{"op": "add", "path": base, "value": {"limits": {name: value}}}]
    if not isinstance(resources.get("limits"), Mapping):
        return [{"op": "add", "path": f"{base}/limits", "value": {name: value}}]
    ops.append({"op": "add", "path": f"{base}/limits/{_escape(name)}", "value": value})
    return ops


OTHER_KINDS = tuple(n for kind in VENDOR_KINDS.kinds[1:] for n in kind.resources.managed)
"""The other vendors' resource names (shared/vendorkinds.py): their pods go to our scheduler
too, with no defaults filled (those are NVIDIA's settings)."""


def asks_other_kinds(pod: Obj) -> bool:
    return any(
        name in container_resources(c) for _, _, c in pod_containers(pod) for name in OTHER_KINDS
    )


def mutate_pod(pod: Obj, settings: WebhookSettings) -> list[dict[str, Any]]:
    """JSONPatch for a pod that asks for a managed resource; [] when it does not."""
    if not requests_managed(pod, settings.resources):
        return _scheduler_op(pod, settings) if asks_other_kinds(pod) else []
    ops: list[dict[str, Any]] = []
    for kind, i, container in pod_containers(pod):
        has_count = _resource(container, settings.resources.count) is not None
        has_mem = any(
            _resource(container, n) is not None
            for n in (settings.resources.memory, settings.resources.memory_percentage)
        )
        has_cores = _resource(container, settings.resources.cores) is not None
        if has_count:
            if not has_mem and settings.default_mem > 0:
                ops += _add_limit(
                    kind, i, container, settings.resources.memory, str(settings.default_mem)
                )
                container = _applied(
                    container, settings.resources.memory, str(settings.default_mem)
                )
            if not has_cores and settings.default_cores > 0:
                ops += _add_limit(
                    kind, i, container, settings.resources.cores, str(settings.default_cores)
                )
        elif (has_mem or has_cores) and settings.default_gpu_num > 0:
            ops += _add_limit(
                kind, i, container, settings.resources.count, str(settings.default_gpu_num)
            )
    return ops + _scheduler_op(pod, settings)


def _scheduler_op(pod: Obj, settings: WebhookSettings) -> list[dict[str, Any]]:
    spec = _m(pod.get("spec"))
    if spec.get("schedulerName") in (settings.scheduler_name, *settings.integrated_schedulers):
        return []
    return [
        {
            "op": "add" if "schedulerName" not in spec else "replace",
            "path": "/spec/schedulerName",
            "value": settings.scheduler_name,
        }
    ]


def _applied(container: Obj, name: str, value: str) -> Obj:
    """The container as it will be once a limit is added, so later ops see the limits map."""
    resources = dict(_m(container.get("resources")))
    limits = dict(_m(resources.get("limits")))
    limits[name] = value
    resources["limits"] = limits
    return {**container, "resources": resources}


def strip_internal(pod: Obj) -> list[dict[str, Any]]:
    annotations = annotations_of(pod)
    return [
        {"op": "remove", "path": f"/metadata/annotations/{_escape(key)}"}
        for key in INTERNAL_ANNOTATIONS
        if key in annotations
    ]


def _internal(obj: object) -> dict[str, Any]:
    annotations = annotations_of(obj)
    return {k: v for k, v in annotations.items() if k in INTERNAL_ANNOTATIONS}


def mutate(request: Obj, settings: WebhookSettings, trace_context: str | None = None) -> Verdict:
    """``trace_context``: the admission span's (shared/tracing.py), written on a pod that asks
    for managed devices so the scheduler's and the node's spans join its trace."""
    if request.get("operation") != "CREATE" or _m(request.get("kind")).get("kind") != "Pod":
        return ALLOW
    pod = _m(request.get("object"))
    if settings.dra and requests_managed(pod, settings.resources):
        return _as_claims(request, pod, settings)
    # Forged internal annotations are dropped: only the allocator may write them, after binding.
    ops = strip_internal(pod) + mutate_pod(pod, settings)
    if trace_context is not None and requests_managed(pod, settings.resources):
        ops += _annotate(pod, TRACE_ANNOTATION, trace_context)
    return Verdict(allowed=True, patch=tuple(ops))


def _as_claims(request: Obj, pod: Obj, settings: WebhookSettings) -> Verdict:
    """DRA mode: the pod's HAMi resources as claims (services/webhook/core/dra.py)."""
    problem = validate_pod(pod, settings)
    if problem is not None:
        return Verdict(False, problem)
    try:
        ops, shapes = dra.mutation(pod, settings)
    except dra.NotExpressible as e:
        return Verdict(False, str(e))
    namespace = str(request.get("namespace") or _m(pod.get("metadata")).get("namespace") or "")
    templates = tuple(dra.claim_template(shape, namespace) for shape in shapes)
    return Verdict(True, patch=tuple(ops), templates=templates)


def _annotate(pod: Obj, key: str, value: str) -> list[dict[str, Any]]:
    metadata = _m(pod.get("metadata"))
    if not isinstance(metadata.get("annotations"), Mapping):
        return [{"op": "add", "path": "/metadata/annotations", "value": {key: value}}]
    return [{"op": "add", "path": f"/metadata/annotations/{_escape(key)}", "value": value}]


def validate(request: Obj, settings: WebhookSettings) -> Verdict:
    if _m(request.get("kind")).get("kind") != "Pod":
        return ALLOW
    operation = request.get("operation")
    pod = _m(request.get("object"))
    user = _m(request.get("userInfo")).get("username", "")
    if operation == "CREATE":
        if _internal(pod):
            return Verdict(
                False, "annotations " + ", ".join(sorted(_internal(pod))) + " are set by HAMi only"
            )
        reason = _policy_reason(pod, settings)
        if reason is None and requests_managed(pod, settings.resources):
            reason = validate_pod(pod, settings)
        return Verdict(False, reason) if reason else ALLOW
    if operation == "UPDATE" and user not in settings.trusted_users:
        now, before = _internal(pod), _internal(request.get("oldObject"))
        if now != before:
            changed = sorted(k for k in now.keys() | before.keys() if now.get(k) != before.get(k))
            return Verdict(
                False,
                f"user {user!r} may not change HAMi's internal annotations "
                f"(changed: {', '.join(changed)})",
            )
    return ALLOW


def _policy_reason(pod: Obj, settings: WebhookSettings) -> str | None:
    annotations = annotations_of(pod)
    for key in POLICY_ANNOTATIONS:
        value = annotations.get(key)
        if value is not None and value not in settings.policies:
            return f"annotation {key}={value!r} is unknown; allowed: {', '.join(settings.policies)}"
    return None
