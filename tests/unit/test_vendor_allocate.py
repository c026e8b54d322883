"""Allocate for other vendors' kinds: each kind's plugin finds its own container of a pod that
mixes kinds, advertises slots by the kind's isolation, and hands out the vendor's conventions
(or refuses, saying why, where nothing would enforce the share)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import msgspec
import pytest
import yaml

from services.allocator.core.podspec import device_annotations
from services.nodeagent.core.handshake import AllocateRefused, Assignment, assign, consume
from services.nodeagent.core.readings import DeviceReading
from services.nodeagent.core.vendorspec import (
    AMD_LIBRARY,
    VendorHost,
    serves,
    vendor_container_spec,
)
from services.nodeagent.deviceplugin import ANNOTATION_TYPES, DeviceList
from services.nodeagent.vendorplugins import advertised, offered, unserved_kinds
from shared.deviceannotation import AnnotatedDevice, decode
from shared.errors import InvalidRequest
from shared.resources import ASSIGNED_NODE, BIND_PHASE, BIND_TIME, DEVICES_TO_ALLOCATE
from shared.schemas.placement import AllocationRecord, DeviceGrant, Holder
from shared.vendorkinds import VENDOR_KINDS

MIB = 1 << 20
ROOT = Path(__file__).parents[2]


def reading(uuid: str, kind: str, model: str, memory_mib: int, **kw: Any) -> DeviceReading:
    return DeviceReading(
        uuid=uuid,
        index=kw.pop("index", 0),
        model=model,
        memory_total_bytes=memory_mib * MIB,
        kind=kind,
        **kw,
    )


ASCEND = reading("NPU-a", "ascend910b3", "Ascend910B3", 65536, minor_number=5)
MLU = reading("MLU-a", "cambricon-mlu", "MLU370-X8", 49152, index=2, minor_number=2)
AMD = reading("GPU-amd", "amd", "MI300X", 196608, minor_number=1)
H200 = reading("GPU-h", "nvidia", "NVIDIA H200", 143771)
READINGS = {r.uuid: r for r in (ASCEND, MLU, AMD, H200)}
EVERY_NODE = VendorHost(lambda path: True, amd_library="/usr/local/vgpu/libamvgpu.so")


def grant(r: DeviceReading, memory: int, cores: int, profile: str = "") -> DeviceGrant:
    return DeviceGrant(
        uuid=r.uuid,
        index=r.index,
        model=r.model,
        kind=r.kind,
        memory_mib=memory,
        cores=cores,
        profile=profile,
    )


def assignment(*grants: DeviceGrant) -> Assignment:
    return Assignment("default", "p", "uid-1", 0, "main", grants, 1, "alloc-1", ())


def test_ascend_gets_its_chips_and_the_template_for_the_runtime() -> None:
    spec = vendor_container_spec(
        VENDOR_KINDS.named("ascend910b3"),
        assignment(grant(ASCEND, 16384, 25, "vir05_1c_16g")),
        READINGS,
        EVERY_NODE,
    )
    assert spec.envs["ASCEND_VISIBLE_DEVICES"] == "5"
    assert spec.envs["ASCEND_VNPU_SPECS"] == "vir05_1c_16g"
    assert spec.envs["HAMI_ALLOCATION_ID"] == "alloc-1"
    paths = [d.container_path for d in spec.devices]
    assert paths == ["/dev/davinci5", "/dev/davinci_manager", "/dev/devmm_svm", "/dev/hisi_hdc"]
    whole = vendor_container_spec(
        VENDOR_KINDS.named("ascend910b3"),
        assignment(grant(ASCEND, 65536, 100)),
        READINGS,
        EVERY_NODE,
    )
    assert "ASCEND_VNPU_SPECS" not in whole.envs
    # Shared nodes the host lacks are not invented.
    bare = vendor_container_spec(
        VENDOR_KINDS.named("ascend910b3"),
        assignment(grant(ASCEND, 65536, 100)),
        READINGS,
        VendorHost(lambda path: path == "/dev/davinci_manager"),
    )
    assert [d.container_path for d in bare.devices] == ["/dev/davinci5", "/dev/davinci_manager"]


def test_cambricon_gets_the_split_in_its_units_and_one_card() -> None:
    kind = VENDOR_KINDS.named("cambricon-mlu")
    spec = vendor_container_spec(kind, assignment(grant(MLU, 4096, 30)), READINGS, EVERY_NODE)
    assert spec.envs["CAMBRICON_SPLIT_ENABLE"] == "1"
    assert spec.envs["CAMBRICON_SPLIT_VISIBLE_DEVICES"] == "2"
    assert spec.envs["CAMBRICON_SPLIT_MEMS"] == "16"  # 4096 MiB in 256 MiB units
    assert spec.devices[0].container_path == "/dev/cambricon_dev2"
    other = reading("MLU-b", "cambricon-mlu", "MLU370-X8", 49152, index=3)
    with pytest.raises(InvalidRequest, match="one Cambricon device per container"):
        vendor_container_spec(
            kind,
            assignment(grant(MLU, 4096, 30), grant(other, 4096, 30)),
            {**READINGS, other.uuid: other},
            EVERY_NODE,
        )


def test_amd_memory_share_gets_the_library_and_refuses_what_it_cannot_enforce() -> None:
    kind = VENDOR_KINDS.named("amd")
    spec = vendor_container_spec(kind, assignment(grant(AMD, 49152, 100)), READINGS, EVERY_NODE)
    assert spec.envs["HIP_DEVICE_MEMORY_LIMIT_0"] == "49152m"
    assert spec.envs["LD_AUDIT"] == AMD_LIBRARY
    assert [(m.container_path, m.read_only) for m in spec.mounts] == [(AMD_LIBRARY, True)]
    assert [d.container_path for d in spec.devices] == ["/dev/dri/renderD129", "/dev/kfd"]
    whole = vendor_container_spec(kind, assignment(grant(AMD, 196608, 100)), READINGS, EVERY_NODE)
    assert "LD_AUDIT" not in whole.envs and whole.mounts == ()
    masked = vendor_container_spec(
        kind, assignment(grant(AMD, 49152, 25)), READINGS, EVERY_NODE, [tuple(range(76))]
    )
    assert masked.envs["HSA_CU_MASK"] == "0:0-75"
    with pytest.raises(InvalidRequest, match="compute units are not known"):
        vendor_container_spec(kind, assignment(grant(AMD, 49152, 25)), READINGS, EVERY_NODE)
    with pytest.raises(InvalidRequest, match="library is not on this node"):
        vendor_container_spec(
            kind, assignment(grant(AMD, 49152, 100)), READINGS, VendorHost(lambda p: True)
        )
    unasked = vendor_container_spec(kind, assignment(grant(AMD, 49152, 0)), READINGS, EVERY_NODE)
    assert "HSA_CU_MASK" not in unasked.envs and unasked.envs["LD_AUDIT"] == AMD_LIBRARY
    missing = VendorHost(lambda p: p != AMD_LIBRARY, amd_library=AMD_LIBRARY)
    with pytest.raises(InvalidRequest, match="library is not on this node"):
        vendor_container_spec(kind, assignment(grant(AMD, 49152, 100)), READINGS, missing)


def test_kinds_without_a_known_contract_and_bad_devices_are_refused() -> None:
    dcu = reading("DCU-a", "hygon-dcu", "Z100L", 32752)
    with pytest.raises(InvalidRequest, match="Hygon's own components"):
        vendor_container_spec(
            VENDOR_KINDS.named("hygon-dcu"),
            assignment(grant(dcu, 4096, 10)),
            {"DCU-a": dcu},
            EVERY_NODE,
        )
    sick = reading("NPU-s", "ascend910b3", "Ascend910B3", 65536, healthy=False)
    with pytest.raises(InvalidRequest, match="unhealthy"):
        vendor_container_spec(
            VENDOR_KINDS.named("ascend910b3"),
            assignment(grant(sick, 65536, 100)),
            {"NPU-s": sick},
            EVERY_NODE,
        )


def test_kinds_this_agent_does_not_serve_are_left_to_their_vendors_plugin() -> None:
    served = {k.name for k in VENDOR_KINDS.kinds if k.name != "nvidia" and serves(k)}
    assert served == {
        "ascend910b2",
        "ascend910b3",
        "ascend910b4",
        "ascend310p",
        "cambricon-mlu",
        "amd",
        "metax-gpu",
        "enflame-gcu",
        "kunlunxin-xpu",
    }


def test_whole_kinds_and_simulated_devices() -> None:
    xpu = reading("XPU-a", "kunlunxin-xpu", "P800", 98304, index=1, simulated=True)
    spec = vendor_container_spec(
        VENDOR_KINDS.named("kunlunxin-xpu"),
        assignment(grant(xpu, 98304, 100)),
        {"XPU-a": xpu},
        VendorHost(lambda path: False),
    )
    assert spec.envs["XPU_VISIBLE_DEVICES"] == "1"
    # A simulated device's nodes are stand-ins at the real paths, shared ones included.
    assert [(d.container_path, d.host_path) for d in spec.devices] == [
        ("/dev/xpu1", "/dev/null"),
        ("/dev/xpuctrl", "/dev/null"),
    ]


def mixed_pod() -> tuple[dict[str, Any], AllocationRecord]:
    containers = (
        (grant(H200, 10000, 30),),
        (grant(ASCEND, 16384, 25, "vir05_1c_16g"),),
        (grant(MLU, 4096, 30),),
    )
    record = AllocationRecord(
        allocation_id="alloc-1",
        request_id="pod/uid-1",
        node="vm",
        containers=containers,
        holder=Holder(kind="pod", namespace="default", pod="p", pod_uid="uid-1"),
        created_at=0.0,
    )
    pod = {
        "metadata": {
            "name": "p",
            "namespace": "default",
            "uid": "uid-1",
            "annotations": {
                BIND_PHASE: "allocating",
                ASSIGNED_NODE: "vm",
                BIND_TIME: "100",
                **device_annotations(containers, VENDOR_KINDS),
            },
        },
        "spec": {"containers": [{"name": n} for n in ("cuda", "npu", "mlu")]},
        "status": {"phase": "Pending"},
    }
    return pod, record


def test_each_kind_has_its_own_annotations_as_hami_writes_them() -> None:
    pod, _ = mixed_pod()
    annotations = pod["metadata"]["annotations"]
    assert annotations[DEVICES_TO_ALLOCATE] == "GPU-h,NVIDIA,10000,30:;;;"
    assert annotations["hami.io/Ascend910B3-devices-to-allocate"] == (
        ";NPU-a,Ascend910B3,16384,25:;;"
    )
    assert annotations["hami.io/cambricon-mlu-devices-allocated"] == ";;MLU-a,MLU,4096,30:;"
    assert decode(annotations["hami.io/cambricon-mlu-devices-to-allocate"])[2] == [
        AnnotatedDevice("MLU-a", "MLU", 4096, 30)
    ]


def test_each_kinds_plugin_finds_its_own_container_and_the_last_one_ends_the_bind() -> None:
    pod, record = mixed_pod()
    devices = {u: 65536 for u in READINGS}
    annotations = dict(pod["metadata"]["annotations"])
    order = (("ascend910b3", "npu"), ("cambricon-mlu", "mlu"), ("nvidia", "cuda"))
    for n, (kind, container) in enumerate(order):
        current = {**pod, "metadata": {**pod["metadata"], "annotations": annotations}}
        chosen = assign(
            [current],
            "vm",
            1,
            {"uid-1": record}.get,
            devices,
            ANNOTATION_TYPES,
            VENDOR_KINDS.named(kind),
        )
        assert chosen.container == container
        assert [g.kind for g in chosen.grants] == [kind]
        patch = consume(annotations, chosen, VENDOR_KINDS.to_allocate_annotations())
        annotations.update({k: v for k, v in patch.items() if v is not None})
        assert (annotations[BIND_PHASE] == "success") == (n == len(order) - 1)


def test_a_pod_without_devices_of_a_kind_is_not_that_plugins() -> None:
    pod, record = mixed_pod()
    only_npu = msgspec.structs.replace(record, containers=((), record.containers[1], ()))
    annotations = {
        **pod["metadata"]["annotations"],
        **device_annotations(only_npu.containers, VENDOR_KINDS),
    }
    del annotations[DEVICES_TO_ALLOCATE]
    npu_pod = {**pod, "metadata": {**pod["metadata"], "annotations": annotations}}
    # The NVIDIA plugin passes over it (it is not refused, nor marked failed) ...
    with pytest.raises(AllocateRefused, match="no pod on node vm is waiting for 1 nvidia"):
        assign([npu_pod], "vm", 1, {"uid-1": only_npu}.get, {}, ANNOTATION_TYPES)
    # ... and the Ascend plugin serves it.
    chosen = assign(
        [npu_pod],
        "vm",
        1,
        {"uid-1": only_npu}.get,
        {"NPU-a": 65536},
        ANNOTATION_TYPES,
        VENDOR_KINDS.named("ascend910b3"),
    )
    assert chosen.container == "npu"


def test_slots_follow_the_kinds_isolation() -> None:
    xpu = reading("XPU-a", "kunlunxin-xpu", "P800", 98304)

    async def advertised(kind: str) -> list[str]:
        devices = DeviceList(4, kind)
        await devices.update([ASCEND, MLU, xpu, H200])
        return [d.id for d in devices.advertised]

    assert len(asyncio.run(advertised("nvidia"))) == 4
    assert asyncio.run(advertised("kunlunxin-xpu")) == ["XPU-a-0"]  # whole: one container
    assert len(asyncio.run(advertised("cambricon-mlu"))) == 4


def test_deploy_hands_every_kinds_resources_to_the_extender() -> None:
    config = yaml.safe_load(
        (ROOT / "deploy/kustomize/base/allocator/kube-scheduler-config.yaml").read_text()
    )
    managed = config["extenders"][0]["managedResources"]
    assert [m["name"] for m in managed] == list(VENDOR_KINDS.managed())
    assert all(m["ignoredByScheduler"] for m in managed)


def test_kinds_left_to_vendors_are_offered_only_while_one_advertises_them() -> None:
    dcu = reading("DCU-0", "hygon-dcu", "Z100L", 32752)
    unserved = unserved_kinds(VENDOR_KINDS, serves)
    assert unserved["hygon-dcu"] == "hygon.com/dcunum" and "ascend910b3" not in unserved
    bare = {"status": {"allocatable": {"cpu": "2", "nvidia.com/gpu": "10"}}}
    served = {"status": {"allocatable": {"hygon.com/dcunum": "4"}}}
    zero = {"status": {"allocatable": {"hygon.com/dcunum": "0"}}}
    for node, healthy in ((None, False), (bare, False), (zero, False), (served, True)):
        out = offered([dcu, ASCEND], unserved, node)
        assert [r.healthy for r in out] == [healthy, True]  # a served kind is untouched
    assert advertised(served, "hygon.com/dcunum") and not advertised({}, "hygon.com/dcunum")
