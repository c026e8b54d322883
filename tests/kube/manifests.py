"""Pod manifests for the tests against the real control plane."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import yaml

from tests.e2e.controlplane.cluster import ControlPlane

DEPLOY = Path(__file__).resolve().parents[2] / "deploy/kustomize/base"
ADMISSION = DEPLOY / "webhook/admission.yaml"
SCHEDULER_CONFIG = DEPLOY / "allocator/kube-scheduler-config.yaml"
WEBHOOK_RESOURCES = {
    "MutatingWebhookConfiguration": "mutatingwebhookconfigurations",
    "ValidatingWebhookConfiguration": "validatingwebhookconfigurations",
}


def webhook_configurations(port: int, ca: bytes) -> list[dict[str, Any]]:
    """deploy/'s admission configurations, pointed at a webhook on loopback."""
    docs = [d for d in yaml.safe_load_all(ADMISSION.read_text()) if d]
    for doc in docs:
        for hook in doc["webhooks"]:
            path = hook["clientConfig"]["service"]["path"]
            hook["clientConfig"] = {
                "url": f"https://127.0.0.1:{port}{path}",
                "caBundle": base64.b64encode(ca).decode(),
            }
    return docs


def start_hami_scheduler(
    plane: ControlPlane, name: str, extender_url: str, directory: Path
) -> None:
    """A second kube-scheduler named ``name``, wired to the extender as deploy/ shows."""
    config = directory / f"{name}.yaml"
    config.write_text(scheduler_configuration(plane.kubeconfig, name, extender_url))
    plane.start(
        name,
        [
            str(plane.binaries / "kube-scheduler"),
            "--config",
            str(config),
            "--secure-port",
            "0",
            "--v",
            "2",
        ],
    )


def scheduler_configuration(kubeconfig: Path, scheduler: str, extender_url: str) -> str:
    """deploy/'s kube-scheduler configuration for a test: its own name, no election."""
    config = yaml.safe_load(SCHEDULER_CONFIG.read_text())
    config["leaderElection"] = {"leaderElect": False}
    config["clientConnection"] = {"kubeconfig": str(kubeconfig)}
    config["profiles"] = [{"schedulerName": scheduler}]
    config["extenders"][0]["urlPrefix"] = extender_url
    return str(yaml.safe_dump(config))


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
