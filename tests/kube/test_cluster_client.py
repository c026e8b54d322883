"""The cluster client against a real kube-apiserver, kube-scheduler and kwok."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Mapping
from typing import Any

import pytest

from shared.errors import NotFound
from shared.kube.client import KubeClient
from tests.e2e.controlplane.cluster import ControlPlane
from tests.kube import manifests

pytestmark = pytest.mark.slow


@pytest.fixture
async def kube(control_plane: ControlPlane) -> AsyncIterator[KubeClient]:
    client = await KubeClient.from_kubeconfig(str(control_plane.kubeconfig))
    yield client
    await client.close()


def pod_manifest(
    name: str, *, scheduler: str = "none-such-scheduler", gpus: int = 0
) -> dict[str, Any]:
    return manifests.pod_manifest(
        name, scheduler=scheduler, limits={"nvidia.com/gpu": str(gpus)} if gpus else None
    )


async def create_pod(plane: ControlPlane, manifest: dict[str, Any]) -> dict[str, Any]:
    return await asyncio.to_thread(
        plane.request, "POST", "/api/v1/namespaces/default/pods", manifest
    )


async def until(check, timeout_s: float = 30.0) -> Any:  # type: ignore[no-untyped-def]
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        result = await check()
        if result:
            return result
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached")
        await asyncio.sleep(0.1)


async def test_conflicting_patches_are_retried_and_lose_nothing(
    control_plane: ControlPlane, kube: KubeClient
) -> None:
    name = f"patch-{uuid.uuid4().hex[:6]}"
    await create_pod(control_plane, pod_manifest(name))

    def add(key: str) -> Any:
        def change(current: Mapping[str, str]) -> dict[str, str | None]:
            counter = int(current.get("counter", "0"))
            return {key: "set", "counter": str(counter + 1)}

        return change

    await asyncio.gather(
        *(kube.patch_pod_annotations("default", name, add(f"k{i}")) for i in range(12))
    )
    annotations = (await kube.get_pod("default", name))["metadata"]["annotations"]
    assert {f"k{i}" for i in range(12)} <= set(annotations)
    # Each change saw the one before it: a lost update would leave the counter short.
    assert annotations["counter"] == "12"
    await kube.patch_pod_annotations("default", name, lambda _: {"k0": None})
    assert "k0" not in (await kube.get_pod("default", name))["metadata"]["annotations"]


async def test_watch_resumes_after_the_server_closes_it(
    control_plane: ControlPlane, kube: KubeClient
) -> None:
    tag = uuid.uuid4().hex[:6]
    stop = asyncio.Event()
    seen: list[tuple[str, str]] = []

    async def follow() -> None:
        async for event in kube.watch(
            "pods", stop, label_selector=f"tag={tag}", server_timeout_s=1
        ):
            seen.append((event.type, event.object["metadata"]["name"]))

    task = asyncio.create_task(follow())
    for i in range(3):
        manifest = pod_manifest(f"w-{tag}-{i}")
        manifest["metadata"]["labels"] = {"tag": tag}
        await create_pod(control_plane, manifest)
        await asyncio.sleep(1.5)  # longer than the server's watch timeout: each one reconnects
    await until(lambda: asyncio.sleep(0, result=len({n for t, n in seen if t == "ADDED"}) == 3))
    stop.set()
    task.cancel()
    added = [n for t, n in seen if t == "ADDED"]
    assert sorted(added) == [f"w-{tag}-{i}" for i in range(3)]  # each once: no replay, no loss


async def test_binding_places_a_pod_and_kwok_runs_it(
    control_plane: ControlPlane, kube: KubeClient
) -> None:
    name = f"bind-{uuid.uuid4().hex[:6]}"
    created = await create_pod(control_plane, pod_manifest(name))
    await kube.bind_pod("default", name, created["metadata"]["uid"], "gpu-node-1")

    async def running() -> bool:
        pod = await kube.get_pod("default", name)
        return (
            pod["spec"].get("nodeName") == "gpu-node-1" and pod["status"].get("phase") == "Running"
        )

    await until(running)


async def test_kube_scheduler_places_gpu_pods_on_kwok_nodes(
    control_plane: ControlPlane, kube: KubeClient
) -> None:
    name = f"sched-{uuid.uuid4().hex[:6]}"
    await create_pod(control_plane, pod_manifest(name, scheduler="default-scheduler", gpus=2))

    async def scheduled() -> str:
        return str((await kube.get_pod("default", name))["spec"].get("nodeName") or "")

    assert (await until(scheduled)).startswith("gpu-node-")


async def test_missing_pod_is_not_found(kube: KubeClient) -> None:
    with pytest.raises(NotFound):
        await kube.get_pod("default", "does-not-exist")


async def test_lease_is_taken_and_work_runs_while_held(
    control_plane: ControlPlane, kube: KubeClient
) -> None:
    leading = asyncio.Event()

    async def work() -> None:
        leading.set()
        await asyncio.sleep(3600)

    task = asyncio.create_task(kube.lead("hami-test", "default", "me", work, lease_s=6))
    await asyncio.wait_for(leading.wait(), 20)
    lease = await asyncio.to_thread(
        control_plane.request,
        "GET",
        "/apis/coordination.k8s.io/v1/namespaces/default/leases/hami-test",
    )
    assert lease["spec"]["holderIdentity"] == "me"
    task.cancel()
