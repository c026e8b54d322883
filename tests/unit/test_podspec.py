from __future__ import annotations

from typing import Any

import pytest

from services.allocator.core.podspec import decode_devices, encode_devices
from shared.errors import InvalidRequest
from shared.podspec import PodDefaults, parse_pod
from shared.schemas.placement import DeviceGrant


def pod(*limits: dict[str, str], annotations: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "metadata": {"annotations": annotations or {}},
        "spec": {
            "containers": [
                {"name": f"c{i}", "resources": {"limits": lim}} for i, lim in enumerate(limits)
            ]
        },
    }


def test_hami_pod_yaml_maps_to_requests() -> None:
    request = parse_pod(
        pod(
            {"nvidia.com/gpu": "2", "nvidia.com/gpumem": "3k", "nvidia.com/gpucores": "30"},
            {"cpu": "1"},
            annotations={
                "nvidia.com/use-gputype": "H200,A100",
                "nvidia.com/nouse-gpuuuid": "GPU-x",
                "nvidia.com/numa-bind": "true",
                "hami.io/gpu-scheduler-policy": "binpack",
            },
        )
    )
    first, second = request.containers
    assert (first.count, first.memory_mib, first.cores) == (2, 3000, 30)
    assert first.use_types == ("H200", "A100") and first.nouse_uuids == ("GPU-x",)
    assert first.numa_bind and request.gpu_policy == "binpack"
    assert second.count == 0 and request.wants_devices


def test_defaults_follow_hami() -> None:
    only_count = parse_pod(
        pod({"nvidia.com/gpu": "1"}), defaults=PodDefaults(default_mem=2000, default_cores=10)
    )
    assert (only_count.containers[0].memory_mib, only_count.containers[0].cores) == (2000, 10)
    whole = parse_pod(pod({"nvidia.com/gpu": "1"})).containers[0]
    assert whole.memory_mib is None and whole.memory_percent is None  # the whole device
    only_mem = parse_pod(pod({"nvidia.com/gpumem-percentage": "25"})).containers[0]
    assert only_mem.count == 1 and only_mem.memory_percent == 25


@pytest.mark.parametrize(
    ("limits", "annotations"),
    [
        ({"nvidia.com/gpu": "1.5"}, {}),
        ({"nvidia.com/gpumem": "-1"}, {}),
        ({"nvidia.com/gpu": "1"}, {"hami.io/node-scheduler-policy": "random"}),
        ({"nvidia.com/gpu": "1"}, {"nvidia.com/vgpu-mode": "time-slicing"}),
    ],
)
def test_bad_pods_are_refused(limits: dict[str, str], annotations: dict[str, str]) -> None:
    with pytest.raises(InvalidRequest):
        parse_pod(pod(limits, annotations=annotations))


def test_the_vgpu_mode_is_read_for_nvidia_containers() -> None:
    for value, mode in (("mig", "mig"), ("HAMi-Core", "hami-core"), ("", "")):
        request = parse_pod(
            pod({"nvidia.com/gpu": "1"}, annotations={"nvidia.com/vgpu-mode": value})
        )
        assert request.containers[0].device_mode == mode


def test_annotation_encoding_round_trips() -> None:
    grants = [
        [
            DeviceGrant(uuid="GPU-a", index=0, model="m", memory_mib=3000, cores=0),
            DeviceGrant(uuid="GPU-b", index=1, model="m", memory_mib=5000, cores=30),
        ],
        [],
    ]
    text = encode_devices(grants)
    assert text == "GPU-a,NVIDIA,3000,0:GPU-b,NVIDIA,5000,30:;;"
    assert decode_devices(text) == [
        [("GPU-a", "NVIDIA", 3000, 0), ("GPU-b", "NVIDIA", 5000, 30)],
        [],
    ]


