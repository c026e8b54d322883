"""GPU checks for libvgpu.so on a real NVIDIA GPU, one subcommand per check; each prints one
JSON line. Run through tests/gpu/run.sh, which sets LD_PRELOAD and the limits."""

from __future__ import annotations

import json
import os
import sys
import time


def torch_oom() -> None:
    import torch

    limit = int(os.environ["HAMI_CHECK_LIMIT_BYTES"])
    free, total = torch.cuda.mem_get_info()
    held = torch.empty(int(limit * 0.6), dtype=torch.uint8, device="cuda")
    try:
        torch.empty(int(limit * 0.6), dtype=torch.uint8, device="cuda")
        refused = False
    except torch.OutOfMemoryError:
        refused = True
    print(
        json.dumps(
            {
                "check": "torch_oom",
                "alloc_conf": os.environ.get("PYTORCH_CUDA_ALLOC_CONF", ""),
                "mem_get_info_total": total,
                "limit": limit,
                "total_is_limit": total == limit,
                "free_le_limit": free <= limit,
                "refused_past_limit": refused,
            }
        )
    )
    del held


def cupy_oom() -> None:
    import cupy

    limit = int(os.environ["HAMI_CHECK_LIMIT_BYTES"])
    held = cupy.empty(int(limit * 0.6), dtype=cupy.uint8)
    try:
        cupy.empty(int(limit * 0.6), dtype=cupy.uint8)
        refused = False
    except cupy.cuda.memory.OutOfMemoryError:
        refused = True
    print(json.dumps({"check": "cupy_oom", "refused_past_limit": refused}))
    del held


def torch_hold(fraction: float, seconds: float) -> None:
    import torch

    limit = int(os.environ["HAMI_CHECK_LIMIT_BYTES"])
    try:
        held = torch.empty(int(limit * fraction), dtype=torch.uint8, device="cuda")
        ok = True
    except torch.OutOfMemoryError:
        held, ok = None, False
    print(json.dumps({"check": "torch_hold", "fraction": fraction, "allocated": ok}), flush=True)
    time.sleep(seconds)
    del held


def matmul_rate(seconds: float) -> None:
    import torch

    a = torch.randn(4096, 4096, device="cuda")
    b = torch.randn(4096, 4096, device="cuda")
    for _ in range(5):
        a @ b
    torch.cuda.synchronize()
    start, n = time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        for _ in range(10):
            a @ b
        n += 10
        torch.cuda.synchronize()
    rate = n / (time.perf_counter() - start)
    print(
        json.dumps(
            {
                "check": "matmul_rate",
                "sm_limit": os.environ.get("CUDA_DEVICE_SM_LIMIT", ""),
                "matmuls_per_s": rate,
            }
        )
    )


if __name__ == "__main__":
    name, *args = sys.argv[1:]
    {
        "torch_oom": torch_oom,
        "cupy_oom": cupy_oom,
        "torch_hold": lambda: torch_hold(float(args[0]), float(args[1])),
        "matmul_rate": lambda: matmul_rate(float(args[0])),
    }[name]()
