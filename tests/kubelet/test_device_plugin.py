"""HAMi pods on a real kubelet and container runtime, through the API server alone.

The tests share one node and run in order; each leaves no pod behind."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from services.nodeagent.core.region import read_region
from shared.natsutil import connect
from shared.quantity import parse_k8s_quantity
from shared.resources import ALLOCATE_FAILURE, BIND_PHASE, DEVICES_TO_ALLOCATE, TRACE_ANNOTATION
from shared.schemas.inventory import NODES_BUCKET, NodeInventory, inventory_codec
from tests.e2e.kubelet.stack import LIBVGPU, RESOURCE, Hami, usage_samples
from tests.e2e.observability.jaeger import Jaeger, parent_of, spans_by_service, tags_of

pytestmark = [pytest.mark.slow, pytest.mark.kubelet]
NATIVE_BUILD = LIBVGPU.parent
SHARE = {RESOURCE: "1", "nvidia.com/gpumem": "60000", "nvidia.com/gpucores": "30"}
PRINT = (
    "env | sort; echo ---preload; cat /etc/ld.so.preload; echo ---mounts; cat /proc/self/mounts;"
    " echo ---lib; wc -c < /usr/local/vgpu/libvgpu.so; echo ---dev; ls /dev/nvidia0 /dev/nvidiactl;"
    " echo ---region; touch /usr/local/vgpu/region/probe && echo writable;"
    " echo ---limits; cat /usr/local/vgpu/limits; echo ---rewrite;"
    " (echo CUDA_DEVICE_MEMORY_LIMIT_0=1t > /usr/local/vgpu/limits) 2>/dev/null || echo refused"
)


def name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:5]}"


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


def test_the_node_counts_split_count_virtual_gpus(hami: Hami) -> None:
    node = hami.plane.request("GET", f"/api/v1/nodes/{hami.node.name}")
    assert node["status"]["capacity"][RESOURCE] == "10"
    assert node["status"]["allocatable"][RESOURCE] == "10"


def test_the_inventory_says_the_nodes_host_cpu_and_memory(hami: Hami) -> None:
    """What the fragmentation measure reads: the node's allocatable CPU and memory as the
    kubelet reports them, and the requests of pods holding no HAMi allocation (none here)."""

    async def inventory() -> NodeInventory:
        nc = await connect(hami.nats.url, "kubelet-test-inventory")
        try:
            entry = await (await nc.jetstream().key_value(NODES_BUCKET)).get(hami.node.name)
            assert entry.value is not None
            return inventory_codec.decode(entry.value)
        finally:
            await nc.close()

    allocatable = hami.capacity()
    cpu = int(parse_k8s_quantity(allocatable["cpu"]) * 1000)
    memory = int(parse_k8s_quantity(allocatable["memory"]) / 2**20)
    deadline = time.monotonic() + 15  # the first beat, before the API client, says the machine's
    while (said := asyncio.run(inventory())).cpu_milli != cpu:
        assert time.monotonic() < deadline, (said.cpu_milli, cpu)
        time.sleep(0.5)
    assert said.memory_mib == memory
    assert (said.others_cpu_milli, said.others_memory_mib) == (0, 0)


def test_a_pod_starts_with_its_limits_the_library_and_its_region(hami: Hami) -> None:
    pod = name("limits")
    created = hami.create_pod(
        pod, {RESOURCE: "1", "nvidia.com/gpumem": "3000", "nvidia.com/gpucores": "30"}, PRINT
    )
    assert created["spec"]["schedulerName"] == "hami-scheduler"  # set by the webhook
    done = hami.wait_pod(pod, ("Succeeded", "Failed"))
    assert done["status"]["phase"] == "Succeeded", done["status"]
    out = sections(hami.logs(pod))
    env = dict(line.split("=", 1) for line in out["env"] if "=" in line)
    uid = done["metadata"]["uid"]
    assert env["NVIDIA_VISIBLE_DEVICES"].startswith("GPU-")
    assert env["CUDA_DEVICE_MEMORY_LIMIT_0"] == "3000m"
    assert env["CUDA_DEVICE_SM_LIMIT"] == "30"
    assert env["CUDA_DEVICE_MEMORY_SHARED_CACHE"] == "/usr/local/vgpu/region/vgpu.cache"
    assert env["CUDA_TASK_PRIORITY"] == "1"
    assert env["GPU_CORE_UTILIZATION_POLICY"] == "default"
    assert "CUDA_OVERSUBSCRIBE" not in env
    assert out["preload"] == ["/usr/local/vgpu/libvgpu.so"]
    mounts = {fields[1]: fields[3].split(",") for fields in (m.split() for m in out["mounts"])}
    assert "ro" in mounts["/usr/local/vgpu/libvgpu.so"]
    assert "ro" in mounts["/etc/ld.so.preload"]
    assert "rw" in mounts["/usr/local/vgpu/region"]
    # The limits file: what the library holds every process to, and the job cannot rewrite it.
    assert "ro" in mounts["/usr/local/vgpu/limits"]
    assert env["HAMI_LIMITS_FILE"] == "/usr/local/vgpu/limits"
    assert "CUDA_DEVICE_MEMORY_LIMIT_0=3000m" in out["limits"]
    assert out["rewrite"] == ["refused"]
    assert out["lib"] == [str(LIBVGPU.stat().st_size)]  # the real library, not a stand-in
    assert out["dev"] == ["/dev/nvidia0", "/dev/nvidiactl"]
    assert out["region"] == ["writable"]
    region = hami.vgpu_root / "containers" / f"{uid}_main"
    assert (region / "probe").is_file()
    annotations = done["metadata"]["annotations"]
    assert annotations[BIND_PHASE] == "success"
    assert annotations[DEVICES_TO_ALLOCATE] == ";"
    assert annotations["hami.io/vgpu-devices-allocated"].endswith(",NVIDIA,3000,30:;")
    hami.delete_pod(pod)


def test_a_pod_is_one_trace_from_admission_to_the_kubelets_allocate(
    hami: Hami, jaeger: Jaeger
) -> None:
    """The webhook's admission span is the root; kube-scheduler's extender calls (which carry
    no trace context) and the node agent's Allocate join it through the pod's annotation."""
    pod = name("traced")
    hami.create_pod(pod, {RESOURCE: "1", "nvidia.com/gpumem": "1000"}, "true")
    done = hami.wait_pod(pod, ("Succeeded", "Failed"))
    assert done["status"]["phase"] == "Succeeded", done["status"]
    context = done["metadata"]["annotations"][TRACE_ANNOTATION]
    trace_id = context.split("traceparent=")[1].split("-")[1]
    wanted = {"hami-webhook", "hami-allocator", "hami-nodeagent"}

    def spans() -> dict[str, dict[str, dict]]:  # type: ignore[type-arg]
        try:
            by = spans_by_service(jaeger.trace(trace_id))
        except Exception:
            return {}
        return {svc: {s["operationName"]: s for s in found} for svc, found in by.items()}

    deadline = time.monotonic() + 30
    while not wanted <= set(spans()) or "POST /bind" not in spans()["hami-allocator"]:
        assert time.monotonic() < deadline, f"trace {trace_id}: {sorted(spans())}"
        time.sleep(0.5)
    found = spans()
    admission = found["hami-webhook"]["POST /mutate"]
    assert parent_of(admission) is None
    allocator, agent = found["hami-allocator"], found["hami-nodeagent"]
    assert parent_of(allocator["POST /filter"]) == admission["spanID"]
    assert tags_of(allocator["POST /filter"])["hami.nodes.passed"] == 1
    assert parent_of(allocator["POST /bind"]) == admission["spanID"]
    decided = tags_of(allocator["POST /bind"])  # the decision is told on bind's span
    assert decided["hami.outcome"] == "placed" and decided["hami.policy.node"] == "binpack"
    assert decided["hami.nodes.considered"] == 1  # bind decides on the node it was given
    allocate = agent["v1beta1.DevicePlugin/Allocate"]
    assert parent_of(allocate) == admission["spanID"]
    assert tags_of(allocate)["k8s.pod.name"] == pod and tags_of(allocate)["rpc.system"] == "grpc"
    assert tags_of(admission)["http.response.status_code"] == 200
    hami.delete_pod(pod)


def test_two_pods_share_the_gpu_a_third_waits_usage_is_per_container(hami: Hami) -> None:
    first, second, third = name("share-a"), name("share-b"), name("share-c")
    for pod in (first, second):
        hami.create_pod(pod, SHARE, "sleep 3600")
    running = [hami.wait_pod(p, ("Running",)) for p in (first, second)]
    devices = {p["metadata"]["annotations"]["hami.io/vgpu-devices-allocated"] for p in running}
    assert len({d.split(",")[0] for d in devices}) == 1  # one physical GPU, shared
    hami.create_pod(third, SHARE, "sleep 3600")
    deadline = time.monotonic() + 30
    while not any(
        e["reason"] == "FailedScheduling" and "nvidia.com/gpumem" in e["message"]
        for e in hami.events(third)
    ):
        assert time.monotonic() < deadline, hami.events(third)
        time.sleep(0.5)
    assert hami.pod(third)["status"]["phase"] == "Pending"

    # The library in the second pod's container would keep its region; a process of the
    # real library on the host, pointed at that region file, stands in for it.
    uid = running[1]["metadata"]["uid"]
    cache = hami.vgpu_root / "containers" / f"{uid}_main" / "vgpu.cache"
    holder = subprocess.Popen(
        [str(NATIVE_BUILD / "test_native"), "grab", str(8 << 20), "3"],
        env={
            "PATH": os.environ["PATH"],
            "LD_LIBRARY_PATH": str(NATIVE_BUILD),
            "LD_PRELOAD": str(LIBVGPU),
            "CUDA_DEVICE_MEMORY_LIMIT_0": "60000m",
            "CUDA_DEVICE_MEMORY_SHARED_CACHE": str(cache),
        },
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "got 3"
        samples = asyncio.run(usage_samples(hami, lambda x: x.pod_name == second, 15))
    finally:
        holder.kill()
        holder.communicate()
    assert samples and samples[-1].memory_used_bytes == 24 << 20, samples
    last = samples[-1]
    assert (last.pod_namespace, last.pod_uid, last.container) == ("default", uid, "main")
    assert last.memory_limit_bytes == 60000 << 20
    assert read_region(cache.read_bytes()).used_bytes[0] == 24 << 20

    hami.delete_pod(first)
    hami.wait_pod(third, ("Running",), timeout_s=60)
    for pod in (second, third):
        hami.delete_pod(pod)
    region = cache.parent
    deadline = time.monotonic() + 30
    while region.exists():  # the container is gone: its region goes, and its samples stop
        assert time.monotonic() < deadline, f"{region} was not removed"
        time.sleep(0.5)
    assert not asyncio.run(usage_samples(hami, lambda x: x.pod_name == second, 3))


def test_a_tampered_annotation_keeps_the_container_from_starting(hami: Hami) -> None:
    pod = name("tampered")
    # Hold Allocate (the agent is stopped) until the annotation has been changed after bind.
    hami.signal_agent(signal.SIGSTOP)
    try:
        hami.create_pod(pod, SHARE, "echo started")
        deadline = time.monotonic() + 30
        while hami.pod(pod)["metadata"].get("annotations", {}).get(BIND_PHASE) != "allocating":
            assert time.monotonic() < deadline, hami.pod(pod)
            time.sleep(0.2)
        hami.plane.request(
            "PATCH",
            f"/api/v1/namespaces/default/pods/{pod}",
            {"metadata": {"annotations": {DEVICES_TO_ALLOCATE: _raised(hami.pod(pod))}}},
            content_type="application/merge-patch+json",
        )
    finally:
        hami.signal_agent(signal.SIGCONT)
    failed = hami.wait_pod(pod, ("Failed", "Running", "Succeeded"))
    assert failed["status"]["phase"] == "Failed", failed["status"]
    assert "differs from the allocation" in failed["status"].get("message", "")
    annotations = failed["metadata"]["annotations"]
    assert annotations[BIND_PHASE] == "failed"
    assert "differs from the allocation" in annotations[ALLOCATE_FAILURE]
    hami.delete_pod(pod)


def _raised(pod: dict[str, object]) -> str:
    text = pod["metadata"]["annotations"][DEVICES_TO_ALLOCATE]  # type: ignore[index]
    uuid_, kind, _, cores = text.rstrip(":;").split(",")
    return f"{uuid_},{kind},140000,{cores}:;"


def registrations(hami: Hami) -> int:
    return hami.log("nodeagent").count("deviceplugin: registered ")


def wait_registered_again(hami: Hami, before: int) -> None:
    """Until then the kubelet holds the devices unhealthy and refuses containers that ask for
    them (UnexpectedAdmissionError): new pods start once the plugin is back."""
    deadline = time.monotonic() + 60
    while registrations(hami) <= before:
        assert time.monotonic() < deadline, "the device plugin did not register again"
        time.sleep(0.3)
    hami.wait_capacity("10")


def test_after_a_kubelet_restart_the_plugin_registers_again(hami: Hami) -> None:
    before = registrations(hami)
    hami.node.stop_kubelet()
    hami.node.start_kubelet()
    hami.node.wait_ready()
    wait_registered_again(hami, before)
    pod = name("after-restart")
    hami.create_pod(pod, SHARE, "echo $CUDA_DEVICE_MEMORY_LIMIT_0")
    assert hami.wait_pod(pod, ("Succeeded", "Failed"))["status"]["phase"] == "Succeeded"
    assert hami.logs(pod).strip() == "60000m"
    hami.delete_pod(pod)


def test_a_killed_agent_leaves_running_pods_alone_and_new_pods_start(hami: Hami) -> None:
    running = name("survivor")
    hami.create_pod(running, SHARE, "sleep 3600")
    hami.wait_pod(running, ("Running",))
    before = registrations(hami)
    hami.kill_agent()
    hami.start_agent()
    wait_registered_again(hami, before)
    pod = name("after-kill")
    hami.create_pod(pod, SHARE, "echo $CUDA_DEVICE_MEMORY_LIMIT_0")
    assert hami.wait_pod(pod, ("Succeeded", "Failed"))["status"]["phase"] == "Succeeded"
    assert hami.logs(pod).strip() == "60000m"
    survivor = hami.pod(running)
    assert survivor["status"]["phase"] == "Running"
    assert survivor["status"]["containerStatuses"][0]["restartCount"] == 0
    for p in (running, pod):
        hami.delete_pod(p)


def test_no_region_is_left_behind(hami: Hami) -> None:
    hami.node.delete_pods()
    containers = hami.vgpu_root / "containers"
    deadline = time.monotonic() + 30
    while any(containers.iterdir()):
        assert time.monotonic() < deadline, list(containers.iterdir())
        time.sleep(0.5)
    assert not any(Path(hami.vgpu_root / "owners").iterdir())
