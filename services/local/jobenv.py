"""The environment a job runs with: visible devices and the limits the native library enforces.

Names follow HAMi's device plugin so that existing jobs and libraries read them unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from shared.schemas.placement import AllocationRecord

PRIORITY_ENV = {0: "0", 1: "1"}


def job_environment(
    base: Mapping[str, str],
    record: AllocationRecord,
    *,
    cache_path: Path,
    libvgpu: Path | None,
) -> dict[str, str]:
    grants = [grant for container in record.containers for grant in container]
    env = dict(base)
    visible = ",".join(g.uuid for g in grants)
    env["CUDA_VISIBLE_DEVICES"] = visible
    env["NVIDIA_VISIBLE_DEVICES"] = visible
    for i, grant in enumerate(grants):
        env[f"CUDA_DEVICE_MEMORY_LIMIT_{i}"] = f"{grant.memory_mib}m"
    # One job gets one compute share; with several devices they all carry the same percent.
    env["CUDA_DEVICE_SM_LIMIT"] = str(max((g.cores for g in grants), default=0))
    env["CUDA_DEVICE_MEMORY_SHARED_CACHE"] = str(cache_path)
    env["CUDA_TASK_PRIORITY"] = PRIORITY_ENV.get(record.priority, "1")
    env["HAMI_ALLOCATION_ID"] = record.allocation_id
    env["HAMI_NODE"] = record.node
    if libvgpu is not None:
        preload = base.get("LD_PRELOAD", "")
        env["LD_PRELOAD"] = f"{libvgpu}:{preload}" if preload else str(libvgpu)
    return env
