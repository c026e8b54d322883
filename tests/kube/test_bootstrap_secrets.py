"""The two steps that make secrets on a cluster, against the real API server: NATS
credentials (shared/natssecrets.py) and the webhook's bootstrap certificate
(services/webhook/bootstrap.py). Both are idempotent, survive a crash between their writes,
and two replicas racing end with one answer."""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from pathlib import Path

from services.webhook.bootstrap import Bootstrap, ensure_certificate
from shared.kube.client import KubeClient
from shared.natssecrets import SERVER_SECRET, ensure_secrets, secret_manifest, user_secret
from tests.e2e.controlplane.cluster import ControlPlane
from tests.kube.manifests import WEBHOOK_RESOURCES, webhook_configurations


def namespace(plane: ControlPlane) -> str:
    name = f"creds-{uuid.uuid4().hex[:6]}"
    plane.request(
        "POST",
        "/api/v1/namespaces",
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}},
    )
    return name


def secret_data(plane: ControlPlane, ns: str, name: str) -> dict[str, str]:
    data = plane.request("GET", f"/api/v1/namespaces/{ns}/secrets/{name}")["data"]
    return {k: base64.b64decode(v).decode() for k, v in data.items()}


async def test_credentials_are_made_once_and_a_crash_midway_loses_nothing(
    control_plane: ControlPlane,
) -> None:
    ns = namespace(control_plane)
    kube = await KubeClient.from_kubeconfig(str(control_plane.kubeconfig))
    try:
        # A run that died after the first user's Secret: the rerun keeps that password.
        earlier = json.dumps({"user": "allocator", "password": "kept-from-before"})
        await kube.create_secret(
            ns, secret_manifest(user_secret("allocator"), ns, {"credentials.json": earlier})
        )
        assert await ensure_secrets(kube, ns, "hami-nats", 3) is True
        assert await ensure_secrets(kube, ns, "hami-nats", 3) is False  # nothing to do
    finally:
        await kube.close()
    server = secret_data(control_plane, ns, SERVER_SECRET)
    assert '"password": "kept-from-before"' in server["auth.conf"]
    users = {
        u: json.loads(secret_data(control_plane, ns, user_secret(u))["credentials.json"])
        for u in ("allocator", "nodeagent", "telemetry", "client")
    }
    passwords = {u["password"] for u in users.values()}
    assert len(passwords) == 4  # one per service, no shared password
    for user in users.values():
        assert f'"password": "{user["password"]}"' in server["auth.conf"]
    assert server["routes.conf"].count(f"hami-nats.{ns}.svc:6222") == 3


async def test_racing_webhook_replicas_serve_one_certificate_and_set_its_ca(
    control_plane: ControlPlane, tmp_path: Path
) -> None:
    ns = namespace(control_plane)
    name = f"hami-webhook-{uuid.uuid4().hex[:6]}"
    for doc in webhook_configurations(9, b"not yet"):
        doc["metadata"]["name"] = name
        for hook in doc["webhooks"]:
            hook["clientConfig"].pop("caBundle")
            # Nothing matches: these configurations must not intercept the other tests' pods.
            hook["objectSelector"] = {"matchLabels": {"never": name}}
        control_plane.request(
            "POST", f"/apis/admissionregistration.k8s.io/v1/{WEBHOOK_RESOURCES[doc['kind']]}", doc
        )
    plan = Bootstrap(secret=f"{ns}/hami-webhook-tls", service="hami-webhook", configuration=name)
    kubes = [await KubeClient.from_kubeconfig(str(control_plane.kubeconfig)) for _ in range(3)]
    try:
        pairs = await asyncio.gather(
            *(ensure_certificate(k, plan, tmp_path / str(i)) for i, k in enumerate(kubes))
        )
    finally:
        for kube in kubes:
            await kube.close()
    certs = {cert.read_bytes() for cert, _ in pairs}
    assert len(certs) == 1  # every replica serves the winner's pair
    ca = secret_data(control_plane, ns, "hami-webhook-tls")["ca.crt"]
    for resource in WEBHOOK_RESOURCES.values():
        config = control_plane.request(
            "GET", f"/apis/admissionregistration.k8s.io/v1/{resource}/{name}"
        )
        for hook in config["webhooks"]:
            assert base64.b64decode(hook["clientConfig"]["caBundle"]).decode() == ca
    assert pairs[0][1].stat().st_mode & 0o777 == 0o600
