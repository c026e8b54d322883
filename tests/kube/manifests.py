"""Pod manifests for the tests against the real control plane."""

from __future__ import annotations

from typing import Any


def pod_manifest(
    name: str,
    *,
    scheduler: str | None = None,
    limits: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A pod in ``default`` with one container; it tolerates kwok's node taints.
    ``scheduler``: None leaves schedulerName to the API server (and the webhook)."""
    container: dict[str, Any] = {"name": "main", "image": "busybox"}
    if limits:
        container["resources"] = {"limits": limits}
    spec: dict[str, Any] = {"containers": [container], "tolerations": [{"operator": "Exists"}]}
    if scheduler is not None:
        spec["schedulerName"] = scheduler
    metadata: dict[str, Any] = {"name": name, "namespace": "default"}
    if annotations:
        metadata["annotations"] = annotations
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec}