def test_another_vendor_plugs_in_through_the_registry() -> None:
    from immutables import Map

    from services.allocator.core.fit import NodeFit, fit_node
    from services.allocator.core.policies import Spread
    from shared.devicekinds import DEFAULT_KINDS, DeviceKind
    from shared.resources import ResourceNames
    from shared.schemas.inventory import DeviceInfo

    spread_order = Spread().device_order()

    npu = DeviceKind(
        name="npu",
        annotation_type="Ascend",
        resources=ResourceNames(
            count="example.com/npu",
            memory="example.com/npumem",
            memory_percentage="example.com/npumem-percentage",
            cores="example.com/npucores",
            priority="example.com/npu-priority",
        ),
    )
    kinds = DEFAULT_KINDS.with_kind(npu)
    request = parse_pod(
        pod({"example.com/npu": "1", "example.com/npumem": "1000"}, {"nvidia.com/gpu": "1"}),
        kinds=kinds,
    )
    npu_request, gpu_request = request.containers
    assert (npu_request.kind, npu_request.memory_mib) == ("npu", 1000)
    assert gpu_request.kind == "nvidia"
    devices = (
        DeviceInfo(
            uuid="NPU-0",
            index=0,
            model="Ascend 910",
            kind="npu",
            memory_mib=32768,
            physical_memory_mib=32768,
        ),
        DeviceInfo(
            uuid="GPU-0",
            index=1,
            model="NVIDIA H200",
            memory_mib=143771,
            physical_memory_mib=143771,
        ),
    )
    fit = fit_node("n", devices, Map(), request.containers, spread_order)
    assert isinstance(fit, NodeFit)
    assert [g.uuid for c in fit.containers for g in c] == ["NPU-0", "GPU-0"]
    assert encode_devices(fit.containers, kinds).startswith("NPU-0,Ascend,1000,0:;GPU-0,NVIDIA,")
    with pytest.raises(InvalidRequest, match="several kinds"):
        parse_pod(pod({"example.com/npu": "1", "nvidia.com/gpu": "1"}), kinds=kinds)


def test_the_pods_host_cpu_and_memory_are_summed_as_kube_scheduler_does() -> None:
    from services.allocator.extender import place_request_for
    from shared.podspec import host_requests

    def c(requests: dict[str, str] | None = None, limits: dict[str, str] | None = None) -> dict:
        return {"name": "c", "resources": {"requests": requests or {}, "limits": limits or {}}}

    pod = {
        "metadata": {"uid": "u1"},
        "spec": {
            "containers": [
                c({"cpu": "500m", "memory": "1Gi", "nvidia.com/gpu": "1"}),
                c(limits={"cpu": "2", "memory": "1.5G"}),  # a limit alone is the request
            ],
            "initContainers": [
                c({"cpu": "8"}),  # runs alone before the others: the pod needs 8 CPUs
                {"restartPolicy": "Always", **c({"cpu": "100m", "memory": "64Mi"})},  # sidecar
            ],
            "overhead": {"cpu": "250m"},
        },
    }
    assert host_requests(pod) == (8250, 1024 + 1431 + 64)
    request = parse_pod(pod)
    assert (request.cpu_milli, request.memory_mib) == (8250, 2519)
    placed = place_request_for(pod, request, None)
    assert (placed.cpu_milli, placed.memory_mib) == (8250, 2519)
    assert host_requests({"spec": {"containers": [c({"cpu": "3k"})]}}) == (3_000_000, 0)
    assert host_requests({}) == (0, 0)
    for bad in ("lots", "-1", "1e999999999", "9Ei"):
        with pytest.raises(InvalidRequest, match=r"containers\[c\] cpu"):
            host_requests({"spec": {"containers": [c({"cpu": bad})]}})


def test_a_quantity_with_an_absurd_exponent_is_refused_not_computed() -> None:
    """`1e999999999` would be a number of a billion digits: computing it never ends."""
    from shared.quantity import parse_k8s_quantity

    with pytest.raises(ValueError, match="out of range"):
        parse_k8s_quantity("1e999999999")
    assert parse_k8s_quantity("1e36") == 10**36
    with pytest.raises(InvalidRequest):
        parse_pod(pod({"nvidia.com/gpu": "1", "nvidia.com/gpumem": "1e999999999"}))
