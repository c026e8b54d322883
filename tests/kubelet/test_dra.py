"""Fractional GPUs through DRA on a real node: kube-scheduler alone (no extender) allocates
shares of one simulated H200 from the node agent's ResourceSlice until its memory runs out;
the kubelet has the node agent prepare each claim as CDI devices, so each container starts with
its own limits, the library and its region; deleting a pod gives its share back."""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.kubelet.images import busybox_pod
from tests.e2e.kubelet.stack import LIBVGPU, Hami, Unusable, dra_on_a_node, usage_samples

pytestmark = pytest.mark.kubelet

RESOURCE_API = "/apis/resource.k8s.io/v1"
PRINT = (
    "env | grep -E '^(CUDA_|NVIDIA_VISIBLE|HAMI_)' | sort; echo ---preload; "
    "cat /etc/ld.so.preload; echo ---lib; wc -c < /usr/local/vgpu/libvgpu.so; "
    "echo ---limits; cat /usr/local/vgpu/limits; echo ---region; "
    "touch /usr/local/vgpu/region/probe && echo writable; sleep {sleep}"
)


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hami]:
    try:
        with dra_on_a_node(tmp_path_factory.mktemp("dra")) as hami:
            yield hami
    except Unusable as e:
        pytest.skip(str(e))


def template(hami: Hami, name: str, memory: str | None, cores: str | None) -> None:
    capacity = {k: v for k, v in (("memory", memory), ("cores", cores)) if v is not None}
    exactly: dict[str, Any] = {"deviceClassName": "gpu.hami.io"}
    if capacity:
        exactly["capacity"] = {"requests": capacity}
    hami.plane.request(
        "POST",
        f"{RESOURCE_API}/namespaces/default/resourceclaimtemplates",
        {
            "apiVersion": "resource.k8s.io/v1",
            "kind": "ResourceClaimTemplate",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"spec": {"devices": {"requests": [{"name": "gpu", "exactly": exactly}]}}},
        },
    )


def pod_with_claim(hami: Hami, name: str, claim_template: str, sleep: int) -> dict[str, Any]:
    manifest = busybox_pod(name, {}, PRINT.format(sleep=sleep), host_network=True)
    spec = manifest["spec"]
    assert isinstance(spec, dict)
    spec["resourceClaims"] = [{"name": "gpu", "resourceClaimTemplateName": claim_template}]
    spec["containers"][0]["resources"] = {"claims": [{"name": "gpu"}]}
    return hami.plane.request("POST", "/api/v1/namespaces/default/pods", manifest)


