"""kube-scheduler (real) calls the allocator's extender; pods land on kwok nodes with HAMi's
annotations; nothing is double-booked."""

from __future__ import annotations

import asyncio
import json
import urllib.request
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from services.allocator.core.podspec import decode_devices
from services.allocator.service import serve as serve_allocator
from services.allocator.settings import AllocatorSettings
from services.nodeagent.service import serve as serve_agent
from services.nodeagent.settings import NodeAgentSettings
from shared.allocator_client import AllocatorClient
from shared.embedded_nats import EmbeddedNats
from shared.natsutil import connect
from tests.e2e.controlplane.cluster import ControlPlane
from tests.kube.manifests import pod_manifest, start_hami_scheduler

pytestmark = pytest.mark.slow
NODES = ("gpu-node-0", "gpu-node-1", "gpu-node-2")


@dataclass
class Setup:
    plane: ControlPlane
    port: int
    client: AllocatorClient
    scheduler: str


@pytest.fixture
async def hami(
    control_plane: ControlPlane, nats_server: EmbeddedNats, tmp_path: Path
) -> AsyncIterator[Setup]:
    stop = asyncio.Event()
    ports: list[int] = []
    started = asyncio.Event()

    def on_start(port: int) -> None:
        ports.append(port)
        started.set()

    settings = AllocatorSettings(
        nats_url=nats_server.url,
        extender_port=0,
        kubeconfig=str(control_plane.kubeconfig),
        node_policy="spread",
        reconcile_interval_s=0.5,
    )
    tasks = [asyncio.create_task(serve_allocator(settings, stop, extender_started=on_start))]
    for node in NODES:
        agent = NodeAgentSettings(
            nats_url=nats_server.url, node=node, simulate="2xH200", heartbeat_interval_s=0.5
        )
        tasks.append(asyncio.create_task(serve_agent(agent, stop)))
    waiter = asyncio.create_task(started.wait())
    done, _ = await asyncio.wait(
        [waiter, tasks[0]], timeout=60, return_when=asyncio.FIRST_COMPLETED
    )
    if tasks[0] in done:
        tasks[0].result()  # the allocator stopped: show why
    assert waiter in done, "the extender did not start in 60 s"
    # A second kube-scheduler, wired to us exactly as deploy/ shows, with its own name.
    scheduler = f"hami-scheduler-{uuid.uuid4().hex[:4]}"
    start_hami_scheduler(control_plane, scheduler, f"http://127.0.0.1:{ports[0]}", tmp_path)
    nc = await connect(nats_server.url, "test")
    client = AllocatorClient(nc)
    for _ in range(200):
        if len((await client.status()).nodes) == len(NODES):
            break
        await asyncio.sleep(0.05)
    yield Setup(control_plane, ports[0], client, scheduler)
    process = control_plane.processes.pop(scheduler)
    process.terminate()
    process.wait(10)
    await nc.close()
    stop.set()
    await asyncio.gather(*tasks)


def pod(name: str, scheduler: str, limits: dict[str, str]) -> dict[str, Any]:
    return pod_manifest(name, scheduler=scheduler, limits=limits)


async def get(plane: ControlPlane, name: str) -> dict[str, Any]:
    return await asyncio.to_thread(plane.request, "GET", f"/api/v1/namespaces/default/pods/{name}")


async def running(plane: ControlPlane, name: str, timeout_s: float = 40) -> dict[str, Any]:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        current = await get(plane, name)
        if current["status"].get("phase") == "Running":
            return current
        assert asyncio.get_running_loop().time() < deadline, (
            f"{name} not running: {current['status']}"
        )
        await asyncio.sleep(0.2)


