"""What libvgpu.so adds per allocation and per launch, over the test driver (no GPU needed).

Each figure is measured alternately without and with the library preloaded (limits set, a
shared region file), several rounds, and reported as medians side by side; the difference is
the library's bookkeeping. Launches: unthrottled (high priority) and the throttled path at a
99% share with zero-length kernels (`FAKE_KERNEL_US=0`), whose 20 ms burst outlasts the run, so
what is measured is the bookkeeping of a throttled launch (measuring, sampling), not waiting.
Run: `python benchmarks/native_bookkeeping.py` after `make -C native`."""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import tempfile
from pathlib import Path

BUILD = Path(__file__).resolve().parents[1] / "native" / "build"

CASES = {
    "launch, not throttled (priority high)": (
        ["launch-rate", "200000"],
        {"CUDA_TASK_PRIORITY": "0", "CUDA_DEVICE_SM_LIMIT": "50"},
    ),
    "launch, throttled path (limit 99, budget never spent)": (
        ["launch-rate", "200000"],
        {"CUDA_DEVICE_SM_LIMIT": "99"},
    ),
    "cuMemAlloc_v2 + cuMemFree_v2, 4 KiB": (["alloc-rate", "200000"], {}),
    "cuMemAllocAsync + cuMemFreeAsync, 4 KiB": (["pool-rate", "200000"], {}),
}


def once(args: list[str], env: dict[str, str], preload: bool, cache: Path) -> float:
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("CUDA_", "FAKE_"))}
    environment.update(env, LD_LIBRARY_PATH=str(BUILD))
    environment.setdefault("FAKE_KERNEL_US", "0")
    if preload:
        environment.update(
            LD_PRELOAD=str(BUILD / "libvgpu.so"),
            CUDA_DEVICE_MEMORY_LIMIT_0="512m",
            CUDA_DEVICE_MEMORY_SHARED_CACHE=str(cache),
        )
    out = subprocess.run(
        [str(BUILD / "test_native"), *args],
        env=environment,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return float(out.split()[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    rounds = parser.parse_args().rounds
    print(f"{platform.node()}, {os.cpu_count()} CPUs, {rounds} alternating rounds, ns per call")
    print("| figure | without | with libvgpu | added |")
    print("| --- | --- | --- | --- |")
    with tempfile.TemporaryDirectory() as tmp:
        for name, (args, env) in CASES.items():
            plain, hooked = [], []
            for i in range(rounds):
                # A fresh region each run: a region keeps the strictest share it has seen.
                region = Path(tmp) / f"{len(name)}-{i}.cache"
                plain.append(once(args, env, False, region))
                hooked.append(once(args, env, True, region))
            a, b = statistics.median(plain), statistics.median(hooked)
            print(f"| {name} | {a:.0f} | {b:.0f} | {b - a:.0f} |")


if __name__ == "__main__":
    main()
