from __future__ import annotations

from typing import Any

import pytest

from services.allocator.core.podspec import PodDefaults, decode_devices, encode_devices, parse_pod
from shared.errors import InvalidRequest
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
    ],
)
def test_bad_pods_are_refused(limits: dict[str, str], annotations: dict[str, str]) -> None:
    with pytest.raises(InvalidRequest):
        parse_pod(pod(limits, annotations=annotations))


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
