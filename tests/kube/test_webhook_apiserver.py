"""The real API server calls our webhook over TLS, using the deploy/ manifests."""

from __future__ import annotations

import asyncio
import copy
import urllib.error
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from services.webhook.core.settings import WebhookSettings
from services.webhook.service import ServeSettings, serve
from tests.e2e.controlplane.cluster import ControlPlane
from tests.kube.manifests import WEBHOOK_RESOURCES, pod_manifest, webhook_configurations

pytestmark = pytest.mark.slow
TRUSTED = "system:serviceaccount:hami-system:hami-allocator"


@pytest.fixture
async def webhook(control_plane: ControlPlane) -> AsyncIterator[ControlPlane]:
    pair = control_plane.pki.leaf("webhook")
    stop = asyncio.Event()
    ports: list[int] = []
    settings = ServeSettings(
        host="127.0.0.1",
        port=0,
        cert_file=str(pair.cert),
        key_file=str(pair.key),
        admission=WebhookSettings(default_mem=2000, default_cores=10),
    )
    ready = asyncio.Event()

    def started(port: int) -> None:
        ports.append(port)
        ready.set()

    task = asyncio.create_task(serve(settings, stop, started=started))
    await asyncio.wait_for(ready.wait(), 10)
    docs = webhook_configurations(ports[0], control_plane.pki.ca.cert.read_bytes())
    paths = WEBHOOK_RESOURCES
    for doc in docs:
        await asyncio.to_thread(
            control_plane.request,
            "POST",
            f"/apis/admissionregistration.k8s.io/v1/{paths[doc['kind']]}",
            doc,
        )
    await asyncio.sleep(1.5)  # the API server picks up new webhook configurations asynchronously
    yield control_plane
    for doc in docs:
        await asyncio.to_thread(
            control_plane.request,
            "DELETE",
            f"/apis/admissionregistration.k8s.io/v1/{paths[doc['kind']]}/{doc['metadata']['name']}",
        )
    stop.set()
    await task


def gpu_pod(
    name: str, limits: dict[str, str], annotations: dict[str, str] | None = None
) -> dict[str, Any]:
    return pod_manifest(name, limits=limits, annotations=annotations)


async def post_pod(plane: ControlPlane, manifest: dict[str, Any]) -> dict[str, Any]:
    return await asyncio.to_thread(
        plane.request, "POST", "/api/v1/namespaces/default/pods", manifest
    )


async def test_pod_is_mutated_and_forged_annotations_never_land(webhook: ControlPlane) -> None:
    name = f"wh-{uuid.uuid4().hex[:6]}"
    created = await post_pod(
        webhook,
        gpu_pod(
            name,
            {"nvidia.com/gpu": "1"},
            annotations={
                "hami.io/vgpu-devices-to-allocate": "GPU-forged,NVIDIA,999999,100:;",
                "hami.io/vgpu-node": "stolen",
                "team": "a",
            },
        ),
    )
    assert created["spec"]["schedulerName"] == "hami-scheduler"
    assert created["spec"]["containers"][0]["resources"]["limits"] == {
        "nvidia.com/gpu": "1",
        "nvidia.com/gpumem": "2k",  # the API server canonicalises 2000
        "nvidia.com/gpucores": "10",
    }
    assert created["metadata"]["annotations"] == {"team": "a"}


async def test_invalid_pod_is_denied_with_our_message(webhook: ControlPlane) -> None:
    with pytest.raises(urllib.error.HTTPError) as info:
        await post_pod(
            webhook,
            gpu_pod(
                f"bad-{uuid.uuid4().hex[:6]}", {"nvidia.com/gpu": "1", "nvidia.com/gpucores": "150"}
            ),
        )
    body = info.value.read().decode()
    assert info.value.code in (400, 403, 422)
    assert "container 'main'" in body and "nvidia.com/gpucores=150 must be 0..100" in body


async def test_only_trusted_accounts_update_internal_annotations(webhook: ControlPlane) -> None:
    name = f"upd-{uuid.uuid4().hex[:6]}"
    created = await post_pod(webhook, gpu_pod(name, {"nvidia.com/gpu": "1"}))
    forged = copy.deepcopy(created)
    forged["metadata"]["annotations"] = {"hami.io/bind-phase": "success"}
    with pytest.raises(urllib.error.HTTPError) as info:
        await asyncio.to_thread(
            webhook.request, "PUT", f"/api/v1/namespaces/default/pods/{name}", forged
        )
    assert "may not change HAMi's internal annotations" in info.value.read().decode()
    # The allocator's service account may: give it RBAC to update pods, then impersonate it.
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": f"allocator-{name}"},
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": "cluster-admin",
        },
        "subjects": [
            {"kind": "ServiceAccount", "name": "hami-allocator", "namespace": "hami-system"}
        ],
    }
    await asyncio.to_thread(
        webhook.request, "POST", "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings", binding
    )
    accepted = await asyncio.to_thread(_put_as, webhook, name, forged, TRUSTED)
    assert accepted["metadata"]["annotations"]["hami.io/bind-phase"] == "success"


async def test_pods_without_managed_resources_are_untouched(webhook: ControlPlane) -> None:
    name = f"plain-{uuid.uuid4().hex[:6]}"
    created = await post_pod(webhook, gpu_pod(name, {"cpu": "1"}))
    assert created["spec"]["schedulerName"] == "default-scheduler"


def _put_as(plane: ControlPlane, name: str, body: dict[str, Any], user: str) -> dict[str, Any]:
    import json
    import ssl
    import urllib.request

    context = ssl.create_default_context(cafile=str(plane.pki.ca.cert))
    req = urllib.request.Request(
        f"{plane.api_url}/api/v1/namespaces/default/pods/{name}",
        data=json.dumps(body).encode(),
        method="PUT",
        headers={
            "Authorization": f"Bearer {plane.token}",
            "Content-Type": "application/json",
            "Impersonate-User": user,
        },
    )
    with urllib.request.urlopen(req, context=context, timeout=10) as response:
        return json.loads(response.read())  # type: ignore[no-any-return]
