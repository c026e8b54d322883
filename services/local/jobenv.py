"""The environment a job runs with: visible devices and the limits the native library enforces.

Names follow HAMi's device plugin so that existing jobs and libraries read them unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from shared.limitenv import limit_environment
from shared.schemas.placement import AllocationRecord


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
    env.update(limit_environment(grants, priority=record.priority, cache_path=str(cache_path)))
    env["HAMI_ALLOCATION_ID"] = record.allocation_id
    env["HAMI_NODE"] = record.node
    if libvgpu is not None:
        preload = base.get("LD_PRELOAD", "")
        env["LD_PRELOAD"] = f"{libvgpu}:{preload}" if preload else str(libvgpu)
    return env
