"""HAMi installed from deploy/kustomize (the e2e overlay) and running as pods on a real node:
NATS, the credentials Job, the allocator with its kube-scheduler, the webhook, the node agent,
telemetry. Then what a user does: a pod asking for a GPU share runs with its limits; and what
an operator does: NATS, the allocator and the node agents restart without losing anything.

The tests share one deployment and run in order."""

from __future__ import annotations

import base64
import time
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from shared.resources import BIND_PHASE
from tests.e2e.kubelet.deployed import NAMESPACE, Deployed, hami_deployed
from tests.e2e.kubelet.images import BUSYBOX
from tests.e2e.kubelet.stack import Unusable

pytestmark = [pytest.mark.slow, pytest.mark.kubelet]
RESOURCE = "nvidia.com/gpu"
METRICS = "http://127.0.0.1:19395/metrics"
"""Telemetry's port in the e2e overlay (the host's network)."""


@pytest.fixture(scope="module")
def hami(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployed]:
    try:
        with hami_deployed(tmp_path_factory.mktemp("deployed")) as deployed:
            yield deployed
    except Unusable as e:
        pytest.skip(str(e))


def name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:5]}"


def create_pod(hami: Deployed, pod: str, limits: dict[str, str], command: str) -> dict[str, Any]:
    manifest = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": pod, "namespace": "default"},
        "spec": {
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 1,
            "containers": [
                {
                    "name": "main",
                    "image": BUSYBOX,
                    "imagePullPolicy": "Never",
                    "command": ["sh", "-c", command],
                    "resources": {"limits": limits},
                }
            ],
        },
    }
    return hami.plane.request("POST", "/api/v1/namespaces/default/pods", manifest)


def pod_of(hami: Deployed, pod: str) -> dict[str, Any]:
    return hami.plane.request("GET", f"/api/v1/namespaces/default/pods/{pod}")


def wait_phase(
    hami: Deployed, pod: str, phases: tuple[str, ...], timeout_s: float = 90
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        current = pod_of(hami, pod)
        if current["status"].get("phase") in phases:
            return current
        if time.monotonic() > deadline:
            raise AssertionError(f"{pod} not {phases}: {current['status']}\n{hami.describe()}")
        time.sleep(0.3)


def wait_allocatable(hami: Deployed, count: str, timeout_s: float = 90) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        node = hami.plane.request("GET", f"/api/v1/nodes/{hami.node.name}")
        if node["status"].get("allocatable", {}).get(RESOURCE) == count:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"allocatable {RESOURCE}: {node['status'].get('allocatable')}")
        time.sleep(0.5)


def logs(hami: Deployed, pod: str) -> str:
    return hami.plane.raw("GET", f"/api/v1/namespaces/default/pods/{pod}/log").decode()


def metrics() -> str:
    with urllib.request.urlopen(METRICS, timeout=5) as response:
        return response.read().decode()  # type: ignore[no-any-return]


def test_every_part_runs_as_pods_with_its_own_credentials(hami: Deployed) -> None:
    pods = {
        p["metadata"]["labels"].get("app.kubernetes.io/name", p["metadata"]["name"]): p
        for p in hami.pods()
    }
    for part in ("hami-nats", "hami-allocator", "hami-webhook", "hami-nodeagent", "hami-telemetry"):
        assert pods[part]["status"]["phase"] == "Running", hami.describe()
    allocator = pods["hami-allocator"]
    assert [c["name"] for c in allocator["spec"]["containers"]] == ["allocator", "kube-scheduler"]
    secrets = {
        s["metadata"]["name"]
        for s in hami.plane.request("GET", f"/api/v1/namespaces/{NAMESPACE}/secrets")["items"]
    }
    users = {f"hami-nats-{u}" for u in ("allocator", "nodeagent", "telemetry", "client")}
    assert users | {"hami-nats-auth", "hami-webhook-tls"} <= secrets
    # The webhook's bootstrap put its CA into both configurations.
    tls = hami.plane.request("GET", f"/api/v1/namespaces/{NAMESPACE}/secrets/hami-webhook-tls")
    for kind in ("mutatingwebhookconfigurations", "validatingwebhookconfigurations"):
        config = hami.plane.request(
            "GET", f"/apis/admissionregistration.k8s.io/v1/{kind}/hami-webhook"
        )
        for hook in config["webhooks"]:
            assert hook["clientConfig"]["caBundle"] == tls["data"]["ca.crt"]
    assert base64.b64decode(tls["data"]["ca.crt"]).startswith(b"-----BEGIN CERTIFICATE")


def test_a_pod_asking_for_a_share_runs_with_its_limits(hami: Deployed) -> None:
    wait_allocatable(hami, "10")  # one simulated H200, split 10 ways by the device ConfigMap
    pod = name("share")
    created = create_pod(
        hami,
        pod,
        {RESOURCE: "1", "nvidia.com/gpumem": "3000", "nvidia.com/gpucores": "30"},
        "env | sort; echo ---preload; cat /etc/ld.so.preload",
    )
    assert created["spec"]["schedulerName"] == "hami-scheduler"  # the webhook, as a pod
    done = wait_phase(hami, pod, ("Succeeded", "Failed"))
    assert done["status"]["phase"] == "Succeeded", done["status"]
    assert done["metadata"]["annotations"][BIND_PHASE] == "success"
    env_part, preload = logs(hami, pod).split("---preload\n")
    env = dict(line.split("=", 1) for line in env_part.splitlines() if "=" in line)
    assert env["CUDA_DEVICE_MEMORY_LIMIT_0"] == "3000m"
    assert env["CUDA_DEVICE_SM_LIMIT"] == "30"
    assert env["NVIDIA_VISIBLE_DEVICES"].startswith("GPU-")
    assert preload.split() == ["/usr/local/vgpu/libvgpu.so"]
    hami.plane.request("DELETE", f"/api/v1/namespaces/default/pods/{pod}?gracePeriodSeconds=0")