def sections(log: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {"env": []}
    current = "env"
    for line in log.splitlines():
        if line.startswith("---"):
            current = line[3:]
            out[current] = []
        else:
            out[current].append(line)
    return out


def name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def wait_log(hami: Hami, pod: str, needle: str, timeout_s: float = 60) -> str:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            text = hami.logs(pod)
        except OSError:
            text = ""
        if needle in text:
            return text
        assert time.monotonic() < deadline, f"{pod}: {hami.pod(pod)['status']}"
        time.sleep(0.3)


def test_the_node_publishes_its_gpu_as_shareable_capacity(node: Hami) -> None:
    [published] = node.plane.request(
        "GET", f"{RESOURCE_API}/resourceslices?fieldSelector=spec.driver=gpu.hami.io"
    )["items"]
    assert published["spec"]["nodeName"] == node.node.name
    [device] = published["spec"]["devices"]
    assert device["allowMultipleAllocations"] is True
    assert device["capacity"]["memory"]["value"] == "143771Mi"
    assert device["attributes"]["productName"] == {"string": "NVIDIA H200"}
    device_class = node.plane.request("GET", f"{RESOURCE_API}/deviceclasses/gpu.hami.io")
    assert "gpu.hami.io" in device_class["spec"]["selectors"][0]["cel"]["expression"]


def test_shares_are_allocated_by_kube_scheduler_alone_until_memory_runs_out(node: Hami) -> None:
    template(node, "share-60g", "60000Mi", "30")
    first, second, third = name("dra-a"), name("dra-b"), name("dra-c")
    for pod in (first, second):
        pod_with_claim(node, pod, "share-60g", sleep=300)
    logs = {pod: sections(wait_log(node, pod, "writable")) for pod in (first, second)}
    for pod, out in logs.items():
        env = dict(line.split("=", 1) for line in out["env"] if "=" in line)
        assert env["CUDA_DEVICE_MEMORY_LIMIT_0"] == "60000m", (pod, env)
        assert env["CUDA_DEVICE_SM_LIMIT"] == "30"
        assert env["NVIDIA_VISIBLE_DEVICES"].startswith("GPU-")
        assert env["HAMI_LIMITS_FILE"] == "/usr/local/vgpu/limits"
        assert out["preload"] == ["/usr/local/vgpu/libvgpu.so"]
        assert out["lib"] == [str(LIBVGPU.stat().st_size)]
        assert "CUDA_DEVICE_MEMORY_LIMIT_0=60000m" in out["limits"]
        assert out["region"] == ["writable"]
    # 2 x 60000 MiB taken of 143771: a third share does not fit, and the scheduler says so.
    pod_with_claim(node, third, "share-60g", sleep=1)
    deadline = time.monotonic() + 30
    while True:
        reasons = [
            e.get("message", "") for e in node.events(third) if e["reason"] == "FailedScheduling"
        ]
        if reasons:
            break
        assert time.monotonic() < deadline, node.pod(third)["status"]
        time.sleep(0.5)
    assert node.pod(third)["status"]["phase"] == "Pending"
    assert "claim" in reasons[0].lower() or "allocate" in reasons[0].lower(), reasons
    # Deleting a pod gives its share back: the third one runs.
    node.delete_pod(first)
    assert "writable" in wait_log(node, third, "writable", timeout_s=90)
    for pod in (second, third):
        node.delete_pod(pod)


def test_a_claim_without_capacity_is_the_whole_gpu_and_a_share_must_wait(node: Hami) -> None:
    node.node.delete_pods()
    template(node, "whole-gpu", None, None)
    template(node, "share-1g", "1000Mi", "10")
    whole, share = name("dra-whole"), name("dra-share")
    pod_with_claim(node, whole, "whole-gpu", sleep=300)
    out = sections(wait_log(node, whole, "writable"))
    env = dict(line.split("=", 1) for line in out["env"] if "=" in line)
    assert env["CUDA_DEVICE_MEMORY_LIMIT_0"] == "143771m" and env["CUDA_DEVICE_SM_LIMIT"] == "100"
    pod_with_claim(node, share, "share-1g", sleep=1)
    time.sleep(5)
    assert node.pod(share)["status"]["phase"] == "Pending"  # the whole GPU is taken
    node.delete_pod(whole)
    wait_log(node, share, "writable", timeout_s=90)
    node.delete_pod(share)


def no_specs_left(node: Hami, timeout_s: float = 60) -> None:
    """Every claim unprepared: the kubelet asked, and the plugin removed its CDI specs."""
    deadline = time.monotonic() + timeout_s
    while list((node.run / "cdi").glob("hami-*.json")):
        assert time.monotonic() < deadline, node.log("nodeagent")[-3000:]
        time.sleep(0.5)


def test_prepared_claims_survive_a_plugin_restart_and_are_cleaned_up(node: Hami) -> None:
    node.node.delete_pods()
    no_specs_left(node)  # the earlier tests' claims, unprepared once their pods went
    pod = name("dra-restart")
    pod_with_claim(node, pod, "share-1g", sleep=300)
    wait_log(node, pod, "writable")
    checkpoint = node.vgpu_root / "dra" / "checkpoint.json"
    assert checkpoint.is_file() and pod in checkpoint.read_text()
    specs = sorted((node.run / "cdi").glob("hami-*.json"))
    assert len(specs) == 1
    node.kill_agent()
    node.start_dra_agent()
    node.delete_pod(pod)  # the restarted plugin unprepares what the old one prepared
    no_specs_left(node)
    assert pod not in checkpoint.read_text()
    regions = Path(node.vgpu_root / "dra" / "containers")
    assert not list(regions.glob("*_claim")) if regions.is_dir() else True


def test_hamis_yaml_becomes_a_claim_and_runs_with_its_limits(node: Hami) -> None:
    """The webhook in DRA mode: HAMi's resources, unchanged YAML, a claim of the same shape."""
    pod = name("dra-hami-yaml")
    created = node.create_pod(
        pod,
        {"nvidia.com/gpu": "1", "nvidia.com/gpumem": "3000", "nvidia.com/gpucores": "20"},
        PRINT.format(sleep=1),
    )
    assert created["spec"]["resourceClaims"] == [
        {"name": "hami-gpu-0", "resourceClaimTemplateName": "hami-gpu-1x-3000mi-20c"}
    ]
    assert created["spec"].get("schedulerName") == "default-scheduler"
    node.plane.request(
        "GET", f"{RESOURCE_API}/namespaces/default/resourceclaimtemplates/hami-gpu-1x-3000mi-20c"
    )
    out = sections(wait_log(node, pod, "writable"))
    env = dict(line.split("=", 1) for line in out["env"] if "=" in line)
    assert env["CUDA_DEVICE_MEMORY_LIMIT_0"] == "3000m" and env["CUDA_DEVICE_SM_LIMIT"] == "20"
    node.delete_pod(pod)


def claim_from(hami: Hami, claim_name: str, exactly: dict[str, Any], config: Any = None) -> None:
    devices: dict[str, Any] = {"requests": [{"name": "gpu", "exactly": exactly}]}
    if config is not None:
        devices["config"] = config
    hami.plane.request(
        "POST",
        f"{RESOURCE_API}/namespaces/default/resourceclaims",
        {
            "apiVersion": "resource.k8s.io/v1",
            "kind": "ResourceClaim",
            "metadata": {"name": claim_name, "namespace": "default"},
            "spec": {"devices": devices},
        },
    )


def pod_with_named_claim(hami: Hami, name: str, claim_name: str) -> None:
    manifest = busybox_pod(name, {}, PRINT.format(sleep=1), host_network=True)
    spec = manifest["spec"]
    assert isinstance(spec, dict)
    spec["resourceClaims"] = [{"name": "gpu", "resourceClaimName": claim_name}]
    spec["containers"][0]["resources"] = {"claims": [{"name": "gpu"}]}
    hami.plane.request("POST", "/api/v1/namespaces/default/pods", manifest)


def events_with(hami: Hami, pod: str, reason: str, timeout_s: float = 60) -> list[str]:
    deadline = time.monotonic() + timeout_s
    while True:
        found = [e.get("message", "") for e in hami.events(pod) if e["reason"] == reason]
        if found:
            return found
        assert time.monotonic() < deadline, (reason, hami.pod(pod)["status"])
        time.sleep(0.5)


def test_bad_claims_wait_or_fail_with_a_reason_and_never_start_without_limits(
    node: Hami,
) -> None:
    too_big, bad_config = name("dra-too-big"), name("dra-bad-config")
    claim_from(
        node,
        too_big,
        {"deviceClassName": "gpu.hami.io", "capacity": {"requests": {"memory": "200000Mi"}}},
    )
    pod_with_named_claim(node, too_big, too_big)
    [reason, *_] = events_with(node, too_big, "FailedScheduling")
    assert node.pod(too_big)["status"]["phase"] == "Pending" and "claim" in reason.lower()
    claim_from(
        node,
        bad_config,
        {"deviceClassName": "gpu.hami.io", "capacity": {"requests": {"memory": "1000Mi"}}},
        config=[{"opaque": {"driver": "gpu.hami.io", "parameters": {"priority": 7}}}],
    )
    pod_with_named_claim(node, bad_config, bad_config)
    messages = events_with(node, bad_config, "FailedPrepareDynamicResources")
    assert any("HAMi: opaque configuration" in m for m in messages), messages
    assert node.pod(bad_config)["status"]["phase"] == "Pending"  # no container without limits
    assert not list((node.run / "cdi").glob("hami-*.json")) or all(
        bad_config not in p.read_text() for p in (node.run / "cdi").glob("hami-*.json")
    )
    for pod in (too_big, bad_config):
        node.delete_pod(pod)
        node.plane.request("DELETE", f"{RESOURCE_API}/namespaces/default/resourceclaims/{pod}")


def test_a_claims_usage_is_published_from_its_region(node: Hami) -> None:
    """The library in the claim's container keeps its region; a process of the real library
    on the host, pointed at that region file, stands in for it (as the device plugin's test)."""
    pod = name("dra-usage")
    pod_with_claim(node, pod, "share-1g", sleep=300)
    wait_log(node, pod, "writable")
    [claim_name] = [
        s["resourceClaimName"] for s in node.pod(pod)["status"]["resourceClaimStatuses"]
    ]
    claim = node.plane.request(
        "GET", f"{RESOURCE_API}/namespaces/default/resourceclaims/{claim_name}"
    )
    uid = claim["metadata"]["uid"]
    cache = node.vgpu_root / "dra" / "containers" / f"{uid}_claim" / "vgpu.cache"
    build = LIBVGPU.parent
    holder = subprocess.Popen(
        [str(build / "test_native"), "grab", str(8 << 20), "2"],
        env={
            "PATH": os.environ["PATH"],
            "LD_LIBRARY_PATH": str(build),
            "LD_PRELOAD": str(LIBVGPU),
            "CUDA_DEVICE_MEMORY_LIMIT_0": "1000m",
            "CUDA_DEVICE_MEMORY_SHARED_CACHE": str(cache),
        },
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "got 2"
        samples = asyncio.run(usage_samples(node, lambda x: x.allocation_id == f"claim/{uid}", 20))
    finally:
        holder.kill()
        holder.communicate()
    assert samples and samples[-1].memory_used_bytes == 16 << 20, samples
    last = samples[-1]
    assert (last.pod_namespace, last.pod_name) == ("default", pod)
    assert last.memory_limit_bytes == 1000 << 20
    node.delete_pod(pod)
