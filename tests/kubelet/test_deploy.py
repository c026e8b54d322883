"""HAMi installed from deploy/kustomize (the e2e overlay) and running as pods on a real node:
NATS, the credentials Job, the allocator with its kube-scheduler, the webhook, the node agent,
telemetry. Then what a user does: a pod asking for a GPU share runs with its limits; and what
an operator does: NATS, the allocator and the node agents restart without losing anything.

The tests share one deployment and run in order."""

from __future__ import annotations

import asyncio
import base64
import json
import time
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from shared.allocator_client import AllocatorClient
from shared.errors import HamiError
from shared.natsauth import Credentials
from shared.natsutil import connect
from shared.resources import BIND_PHASE
from shared.schemas.placement import StatusReply
from tests.e2e.kubelet.deployed import KUSTOMIZE, NAMESPACE, Deployed, hami_deployed
from tests.e2e.kubelet.images import busybox_pod
from tests.e2e.kubelet.stack import Unusable

pytestmark = [pytest.mark.slow, pytest.mark.kubelet]
RESOURCE = "nvidia.com/gpu"
METRICS = "http://127.0.0.1:19395/metrics"
"""Telemetry's port in the e2e overlay (the host's network)."""
NATS = "nats://127.0.0.1:14222"
"""The e2e overlay's NATS, on the host's network."""


@pytest.fixture(scope="module")
def hami(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployed]:
    try:
        with hami_deployed(tmp_path_factory.mktemp("deployed")) as deployed:
            yield deployed
    except Unusable as e:
        pytest.skip(str(e))


def name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:5]}"


def create_pod(
    hami: Deployed, pod: str, limits: dict[str, str], command: str, *, dry_run: bool = False
) -> dict[str, Any]:
    manifest = busybox_pod(pod, limits, command, host_network=False)
    query = "?dryRun=All" if dry_run else ""
    return hami.plane.request("POST", f"/api/v1/namespaces/default/pods{query}", manifest)


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


def status(hami: Deployed) -> StatusReply:
    return asyncio.run(_status(hami))


async def _status(hami: Deployed) -> StatusReply:
    """The allocator's view, asked over NATS as `hami status` would, as the client user."""
    secret = hami.plane.request("GET", f"/api/v1/namespaces/{NAMESPACE}/secrets/hami-nats-client")
    raw = json.loads(base64.b64decode(secret["data"]["credentials.json"]))
    nc = await connect(NATS, "test", credentials=Credentials(raw["user"], raw["password"]))
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                return await AllocatorClient(nc, timeout_s=3).status()
            except HamiError:  # no leader at this moment (a takeover): ask again
                assert time.monotonic() < deadline, "no allocator answered for a minute"
                await asyncio.sleep(0.5)
    finally:
        await nc.close()


def held(reply: StatusReply) -> dict[str, str]:
    """pod uid -> allocation id, and no device promised more than it has."""
    for device in reply.devices:
        assert (
            device.used_memory_mib <= device.memory_mib and device.used_count <= device.split_count
        )
    by_pod: dict[str, str] = {}
    for record in reply.allocations:
        assert record.holder.pod_uid not in by_pod, f"two allocations for {record.holder.pod}"
        by_pod[record.holder.pod_uid] = record.allocation_id
    return by_pod


def leader_pod(hami: Deployed) -> str:
    """The allocator pod that leads: the one whose log says it serves."""
    for pod in hami.pods():
        name = pod["metadata"]["name"]
        if not name.startswith("hami-allocator-") or pod["status"].get("phase") != "Running":
            continue
        log = hami.plane.raw(
            "GET", f"/api/v1/namespaces/{NAMESPACE}/pods/{name}/log?container=allocator"
        ).decode(errors="replace")
        if "allocator serving" in log and "lost the leader lease" not in log:
            return name
    raise AssertionError(f"no allocator leads:\n{hami.describe()}")


def running_pods(hami: Deployed, count: int, prefix: str) -> list[str]:
    names = [name(prefix) for _ in range(count)]
    for pod in names:
        create_pod(hami, pod, {RESOURCE: "1", "nvidia.com/gpumem": "2000"}, "sleep 600")
    return names


def delete(hami: Deployed, pods: list[str]) -> None:
    for pod in pods:
        hami.plane.request("DELETE", f"/api/v1/namespaces/default/pods/{pod}?gracePeriodSeconds=0")


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


def test_two_allocators_run_one_leads_and_both_are_ready(hami: Deployed) -> None:
    allocators = [p for p in hami.pods() if p["metadata"]["name"].startswith("hami-allocator-")]
    assert len(allocators) == 2
    for pod in allocators:  # the standby is ready too: it forwards extender calls
        assert all(c["ready"] for c in pod["status"]["containerStatuses"]), hami.describe()
    assert leader_pod(hami)


