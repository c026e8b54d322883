"""DRA's pure core: the ResourceSlice kube-scheduler allocates shares from, and a claim's
allocation turned into the device plugin's container contract (as a CDI spec)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from services.nodeagent.core import dra
from services.nodeagent.core.containerspec import HostLayout
from services.nodeagent.core.inventory import SharingPolicy
from services.nodeagent.core.readings import DeviceReading, DriverInfo

MIB = 1024 * 1024
H200 = 143771 * MIB
READINGS = [
    DeviceReading(uuid="GPU-a", index=0, model="NVIDIA H200", memory_total_bytes=H200, numa_node=0),
    DeviceReading(uuid="GPU-b", index=1, model="NVIDIA H200", memory_total_bytes=H200, numa_node=1),
]
POLICY = SharingPolicy(split_count=10, memory_scaling=1.0, core_scaling=1.0)
LAYOUT = HostLayout(root=Path("/v/dra"), library=Path("/v/libvgpu.so"))


def claim(*results: dict[str, Any], config: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {
        "metadata": {"name": "c1", "namespace": "ns", "uid": "uid-1"},
        "spec": {"devices": {"requests": [{"name": "gpu"}], "config": config or []}},
        "status": {"allocation": {"devices": {"results": list(results)}}},
    }


def result(device: str = "gpu-0", **consumed: str) -> dict[str, Any]:
    out: dict[str, Any] = {"request": "gpu", "driver": dra.DRIVER, "pool": "n1", "device": device}
    if consumed:
        out["consumedCapacity"] = consumed
        out["shareID"] = "s1"
    return out


def test_the_slice_offers_each_healthy_gpu_as_shareable_capacity() -> None:
    unhealthy = DeviceReading(
        uuid="GPU-c", index=2, model="NVIDIA H200", memory_total_bytes=H200, healthy=False
    )
    in_mig_mode = DeviceReading(  # MIG is the device plugin's (mig mode), not a shared GPU
        uuid="GPU-d", index=3, model="NVIDIA H200", memory_total_bytes=H200, isolation="partition"
    )
    body = dra.resource_slice(
        "n1", [*READINGS, unhealthy, in_mig_mode], POLICY, DriverInfo("580.1"), 3
    )
    spec = body["spec"]
    assert (spec["driver"], spec["nodeName"], spec["pool"]) == (
        dra.DRIVER,
        "n1",
        {"name": "n1", "generation": 3, "resourceSliceCount": 1},
    )
    assert [d["name"] for d in spec["devices"]] == ["gpu-0", "gpu-1"]  # the others are out
    gpu0 = spec["devices"][0]
    assert gpu0["allowMultipleAllocations"] is True
    assert gpu0["attributes"]["uuid"] == {"string": "GPU-a"}
    assert gpu0["attributes"]["numaNode"] == {"int": 0}
    memory = gpu0["capacity"]["memory"]
    assert memory["value"] == "143771Mi" and memory["requestPolicy"]["default"] == "143771Mi"
    assert memory["requestPolicy"]["validRange"]["step"] == "1Mi"
    assert gpu0["capacity"]["shares"] == {
        "value": "10",
        "requestPolicy": {"default": "1", "validValues": ["1"]},
    }


def test_a_share_becomes_its_grant_and_a_claim_without_capacity_the_whole_gpu() -> None:
    [share] = dra.claim_results(
        claim(result("gpu-1", memory="3000Mi", cores="30", shares="1")), "n1", READINGS, POLICY
    )
    assert (share.grant.uuid, share.grant.memory_mib, share.grant.cores) == ("GPU-b", 3000, 30)
    assert share.share_id == "s1"
    [whole] = dra.claim_results(claim(result("gpu-0")), "n1", READINGS, POLICY)
    assert (whole.grant.memory_mib, whole.grant.cores) == (143771, 100)
    rounded = dra.claim_results(
        claim(result(memory="1.5Gi", cores="2500m")), "n1", READINGS, POLICY
    )
    assert (rounded[0].grant.memory_mib, rounded[0].grant.cores) == (1536, 3)  # up, never down


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        (claim(), "no device of driver"),
        (claim({**result(), "pool": "other"}), "no device of driver"),
        (claim(result("gpu-7")), "not on this node"),
        (claim(result(memory="200000Mi")), "outside"),
        (claim(result(cores="-1")), "outside"),
        (claim(result(memory="lots")), "not a quantity"),
    ],
)
def test_an_allocation_this_node_cannot_honour_is_refused(bad: dict[str, Any], reason: str) -> None:
    with pytest.raises(dra.ClaimRefused, match=reason):
        dra.claim_results(bad, "n1", READINGS, POLICY)


def test_the_cdi_spec_carries_the_device_plugins_contract() -> None:
    c = claim(result(memory="3000Mi", cores="30"))
    results = dra.claim_results(c, "n1", READINGS, POLICY)
    spec = dra.claim_spec(c, results, {r.uuid: r for r in READINGS}, LAYOUT)
    cdi = dra.cdi_spec("uid-1", results, spec)
    assert cdi["kind"] == "gpu.hami.io/claim"
    assert [d["name"] for d in cdi["devices"]] == ["uid-1-gpu-0"]
    assert dra.cdi_ids("uid-1", results[0]) == ["gpu.hami.io/claim=uid-1-gpu-0"]
    env = dict(e.split("=", 1) for e in cdi["containerEdits"]["env"])
    assert env["CUDA_DEVICE_MEMORY_LIMIT_0"] == "3000m" and env["CUDA_DEVICE_SM_LIMIT"] == "30"
    assert env["NVIDIA_VISIBLE_DEVICES"] == "GPU-a"
    assert env["HAMI_LIMITS_FILE"] == "/usr/local/vgpu/limits"
    mounts = {m["containerPath"]: m for m in cdi["containerEdits"]["mounts"]}
    assert mounts["/etc/ld.so.preload"]["hostPath"] == "/v/dra/ld.so.preload"
    assert "ro" in mounts["/usr/local/vgpu/libvgpu.so"]["options"]
    assert "ro" in mounts["/usr/local/vgpu/limits"]["options"]
    assert mounts["/usr/local/vgpu/region"]["hostPath"].endswith("uid-1_claim")
    assert "rw" in mounts["/usr/local/vgpu/region"]["options"]


def test_the_opaque_configuration_is_checked() -> None:
    ok = {"opaque": {"driver": dra.DRIVER, "parameters": {"priority": 0}}}
    assert dra.claim_config(claim(config=[ok])).priority == 0
    other = {"opaque": {"driver": "gpu.nvidia.com", "parameters": {"sharing": "MPS"}}}
    assert dra.claim_config(claim(config=[other])).priority == 1  # another driver's: not ours
    for bad in (
        {"opaque": {"driver": dra.DRIVER, "parameters": {"priority": 5}}},
        {"opaque": {"driver": dra.DRIVER, "parameters": {"unknownKnob": 1}}},
        {"opaque": {"driver": dra.DRIVER, "parameters": "priority=0"}},
    ):
        with pytest.raises(dra.ClaimRefused, match="opaque configuration"):
            dra.claim_config(claim(config=[bad]))
