"""How the allocator core scales past one rack: N nodes x 8 simulated H200 (1,000 / 10,000 /
50,000), with the cost of each stage measured on its own, in process:

- build: every node's inventory observed (as the node agents' heartbeats arrive), then a 50%
  fill: four one-GPU allocations per node, each decided among one candidate and committed;
- decide: bounded decisions (binpack and spread, no candidates: the NATS API's common case)
  on the filled cluster, median and p99;
- restore: the allocations read back as the bucket holds them (encoded records decoded, then
  restored into a fresh ledger with the inventories), as a new leader does;
- memory: the process's peak resident set after all of it.

The garbage collector is tuned as the allocator service tunes it (services/allocator/heap.py).

Build and restore growing linearly, and decisions flat, mean each operation costs what it
touches. Run: python benchmarks/core_scaling.py [1000 10000 50000]
"""

from __future__ import annotations

import platform
import resource
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from services.allocator import heap
from services.allocator.core import ledger, world
from services.allocator.core.placement import FitMemo, Placed, SchedulingSettings, decide
from services.allocator.core.state import ClusterState
from shared.schemas.inventory import DeviceInfo, NodeInventory
from shared.schemas.placement import ContainerRequest, PlaceRequest, allocation_codec

GPUS = 8


def inventory(i: int) -> NodeInventory:
    devices = tuple(
        DeviceInfo(
            uuid=f"GPU-{i}-{d}",
            index=d,
            model="NVIDIA H200",
            memory_mib=143771,
            physical_memory_mib=143771,
        )
        for d in range(GPUS)
    )
    return NodeInventory(node=f"n{i}", agent_id="a", devices=devices)


def build(nodes: int) -> tuple[ClusterState, list[bytes], float, float]:
    """The filled ledger, its records as the bucket holds them, and the two stages' seconds."""
    started = time.perf_counter()
    state = ClusterState()
    for i in range(nodes):
        state = ledger.observe_inventory(state, inventory(i), 0.0)
    observed = time.perf_counter() - started
    memo, settings = FitMemo(), SchedulingSettings(node_ttl_s=1e12)
    whole = (ContainerRequest(count=1, cores=100),)
    records = []
    started = time.perf_counter()
    for i in range(nodes):
        for k in range(GPUS // 2):
            request = PlaceRequest(
                request_id=f"r{i}-{k}", containers=whole, candidate_nodes=(f"n{i}",)
            )
            decision = decide(state, request, settings, 1.0, memo)
            assert isinstance(decision, Placed)
            record = ledger.record_for(request, decision.fit, f"a{i}-{k}", 1.0)
            state, _ = ledger.commit(state, record, 1.0)
            records.append(allocation_codec.encode(record))
    return state, records, observed, time.perf_counter() - started


def decisions(state: ClusterState, policy: str, count: int = 200) -> list[float]:
    memo, settings = FitMemo(), SchedulingSettings(node_policy=policy, node_ttl_s=1e12)
    share = (ContainerRequest(count=1, memory_percent=10, cores=10),)
    times = []
    for i in range(count):
        request = PlaceRequest(request_id=f"d{i}", containers=share)
        start = time.perf_counter()
        decision = decide(state, request, settings, 2.0, memo)
        if isinstance(decision, Placed):  # committed, as the allocator does: state moves on
            record = ledger.record_for(request, decision.fit, f"d{i}", 2.0)
            state, _ = ledger.commit(state, record, 2.0)
        times.append(time.perf_counter() - start)
    return times


def restore(nodes: int, records: list[bytes]) -> float:
    started = time.perf_counter()
    restored = world.World()
    for i in range(nodes):
        restored = world.node_seen(restored, inventory(i), 3.0)
    for data in records:
        restored = world.restored(restored, allocation_codec.decode(data), 3.0)
    assert len(restored.ledger.allocations) == len(records)
    return time.perf_counter() - started


def main() -> None:
    sizes = [int(a) for a in sys.argv[1:]] or [1000, 10000, 50000]
    heap.tune_for_a_large_heap()  # as the allocator service runs (services/allocator/heap.py)
    print(f"{time.strftime('%Y-%m-%d')}, {platform.node()}, Python {platform.python_version()}")
    print(
        "| nodes | observe inventories | 50% fill | decide binpack (median / p99) "
        "| decide spread | restore | peak RSS |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for nodes in sizes:
        state, records, observed, filled = build(nodes)
        binpack = decisions(state, "binpack")
        spread = decisions(state, "spread")
        restored = restore(nodes, records)
        peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        median = statistics.median
        p99 = lambda t: sorted(t)[int(len(t) * 0.99) - 1]  # noqa: E731
        print(
            f"| {nodes:,} | {observed:.1f} s | {filled:.1f} s "
            f"| {median(binpack) * 1e3:.2f} / {p99(binpack) * 1e3:.2f} ms "
            f"| {median(spread) * 1e3:.2f} / {p99(spread) * 1e3:.2f} ms "
            f"| {restored:.1f} s | {peak_mib:,.0f} MiB |",
            flush=True,
        )


if __name__ == "__main__":
    main()