def test_the_allocator_leader_deleted_during_a_burst(hami: Deployed) -> None:
    """The standby takes over; every pod of the burst runs, none is left in `allocating`, and
    no device is granted twice."""
    leader = leader_pod(hami)
    burst = running_pods(hami, 3, "burst")
    hami.plane.request("DELETE", f"/api/v1/namespaces/{NAMESPACE}/pods/{leader}")
    burst += running_pods(hami, 3, "burst")
    for pod in burst:
        running = wait_phase(hami, pod, ("Running", "Failed"), timeout_s=180)
        assert running["status"]["phase"] == "Running", running["status"]
        assert running["metadata"]["annotations"][BIND_PHASE] == "success"
    hami.wait_rolled_out()  # the Deployment made a new standby
    assert leader_pod(hami) != leader
    holders = held(status(hami))
    uids = {pod_of(hami, pod)["metadata"]["uid"] for pod in burst}
    assert uids <= holders.keys()
    delete(hami, burst)


def test_deleting_the_nats_pod_loses_nothing(hami: Deployed) -> None:
    pods = running_pods(hami, 2, "kept")
    for pod in pods:
        wait_phase(hami, pod, ("Running",))
    before = held(status(hami))
    old = hami.uids("hami-nats-")
    hami.plane.request("DELETE", f"/api/v1/namespaces/{NAMESPACE}/pods/hami-nats-0")
    hami.wait_replaced("hami-nats-", old)
    hami.wait_rolled_out()
    after = held(status(hami))
    assert after == before  # the same allocations, from JetStream on disk
    late = name("after-nats")
    create_pod(hami, late, {RESOURCE: "1", "nvidia.com/gpumem": "1000"}, "true")
    assert wait_phase(hami, late, ("Succeeded", "Failed"))["status"]["phase"] == "Succeeded"
    delete(hami, [*pods, late])


def test_rolling_the_node_agent_keeps_running_pods_and_their_devices(hami: Deployed) -> None:
    pods = running_pods(hami, 2, "rolled")
    started = {pod: wait_phase(hami, pod, ("Running",))["status"]["startTime"] for pod in pods}
    before = held(status(hami))
    old = hami.uids("hami-nodeagent-")
    hami.kubectl("-n", NAMESPACE, "rollout", "restart", "daemonset/hami-nodeagent")
    hami.wait_replaced("hami-nodeagent-", old)
    hami.wait_rolled_out()
    for pod in pods:
        current = pod_of(hami, pod)
        assert current["status"]["phase"] == "Running"
        assert current["status"]["startTime"] == started[pod]
        assert current["status"]["containerStatuses"][0]["restartCount"] == 0
    assert held(status(hami)) == before
    wait_allocatable(hami, "10")
    late = name("after-roll")
    create_pod(hami, late, {RESOURCE: "1", "nvidia.com/gpumem": "1000"}, "true")
    assert wait_phase(hami, late, ("Succeeded", "Failed"))["status"]["phase"] == "Succeeded"
    delete(hami, [*pods, late])


def test_a_bad_device_configuration_stops_the_new_pods_and_the_old_keep_serving(
    hami: Deployed,
) -> None:
    good = (KUSTOMIZE / "base" / "device-config.yaml").read_text()
    serving = {pod: hami.uids(pod) for pod in ("hami-allocator-", "hami-webhook-")}
    hami.apply_device_config(good.replace("deviceSplitCount: 10", "deviceSplitCount: -2"))
    refused = "Expected `int` >= 1 - at `$.nvidia.deviceSplitCount`"
    deadline = time.monotonic() + 120
    while not all(refused in log for log in new_pod_logs(hami, serving).values()) or len(
        new_pod_logs(hami, serving)
    ) < len(serving):
        assert time.monotonic() < deadline, hami.describe()
        time.sleep(1)
    for prefix, old in serving.items():  # nothing of the old replicas was taken down
        assert old <= hami.uids(prefix)
        for pod in hami.pods():
            if pod["metadata"]["uid"] in old:
                assert all(c["ready"] for c in pod["status"]["containerStatuses"])
    # The old webhook still mutates (the node agent, one per node, is down meanwhile: its
    # DaemonSet replaces a node's agent in place, so a pod would wait for the fix).
    probe = create_pod(hami, name("during-bad"), {RESOURCE: "1"}, "true", dry_run=True)
    assert probe["spec"]["schedulerName"] == "hami-scheduler"
    hami.kubectl("apply", "--server-side", "-k", str(hami.overlay))  # fixed: it rolls on
    hami.wait_rolled_out()
    wait_allocatable(hami, "10")
    pod = name("after-fix")
    create_pod(hami, pod, {RESOURCE: "1", "nvidia.com/gpumem": "1000"}, "true")
    assert wait_phase(hami, pod, ("Succeeded", "Failed"))["status"]["phase"] == "Succeeded"
    delete(hami, [pod])


def new_pod_logs(hami: Deployed, serving: dict[str, set[str]]) -> dict[str, str]:
    """The log of each workload's first container in pods that are not the serving ones."""
    logs = {}
    for pod in hami.pods():
        meta = pod["metadata"]
        prefix = next((p for p in serving if meta["name"].startswith(p)), None)
        if prefix is None or meta["uid"] in serving[prefix]:
            continue
        container = pod["spec"]["containers"][0]["name"]
        try:
            logs[prefix] = hami.plane.raw(
                "GET",
                f"/api/v1/namespaces/{NAMESPACE}/pods/{meta['name']}/log?container={container}",
            ).decode(errors="replace")
        except Exception:  # not started yet
            logs[prefix] = ""
    return logs
