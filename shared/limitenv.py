"""The limits a job's processes get, in the environment names of HAMi's device plugin, which the
native library (native/, docs/native.md) reads. One home for `hami run` and the kubelet device
plugin, so a job sees the same variables in local mode and in a pod."""

from __future__ import annotations

from collections.abc import Sequence

from shared.schemas.placement import DeviceGrant

CORE_POLICIES = ("default", "force", "disable")


def limit_environment(
    grants: Sequence[DeviceGrant],
    *,
    priority: int,
    cache_path: str,
    oversubscribe: bool = False,
    core_policy: str | None = None,
) -> dict[str, str]:
    """``grants`` in the order the job sees its devices (visible device i is grants[i])."""
    env = {f"CUDA_DEVICE_MEMORY_LIMIT_{i}": f"{g.memory_mib}m" for i, g in enumerate(grants)}
    # One job gets one compute share; with several devices they all carry the same percent.
    env["CUDA_DEVICE_SM_LIMIT"] = str(max((g.cores for g in grants), default=0))
    env["CUDA_DEVICE_MEMORY_SHARED_CACHE"] = cache_path
    env["CUDA_TASK_PRIORITY"] = "0" if priority == 0 else "1"
    if oversubscribe:
        env["CUDA_OVERSUBSCRIBE"] = "true"
    if core_policy is not None:
        if core_policy not in CORE_POLICIES:
            raise ValueError(f"core policy {core_policy!r}: expected one of {CORE_POLICIES}")
        env["GPU_CORE_UTILIZATION_POLICY"] = core_policy
    return env


LIMITS_FILE_NAMES = (
    "CUDA_DEVICE_MEMORY_LIMIT",
    "CUDA_DEVICE_SM_LIMIT",
    "CUDA_DEVICE_MEMORY_SHARED_CACHE",
    "CUDA_TASK_PRIORITY",
    "CUDA_OVERSUBSCRIBE",
    "GPU_CORE_UTILIZATION_POLICY",
)
"""What the native library reads from a limits file (docs/native.md): the same names."""


def limits_file_text(env: dict[str, str]) -> str:
    """The limits file for a job whose environment is ``env``: the placement's word, which the
    library holds the job to (the stricter of it and the job's own environment) and which the
    job cannot write."""
    lines = ["# HAMi limits for this job; the isolation library reads it, the job cannot change it"]
    lines += [f"{k}={v}" for k, v in sorted(env.items()) if k.startswith(LIMITS_FILE_NAMES)]
    return "\n".join(lines) + "\n"
