"""The environment a job runs with: visible devices and the limits the native library enforces.

Names follow HAMi's device plugin so that existing jobs and libraries read them unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from shared.limitenv import limit_environment, limits_file_text
from shared.schemas.placement import AllocationRecord


def limits_path(cache_path: Path) -> Path:
    """Where `hami run` writes the job's limits file: beside its region."""
    return cache_path.with_name(cache_path.name + ".limits")


def write_limits_file(env: Mapping[str, str], cache_path: Path) -> Path:
    """The job's limits, 0444: the library holds every process of the job to them, whatever
    the job does to its environment (a job running as the same user could still rewrite the
    file; in Kubernetes the node agent mounts it read-only)."""
    path = limits_path(cache_path)
    path.unlink(missing_ok=True)
    path.write_text(limits_file_text(dict(env)))
    path.chmod(0o444)
    return path


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
    env["HAMI_LIMITS_FILE"] = str(limits_path(cache_path))
    if libvgpu is not None:
        preload = base.get("LD_PRELOAD", "")
        env["LD_PRELOAD"] = f"{libvgpu}:{preload}" if preload else str(libvgpu)
    return env