async def test_pods_are_placed_with_hami_annotations_and_never_double_booked(hami: Setup) -> None:
    tag = uuid.uuid4().hex[:5]
    names = [f"share-{tag}-{i}" for i in range(6)]
    for name in names:  # 6 GPUs; each pod takes 60% of one: exactly one pod per GPU
        await asyncio.to_thread(
            hami.plane.request,
            "POST",
            "/api/v1/namespaces/default/pods",
            pod(
                name,
                hami.scheduler,
                {
                    "nvidia.com/gpu": "1",
                    "nvidia.com/gpumem-percentage": "60",
                    "nvidia.com/gpucores": "30",
                },
            ),
        )
    placed = [await running(hami.plane, n) for n in names]
    devices = []
    for current in placed:
        annotations = current["metadata"]["annotations"]
        assert annotations["hami.io/vgpu-node"] == current["spec"]["nodeName"]
        assert annotations["hami.io/bind-phase"] == "allocating"
        [[(device, kind, memory, cores)]] = decode_devices(
            annotations["hami.io/vgpu-devices-to-allocate"]
        )
        assert kind == "NVIDIA" and memory == 143771 * 60 // 100 and cores == 30
        devices.append(device)
    assert len(set(devices)) == 6
    extra = f"share-{tag}-extra"
    await asyncio.to_thread(
        hami.plane.request,
        "POST",
        "/api/v1/namespaces/default/pods",
        pod(extra, hami.scheduler, {"nvidia.com/gpu": "1", "nvidia.com/gpumem-percentage": "60"}),
    )
    await asyncio.sleep(3)
    assert not (await get(hami.plane, extra))["spec"].get("nodeName")  # nothing left for it
    status = await hami.client.status()
    holders = {a.holder.pod for a in status.allocations}
    assert set(names) <= holders and extra not in holders
    for name in [*names, extra]:
        await asyncio.to_thread(
            hami.plane.request, "DELETE", f"/api/v1/namespaces/default/pods/{name}"
        )


def post(port: int, verb: str, body: bytes) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/{verb}",
        data=body,
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


async def test_filter_reasons_and_bad_requests(hami: Setup) -> None:
    too_big = pod("huge", hami.scheduler, {"nvidia.com/gpu": "1", "nvidia.com/gpumem": "999999"})
    too_big["metadata"]["uid"] = "u-huge"
    status, result = await asyncio.to_thread(
        post, hami.port, "filter", json.dumps({"Pod": too_big, "NodeNames": list(NODES)}).encode()
    )
    assert status == 200 and result["NodeNames"] == []
    assert set(result["FailedAndUnresolvableNodes"]) == set(NODES)
    assert "memory" in result["FailedAndUnresolvableNodes"]["gpu-node-0"]
    fits = pod("fits", hami.scheduler, {"nvidia.com/gpu": "1", "nvidia.com/gpumem": "1000"})
    fits["metadata"]["uid"] = "u-fits"
    status, scores = await asyncio.to_thread(
        post, hami.port, "prioritize", json.dumps({"Pod": fits, "NodeNames": list(NODES)}).encode()
    )
    assert status == 200 and {s["Host"] for s in scores} == set(NODES)
    assert all(0 <= s["Score"] <= 10 for s in scores)
    for body in (b"not json", b"[]", b'{"NodeNames": ["a"]}'):
        status, result = await asyncio.to_thread(post, hami.port, "filter", body)
        assert status == 400 and result["Error"]
    status, result = await asyncio.to_thread(post, hami.port, "bind", b'{"PodName": "x"}')
    assert status == 400 and "PodUID" in result["Error"]


async def test_allocations_of_vanished_pods_are_released(hami: Setup) -> None:
    from shared.schemas.placement import ContainerRequest, Holder, PlaceRequest

    name = f"keep-{uuid.uuid4().hex[:5]}"
    created = await asyncio.to_thread(
        hami.plane.request,
        "POST",
        "/api/v1/namespaces/default/pods",
        pod(name, "nobody", {"cpu": "1"}),
    )
    live_uid = created["metadata"]["uid"]
    replies = {}
    for uid, pod_name in ((live_uid, name), ("uid-of-a-deleted-pod", "gone")):
        replies[pod_name] = await hami.client.place(
            PlaceRequest(
                request_id=f"pod/{uid}",
                lease_ttl_s=None,
                containers=(ContainerRequest(memory_mib=100),),
                holder=Holder(kind="pod", namespace="default", pod=pod_name, pod_uid=uid),
            )
        )
    assert all(r.outcome == "placed" for r in replies.values())
    for _ in range(100):
        holders = {a.holder.pod for a in (await hami.client.status()).allocations}
        if "gone" not in holders:
            break
        await asyncio.sleep(0.1)
    assert "gone" not in holders and name in holders
    await asyncio.to_thread(hami.plane.request, "DELETE", f"/api/v1/namespaces/default/pods/{name}")
    for _ in range(100):  # deleted while we run: released at the next reconciliation
        if name not in {a.holder.pod for a in (await hami.client.status()).allocations}:
            break
        await asyncio.sleep(0.1)
    assert name not in {a.holder.pod for a in (await hami.client.status()).allocations}
