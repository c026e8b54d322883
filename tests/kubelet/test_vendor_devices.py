"""Other vendors' devices on a real kubelet: a node with a simulated H200, Ascend 910B3, MLU370
and MI300X serves each kind as its own resource (its own device plugin); pods asking with
HAMi's resource names are placed by the allocator and get their vendor's conventions (the
Ascend template for the container runtime, Cambricon's split, AMD's library with a memory
limit and CU masks of their own), not the NVIDIA library."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from tests.e2e.kubelet.stack import Hami, Unusable, hami_on_a_node

PRINT = (
    "env | grep -E '^(ASCEND_|CAMBRICON_|NVIDIA_VISIBLE|HSA_CU_MASK|HIP_DEVICE|LD_AUDIT)' | sort; "
    "for d in /dev/davinci1 /dev/davinci_manager /dev/cambricon_dev2 /dev/kfd "
    "/dev/dri/renderD131; do "
    "test -e $d && echo dev=$d; done; "
    "test -e /usr/local/vgpu/libvgpu.so && echo library=yes || echo library=no; "
    "echo done=1; sleep 60"
)


@pytest.fixture(scope="module")
def vendor_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hami]:
    try:
        with hami_on_a_node(
            tmp_path_factory.mktemp("kubelet-vendors"),
            agent_devices="1xH200,1xAscend910B3,1xMLU370,1xMI300X,1xZ100L",
        ) as node:
            # HAMi's AMD plugin installs its library on the node; a stand-in does here.
            node.vgpu_root.mkdir(parents=True, exist_ok=True)
            (node.vgpu_root / "libamvgpu.so").write_bytes(b"")
            kinds = {"huawei.com/Ascend910B3", "cambricon.com/vmlu", "amd.com/gpu"}
            deadline = time.monotonic() + 60
            while not kinds <= node.capacity().keys():
                assert time.monotonic() < deadline, node.capacity()
                time.sleep(0.2)
            yield node
    except Unusable as e:
        pytest.skip(str(e))


def started(hami: Hami, name: str, limits: dict[str, str]) -> dict[str, str]:
    hami.create_pod(name, limits, PRINT)
    pod = hami.wait_pod(name, ("Running", "Succeeded", "Failed"), timeout_s=90)
    assert pod["status"]["phase"] == "Running", (pod["status"], hami.log("nodeagent")[-3000:])
    deadline = time.monotonic() + 30
    while "done=1" not in hami.logs(name):
        assert time.monotonic() < deadline, hami.logs(name)
        time.sleep(0.2)
    out: dict[str, str] = {}
    for line in hami.logs(name).splitlines():
        key, _, value = line.partition("=")
        out[key] = f"{out[key]},{value}" if key in out else value
    return out


def test_each_kind_is_its_own_resource(vendor_node: Hami) -> None:
    capacity = vendor_node.capacity()
    assert capacity["huawei.com/Ascend910B3"] == "10"  # a partition device: shares
    assert capacity["cambricon.com/vmlu"] == "10"
    assert capacity["nvidia.com/gpu"] == "10"
    assert capacity["amd.com/gpu"] == "10"
    assert "hygon.com/dcunum" not in capacity  # left to its vendor's plugin, none runs here


def test_a_kind_no_plugin_serves_here_is_not_placed_here(vendor_node: Hami) -> None:
    # Without the vendor's plugin the kubelet would start it with no device: it waits instead.
    vendor_node.create_pod(
        "dcu-share", {"hygon.com/dcunum": "1", "hygon.com/dcumem": "4096"}, "sleep 60"
    )
    time.sleep(5)
    pod = vendor_node.pod("dcu-share")
    assert pod["status"].get("phase") == "Pending" and not pod["spec"].get("nodeName"), pod
    annotations = pod["metadata"].get("annotations", {})
    assert "hami.io/dcu-devices-to-allocate" not in annotations
    vendor_node.delete_pod("dcu-share")


def test_an_ascend_pod_gets_its_template_and_chip(vendor_node: Hami) -> None:
    out = started(
        vendor_node,
        "npu-share",
        {"huawei.com/Ascend910B3": "1", "huawei.com/Ascend910B3-memory": "12000"},
    )
    assert out["ASCEND_VISIBLE_DEVICES"] == "1"  # its index on the node (H200 is 0)
    assert out["ASCEND_VNPU_SPECS"] == "vir05_1c_16g"  # 12000 MiB rounds up to 16 GiB
    assert "NVIDIA_VISIBLE_DEVICES" not in out and out["library"] == "no"
    assert out["dev"] == "/dev/davinci1,/dev/davinci_manager"


def test_a_cambricon_pod_gets_its_split(vendor_node: Hami) -> None:
    out = started(
        vendor_node,
        "mlu-share",
        {"cambricon.com/vmlu": "1", "cambricon.com/mlu.smlu.vmemory": "16"},
    )
    assert out["CAMBRICON_SPLIT_ENABLE"] == "1"
    assert out["CAMBRICON_SPLIT_VISIBLE_DEVICES"] == "2"
    assert out["CAMBRICON_SPLIT_MEMS"] == "16"  # 4 GiB in 256 MiB units
    assert out["dev"] == "/dev/cambricon_dev2" and out["library"] == "no"


def test_amd_pods_get_a_memory_limit_and_cu_masks_of_their_own(vendor_node: Hami) -> None:
    quarter = started(
        vendor_node,
        "amd-quarter",
        {"amd.com/gpu": "1", "amd.com/gpumem": "49152", "amd.com/gpucores": "25"},
    )
    half = started(
        vendor_node,
        "amd-half",
        {"amd.com/gpu": "1", "amd.com/gpumem": "49152", "amd.com/gpucores": "50"},
    )
    assert quarter["HSA_CU_MASK"] == "0:0-75"  # 25% of the MI300X's 304 CUs
    assert half["HSA_CU_MASK"] == "0:76-227"  # the next 152, none of its neighbour's
    for out in (quarter, half):
        assert out["HIP_DEVICE_MEMORY_LIMIT_0"] == "49152m"
        assert out["LD_AUDIT"] == "/usr/local/vgpu/libamvgpu.so"
        assert out["dev"] == "/dev/kfd,/dev/dri/renderD131" and out["library"] == "no"
