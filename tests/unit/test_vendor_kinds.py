"""HAMi's device families as registry data: each vendor's pod YAML is read with its resource
names, units and selectors, its simulated devices carry its isolation model, and the allocator
places each container on a device of the kind it asked for (no vendor name in the core)."""

from __future__ import annotations

from typing import Any

import pytest

from services.allocator.core import ledger
from services.allocator.core.placement import Placed, SchedulingSettings, Wait, decide
from services.allocator.core.podspec import encode_devices
from services.allocator.core.state import ClusterState
from services.allocator.extender import place_request_for
from services.nodeagent.core.inventory import SharingPolicy, device_info
from services.nodeagent.core.simulate import parse_simulation
from shared.errors import InvalidRequest
from shared.podspec import parse_pod
from shared.schemas.inventory import NodeInventory
from shared.simspec import parse_spec
from shared.vendorkinds import VENDOR_KINDS

POLICY = SharingPolicy(split_count=10, memory_scaling=1.0, core_scaling=1.0)


def pod(*containers: dict[str, str], annotations: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "metadata": {"name": "p", "namespace": "ns", "uid": "u", "annotations": annotations or {}},
        "spec": {
            "containers": [
                {"name": f"c{i}", "resources": {"limits": limits}}
                for i, limits in enumerate(containers)
            ]
        },
    }


@pytest.mark.parametrize(
    ("limits", "kind", "memory", "cores"),
    [
        ({"nvidia.com/gpu": "1", "nvidia.com/gpumem": "3000"}, "nvidia", 3000, 0),
        (
            {
                "cambricon.com/vmlu": "1",
                "cambricon.com/mlu.smlu.vmemory": "4",
                "cambricon.com/mlu.smlu.vcore": "20",
            },
            "cambricon-mlu",
            1024,
            20,
        ),
        (
            {"hygon.com/dcunum": "1", "hygon.com/dcumem": "2000", "hygon.com/dcucores": "30"},
            "hygon-dcu",
            2000,
            30,
        ),
        (
            {"huawei.com/Ascend910B3": "1", "huawei.com/Ascend910B3-memory": "2000"},
            "ascend910b3",
            2000,
            0,
        ),
        (
            {"iluvatar.ai/BI-V150-vgpu": "1", "iluvatar.ai/BI-V150.vMem": "8"},
            "iluvatar-bi-v150",
            2048,
            0,
        ),
        (
            {
                "metax-tech.com/sgpu": "1",
                "metax-tech.com/vmemory": "4",
                "metax-tech.com/vcore": "25",
            },
            "metax-sgpu",
            4096,
            25,
        ),
        (
            {
                "mthreads.com/vgpu": "1",
                "mthreads.com/sgpu-memory": "8",
                "mthreads.com/sgpu-core": "4",
            },
            "mthreads",
            4096,
            25,
        ),
        ({"enflame.com/drs-gcu": "1", "enflame.com/gcu-memory": "10000"}, "enflame-drs", 10000, 0),
        (
            {"kunlunxin.com/vxpu": "1", "kunlunxin.com/vxpu-memory": "24576"},
            "kunlunxin-vxpu",
            24576,
            0,
        ),
        ({"amd.com/gpu": "1", "amd.com/gpumem": "8000", "amd.com/gpucores": "50"}, "amd", 8000, 50),
        ({"metax-tech.com/gpu": "2"}, "metax-gpu", None, 0),
        ({"enflame.com/gcu": "1"}, "enflame-gcu", None, 0),
        ({"kunlunxin.com/xpu": "4"}, "kunlunxin-xpu", None, 0),
    ],
)
def test_each_vendors_yaml_is_read_in_its_units(
    limits: dict[str, str], kind: str, memory: int | None, cores: int
) -> None:
    [container] = parse_pod(pod(limits), VENDOR_KINDS).containers
    assert (container.kind, container.memory_mib, container.cores) == (kind, memory, cores)


def test_forbidden_amounts_and_mixed_kinds_are_refused_with_the_reason() -> None:
    with pytest.raises(InvalidRequest, match=r"sgpu-memory 3 is not one of 2, 4, 8"):
        parse_pod(pod({"mthreads.com/vgpu": "1", "mthreads.com/sgpu-memory": "3"}), VENDOR_KINDS)
    with pytest.raises(InvalidRequest, match=r"sgpu-core 17 must be 0\.\.16"):
        parse_pod(pod({"mthreads.com/vgpu": "1", "mthreads.com/sgpu-core": "17"}), VENDOR_KINDS)
    with pytest.raises(InvalidRequest, match="several kinds"):
        parse_pod(pod({"nvidia.com/gpu": "1", "amd.com/gpu": "1"}), VENDOR_KINDS)


