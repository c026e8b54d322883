from pathlib import Path

from services.local.jobenv import job_environment
from shared.schemas.placement import AllocationRecord, DeviceGrant


def record(*grants: DeviceGrant, priority: int = 1) -> AllocationRecord:
    return AllocationRecord(
        allocation_id="a1",
        request_id="r",
        node="n",
        containers=(grants,),
        created_at=0.0,
        priority=priority,
    )


def grant(uuid: str, index: int, mem: int, cores: int) -> DeviceGrant:
    return DeviceGrant(uuid=uuid, index=index, model="H200", memory_mib=mem, cores=cores)


def test_limits_follow_hami_names() -> None:
    env = job_environment(
        {"PATH": "/bin"},
        record(grant("GPU-a", 3, 3000, 30), grant("GPU-b", 5, 4000, 30), priority=0),
        cache_path=Path("/s/a1.cache"),
        libvgpu=None,
    )
    assert env["CUDA_VISIBLE_DEVICES"] == "GPU-a,GPU-b"
    assert env["CUDA_DEVICE_MEMORY_LIMIT_0"] == "3000m"
    assert env["CUDA_DEVICE_MEMORY_LIMIT_1"] == "4000m"
    assert env["CUDA_DEVICE_SM_LIMIT"] == "30"
    assert env["CUDA_DEVICE_MEMORY_SHARED_CACHE"] == "/s/a1.cache"
    assert env["CUDA_TASK_PRIORITY"] == "0"
    assert env["PATH"] == "/bin" and "LD_PRELOAD" not in env


def test_preload_is_prepended() -> None:
    env = job_environment(
        {"LD_PRELOAD": "/x.so"},
        record(grant("GPU-a", 0, 1, 0)),
        cache_path=Path("/c"),
        libvgpu=Path("/lib/libvgpu.so"),
    )
    assert env["LD_PRELOAD"] == "/lib/libvgpu.so:/x.so"
