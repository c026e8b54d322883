"""Decisions on a mixed cluster beside an NVIDIA-only one, in the same run: do the device kinds
cost the allocator's core anything?

    python benchmarks/kinds_decisions.py [--nodes 1000] [--decisions 400]

Two clusters of N nodes x 8 devices, each filled to about half its memory by one-candidate
decisions (as binds make them), then D bounded decisions (no candidates: the NATS API's
common case), each committed, timed in process with the allocator's fit memo:
- NVIDIA-only: H200s shared by interception; requests for 5-50% of a GPU;
- mixed: a quarter each of NVIDIA H200 nodes (interception), Ascend 910B3 nodes (vNPU
  templates), Cambricon MLU370 nodes (interception, their kind's names and units) and H200
  nodes in MIG mode (the node agent's simulated MIG GPUs: geometry and placements); each
  request asks for one kind, in the same proportions (MIG ones by `device_mode`).
Inventories come from the node agent's own code (simulated readings through `device_info`).
"""

from __future__ import annotations

import argparse
import platform
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from services.allocator.core import ledger
from services.allocator.core.fragmentation import observe_request
from services.allocator.core.placement import FitMemo, Placed, SchedulingSettings, decide
from services.allocator.core.signals import NO_SIGNALS
from services.allocator.core.state import ClusterState
from services.nodeagent.core.inventory import SharingPolicy, device_info
from services.nodeagent.core.simulate import simulated_devices
from services.nodeagent.devices import SimulatedDeviceManager
from shared.schemas.inventory import NodeInventory
from shared.schemas.placement import ContainerRequest, PlaceRequest

SETTINGS = SchedulingSettings(node_ttl_s=1e12)
POLICY = SharingPolicy()
GIB = 1024
SPECS = {
    "nvidia": "8xH200",
    "ascend": "8xAscend910B3",
    "cambricon": "8xMLU370",
    "mig": "8xmig:H200",
}


def inventory(node: str, spec: str) -> NodeInventory:
    readings, mig = simulated_devices(spec, node)
    manager = SimulatedDeviceManager(readings, mig, gpu_mode="mig")
    devices = tuple(device_info(r, POLICY) for r in manager.devices())
    return NodeInventory(node=node, agent_id="bench", devices=devices)


def ask(kind: str, rng: random.Random) -> ContainerRequest:
    if kind == "nvidia":
        share = rng.choice([5, 10, 20, 25, 30, 50])
        return ContainerRequest(memory_percent=share, cores=share, device_mode="hami-core")
    if kind == "ascend":
        return ContainerRequest(kind="ascend910b3", memory_mib=rng.choice([4, 8, 16, 30]) * GIB)
    if kind == "cambricon":
        return ContainerRequest(
            kind="cambricon-mlu", memory_mib=rng.choice([2, 4, 8, 12]) * GIB, cores=20
        )
    return ContainerRequest(memory_mib=rng.choice([10, 20, 30, 60]) * GIB, device_mode="mig")


def cluster(nodes: int, kinds: list[str], rng: random.Random) -> ClusterState:
    state = ClusterState()
    for n in range(nodes):
        kind = kinds[n % len(kinds)]
        state = ledger.observe_inventory(state, inventory(f"node-{n:05d}", SPECS[kind]), 0.0)
    for n in range(nodes):  # about half of each node's memory, with its kind's requests
        kind, name, placed = kinds[n % len(kinds)], f"node-{n:05d}", 0
        for attempt in range(64):
            request = PlaceRequest(
                request_id=f"fill-{n}-{attempt}",
                containers=(ask(kind, rng),),
                lease_ttl_s=None,
                candidate_nodes=(name,),
            )
            decision = decide(state, request, SETTINGS, 0.0)
            if not isinstance(decision, Placed):
                break
            record = ledger.record_for(request, decision.fit, f"f{n}-{attempt}", 0.0)
            state, _ = ledger.commit(state, record, 0.0)
            placed += sum(g.memory_mib for c in record.containers for g in c)
            total = sum(d.memory_mib for d in state.nodes[name].inventory.devices)
            if placed >= total // 2:
                break
    return state


def decisions(state: ClusterState, kinds: list[str], count: int, rng: random.Random) -> list[float]:
    memo, signals, times = FitMemo(), NO_SIGNALS, []
    for i in range(count):
        request = PlaceRequest(
            request_id=f"bench-{i}", containers=(ask(kinds[i % len(kinds)], rng),), lease_ttl_s=None
        )
        start = time.perf_counter()
        signals = observe_request(signals, state, request.containers, 0.0)
        decision = decide(state, request, SETTINGS, 0.0, memo, signals=signals)
        if isinstance(decision, Placed):
            state, _ = ledger.commit(
                state, ledger.record_for(request, decision.fit, f"b{i}", 0.0), 0.0
            )
        times.append(time.perf_counter() - start)
    return times


def summary(times: list[float]) -> str:
    ordered = sorted(times)
    p99 = ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]
    return (
        f"median {statistics.median(times) * 1e3:.3f} ms, p99 {p99 * 1e3:.3f} ms, "
        f"{len(times) / sum(times):.0f}/s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--decisions", type=int, default=400)
    args = parser.parse_args()
    print(f"{platform.node()} python {platform.python_version()} {time.strftime('%Y-%m-%d')}")
    results = {}
    for label, kinds in (
        ("NVIDIA only", ["nvidia"]),
        ("mixed (NVIDIA, Ascend, Cambricon, MIG)", ["nvidia", "ascend", "cambricon", "mig"]),
    ):
        rng = random.Random(11)
        built = time.perf_counter()
        state = cluster(args.nodes, kinds, rng)
        used = len(state.allocations)
        times = decisions(state, kinds, args.decisions, rng)
        results[label] = statistics.median(times)
        print(
            f"{label}: {args.nodes} nodes x 8, {used} allocations "
            f"(built in {time.perf_counter() - built:.1f} s); decisions {summary(times)}",
            flush=True,
        )
    base, mixed = results.values()
    print(f"median cost of the kinds: {mixed / base:.2f}x the NVIDIA-only cluster's")


if __name__ == "__main__":
    main()