def test_selectors_are_each_kinds_own() -> None:
    annotations = {
        "cambricon.com/use-mlutype": "MLU590",
        "nvidia.com/use-gputype": "H200",
        "hami.io/use-Ascend910B3-uuid": "NPU-1,NPU-2",
    }
    mlu, gpu, npu = parse_pod(
        pod(
            {"cambricon.com/vmlu": "1"},
            {"nvidia.com/gpu": "1"},
            {"huawei.com/Ascend910B3": "1"},
            annotations=annotations,
        ),
        VENDOR_KINDS,
    ).containers
    assert mlu.use_types == ("MLU590",) and gpu.use_types == ("H200",) and not npu.use_types
    assert npu.use_uuids == ("NPU-1", "NPU-2") and not mlu.use_uuids


def test_simulated_vendor_devices_carry_their_isolation_model() -> None:
    spec = "2xAscend910B3,1xMLU370,1xS60,1xenflame-drs:S60,1xH200"
    readings = parse_simulation(spec, "n1")
    infos = [device_info(r, POLICY) for r in readings]
    assert [(i.kind, i.isolation) for i in infos] == [
        ("ascend910b3", "partition"),
        ("ascend910b3", "partition"),
        ("cambricon-mlu", "interception"),
        ("enflame-gcu", "whole"),
        ("enflame-drs", "partition"),
        ("nvidia", "interception"),
    ]
    assert [p.name for p in infos[0].profiles] == ["vir05_1c_16g", "vir10_3c_32g"]
    assert infos[3].split_count == 1 and infos[2].split_count == 10
    with pytest.raises(InvalidRequest, match=r"unknown model .Ascend999.*ascend910b3:Ascend910B3"):
        parse_spec("1xAscend999")


def test_a_mixed_cluster_places_each_container_on_its_own_kind() -> None:
    readings = parse_simulation("2xAscend910B3,1xMLU370,2xH200", "n1")
    inventory = NodeInventory(
        node="n1", agent_id="a", devices=tuple(device_info(r, POLICY) for r in readings)
    )
    state = ledger.observe_inventory(ClusterState(), inventory, 0.0)
    request = parse_pod(
        pod(
            {"huawei.com/Ascend910B3": "1", "huawei.com/Ascend910B3-memory": "2000"},
            {"cambricon.com/vmlu": "1", "cambricon.com/mlu.smlu.vmemory": "8"},
            {"nvidia.com/gpu": "1", "nvidia.com/gpumem": "1000"},
        ),
        VENDOR_KINDS,
    )
    decision = decide(state, place_request_for(pod(), request, None), SchedulingSettings(), 0.0)
    assert isinstance(decision, Placed), decision
    npu, mlu, gpu = decision.fit.containers
    assert (npu[0].kind, npu[0].profile, npu[0].memory_mib) == (
        "ascend910b3",
        "vir05_1c_16g",
        16384,
    )
    assert (mlu[0].kind, mlu[0].memory_mib) == ("cambricon-mlu", 2048)
    assert (gpu[0].kind, gpu[0].memory_mib) == ("nvidia", 1000)
    annotation = encode_devices(decision.fit.containers, VENDOR_KINDS)
    assert ",Ascend910B3,16384," in annotation and ",MLU,2048," in annotation
    assert ",NVIDIA,1000," in annotation
    only_amd = parse_pod(pod({"amd.com/gpu": "1"}), VENDOR_KINDS)
    nothing = decide(state, place_request_for(pod(), only_amd, None), SchedulingSettings(), 0.0)
    assert not isinstance(nothing, (Placed, Wait)) and "kind" in nothing.reason


def test_docs_devices_md_matches_the_registry() -> None:
    from shared import kinddoc

    document = kinddoc.DOC_PATH.read_text()
    assert kinddoc.splice(document, kinddoc.render()) == document, (
        "docs/devices.md is out of date: run `python -m shared.kinddoc`"
    )


async def test_the_device_plugin_offers_only_nvidias_devices() -> None:
    from services.nodeagent.deviceplugin import DeviceList

    devices = DeviceList(split_count=10)
    await devices.update(parse_simulation("2xAscend910B3,1xH200", "n1"))
    assert len(devices.advertised) == 10 and {r.kind for r in devices.readings.values()} == {
        "nvidia"
    }
