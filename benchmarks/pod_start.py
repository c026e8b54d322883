"""Pod start latency through the whole path on a real kubelet: create (webhook) -> kube-scheduler
+ our extender (filter, prioritize, bind) -> kubelet admission -> the device plugin's Allocate
-> containerd/runc -> Running, on one simulated H200 split 10 ways (tests/e2e/kubelet/stack.py).

Two rounds: one pod at a time (create, wait until Running, delete), and bursts of pods created
together. Latency is from the create request to the first poll (every 20 ms) that sees Running;
Allocate's share is the node agent's own time for that container (its `allocate_ms` log field).
Needs root and the binaries tests/e2e/controlplane/build.sh builds.
Run: python benchmarks/pod_start.py [--pods 20 --burst 10]
"""

from __future__ import annotations

import argparse
import platform
import re
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.e2e.kubelet.stack import RESOURCE, Hami, hami_on_a_node

LIMITS = {RESOURCE: "1", "nvidia.com/gpumem": "3000", "nvidia.com/gpucores": "10"}
ALLOCATE = re.compile(r"container allocated pod=default/(\S+) .*allocate_ms=([0-9.]+)")


def wait_running(hami: Hami, names: list[str], started: float) -> dict[str, float]:
    latency: dict[str, float] = {}
    while len(latency) < len(names):
        for pod in hami.plane.request("GET", "/api/v1/namespaces/default/pods")["items"]:
            name = pod["metadata"]["name"]
            if name in names and name not in latency and pod["status"].get("phase") == "Running":
                latency[name] = time.monotonic() - started
        if time.monotonic() - started > 120:
            raise RuntimeError(f"pods not running after 120 s: {set(names) - set(latency)}")
        time.sleep(0.02)
    return latency


def one_at_a_time(hami: Hami, count: int) -> dict[str, float]:
    out: dict[str, float] = {}
    for _ in range(count):
        name = f"start-{uuid.uuid4().hex[:6]}"
        started = time.monotonic()
        hami.create_pod(name, LIMITS, "sleep 600")
        out.update(wait_running(hami, [name], started))
        hami.delete_pod(name)
    return out


def bursts(hami: Hami, count: int, burst: int) -> dict[str, float]:
    out: dict[str, float] = {}
    for _ in range(0, count, burst):
        names = [f"burst-{uuid.uuid4().hex[:6]}" for _ in range(burst)]
        started = time.monotonic()
        for name in names:
            hami.create_pod(name, LIMITS, "sleep 600")
        out.update(wait_running(hami, names, started))
        for name in names:
            hami.delete_pod(name)
        hami.node.delete_pods()
    return out


def report(label: str, latency: dict[str, float], allocate_ms: dict[str, float]) -> None:
    values = sorted(latency.values())
    p99 = values[min(len(values) - 1, round(0.99 * (len(values) - 1)))]
    shares = [allocate_ms[n] / 1000 / latency[n] for n in latency if n in allocate_ms]
    print(
        f"| {label} | {len(values)} | {statistics.median(values) * 1000:.0f} ms | "
        f"{p99 * 1000:.0f} ms | {statistics.median(allocate_ms[n] for n in latency):.1f} ms | "
        f"{statistics.median(shares) * 100:.1f}% |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pods", type=int, default=20)
    parser.add_argument("--burst", type=int, default=10, help="pods per burst (split count 10)")
    args = parser.parse_args()
    with (
        tempfile.TemporaryDirectory(prefix="hami-podstart-") as tmp,
        hami_on_a_node(Path(tmp)) as hami,
    ):
        sequential = one_at_a_time(hami, args.pods)
        burst = bursts(hami, args.pods, args.burst)
        allocate_ms = {m[1]: float(m[2]) for m in ALLOCATE.finditer(hami.log("nodeagent"))}
        print(
            f"\n{time.strftime('%Y-%m-%d')}, {platform.node()}, Python {platform.python_version()}"
        )
        print("| round | pods | median create->Running | p99 | median Allocate | Allocate share |")
        print("| --- | --- | --- | --- | --- | --- |")
        report("one at a time", sequential, allocate_ms)
        report(f"bursts of {args.burst}", burst, allocate_ms)


if __name__ == "__main__":
    main()
