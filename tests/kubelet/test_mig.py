"""Dynamic MIG on a real kubelet: a node in `mig` mode with a simulated H200 in MIG mode (the
node agent's MIG code on the simulated NVML). Pods that ask `nvidia.com/vgpu-mode: mig` get
the smallest profile that holds their memory, as an instance the agent makes at Allocate and
records on the pod; their containers see the MIG device and no interception library; an
instance outlives no allocation (taken down once its pod is gone); a killed agent loses none."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e.kubelet.stack import RESOURCE, Hami, Unusable, hami_on_a_node

MIG = {"nvidia.com/vgpu-mode": "mig"}
PRINT = (
    'echo "visible=$NVIDIA_VISIBLE_DEVICES"; '
    "test -e /etc/ld.so.preload && echo preload=yes || echo preload=no; "
    "test -e /usr/local/vgpu/libvgpu.so && echo library=yes || echo library=no; sleep {sleep}"
)


@pytest.fixture(scope="module")
def mig_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hami]:
    try:
        with hami_on_a_node(
            tmp_path_factory.mktemp("kubelet-mig"),
            agent_devices="1xmig:H200",
            agent_args=("--gpu-mode", "mig"),
        ) as node:
            yield node
    except Unusable as e:
        pytest.skip(str(e))


def instances(pod: dict[str, Any]) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = json.loads(
        pod["metadata"].get("annotations", {}).get("hami.io/mig-instances", "[]")
    )
    return entries


def running(hami: Hami, name: str, memory_mib: int, sleep: int = 120) -> dict[str, Any]:
    hami.create_pod(
        name,
        {RESOURCE: "1", "nvidia.com/gpumem": str(memory_mib)},
        PRINT.format(sleep=sleep),
        annotations=MIG,
    )
    pod = hami.wait_pod(name, ("Running", "Succeeded", "Failed"), timeout_s=90)
    assert pod["status"]["phase"] == "Running", (pod["status"], hami.log("nodeagent")[-3000:])
    deadline = time.monotonic() + 30
    while "visible=" not in hami.logs(name):
        assert time.monotonic() < deadline, hami.logs(name)
        time.sleep(0.2)
    return pod


def printed(hami: Hami, name: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in hami.logs(name).splitlines() if "=" in line)


def mask(entry: dict[str, Any]) -> int:
    return int(((1 << entry["slices"]) - 1) << entry["start"])


def test_each_pod_gets_the_smallest_profile_as_its_own_instance(mig_node: Hami) -> None:
    small = running(mig_node, "mig-small", 30_000)  # more than a 1g.18gb holds
    large = running(mig_node, "mig-large", 60_000)
    (a,) = instances(mig_node.pod("mig-small"))
    (b,) = instances(mig_node.pod("mig-large"))
    assert (a["profile"], b["profile"]) == ("1g.35gb", "3g.71gb")
    assert not mask(a) & mask(b)
    for pod, entry in ((small, a), (large, b)):
        out = printed(mig_node, pod["metadata"]["name"])
        assert out["visible"] == entry["uuid"] and entry["uuid"].startswith("MIG-")
        assert (out["preload"], out["library"]) == ("no", "no")  # the hardware isolates it
    for name in ("mig-small", "mig-large"):
        mig_node.delete_pod(name)


def test_a_pod_waits_while_the_slices_are_taken_and_starts_once_they_are_freed(
    mig_node: Hami,
) -> None:
    """A 7g.141gb takes the whole GPU; a small pod then waits with the scheduler's reason; once
    the first pod is gone its instance is taken down and the small one gets the slices."""
    running(mig_node, "mig-whole", 140_000)
    (whole,) = instances(mig_node.pod("mig-whole"))
    assert (whole["profile"], whole["start"], whole["slices"]) == ("7g.141gb", 0, 8)
    mig_node.create_pod(
        "mig-waits",
        {RESOURCE: "1", "nvidia.com/gpumem": "10000"},
        PRINT.format(sleep=120),
        annotations=MIG,
    )
    deadline = time.monotonic() + 30
    while True:
        messages = " ".join(e.get("message", "") for e in mig_node.events("mig-waits"))
        if "no free placement" in messages:
            break
        assert time.monotonic() < deadline, messages
        time.sleep(0.3)
    assert mig_node.pod("mig-waits")["status"]["phase"] == "Pending"
    mig_node.delete_pod("mig-whole")
    pod = mig_node.wait_pod("mig-waits", ("Running", "Failed"), timeout_s=90)
    assert pod["status"]["phase"] == "Running", mig_node.log("nodeagent")[-3000:]
    assert "MIG instance taken down" in mig_node.log("nodeagent")  # at Allocate, or reaped
    (small,) = instances(mig_node.pod("mig-waits"))
    assert small["profile"] == "1g.18gb" and small["uuid"] != whole["uuid"]
    mig_node.delete_pod("mig-waits")


def test_a_killed_agent_keeps_the_instances_of_running_pods(mig_node: Hami) -> None:
    """kill -9 of the agent, a new one: the running pod's instance stays (on the GPU and in the
    agent's ledger) past the grace and a reap; the next pod's instance does not overlap it."""
    running(mig_node, "mig-kept", 60_000, sleep=300)
    (entry,) = instances(mig_node.pod("mig-kept"))
    mig_node.kill_agent()  # kill -9
    mig_node.start_agent()
    mig_node.wait_capacity("10")
    time.sleep(6)  # twice the grace (3 s) and several reaps (every beat, 1 s)
    ledger = json.loads((mig_node.vgpu_root / "mig" / "instances.json").read_text())
    assert entry["uuid"] in {e["uuid"] for e in ledger}
    gpu = json.loads((mig_node.vgpu_root / "mig" / "simulated-gpus.json").read_text())
    on_gpu = {c["uuid"] for instances_ in gpu.values() for gi in instances_ for c in gi["compute"]}
    assert entry["uuid"] in on_gpu
    running(mig_node, "mig-beside", 60_000)
    (other,) = instances(mig_node.pod("mig-beside"))
    assert not mask(entry) & mask(other)
    assert mig_node.pod("mig-kept")["status"]["phase"] == "Running"
    for name in ("mig-kept", "mig-beside"):
        mig_node.delete_pod(name)
