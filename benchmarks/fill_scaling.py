"""How the allocator core's cost grows with the cluster: N nodes x 8 simulated H200, filled by
N one-candidate decisions (as the extender's bind and NATS requests with candidates decide),
each committed. Linear total time means each decision and commit costs what it touches.

Run: python benchmarks/fill_scaling.py [1000 2000 4000 8000 16000]
"""

from __future__ import annotations

import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.core_scaling import inventory
from services.allocator.core import ledger
from services.allocator.core.placement import FitMemo, Placed, SchedulingSettings, decide
from services.allocator.core.state import ClusterState
from shared.schemas.placement import ContainerRequest, PlaceRequest


def cluster(nodes: int) -> ClusterState:
    state = ClusterState()
    for i in range(nodes):
        state = ledger.observe_inventory(state, inventory(i), 0.0)
    return state


def fill(state: ClusterState, nodes: int) -> tuple[ClusterState, float]:
    memo, settings = FitMemo(), SchedulingSettings()
    started = time.perf_counter()
    for i in range(nodes):
        request = PlaceRequest(
            request_id=f"r{i}",
            containers=(ContainerRequest(memory_percent=20, cores=10),),
            candidate_nodes=(f"n{i}",),
        )
        decision = decide(state, request, settings, 1.0, memo)
        assert isinstance(decision, Placed)
        state, _ = ledger.commit(state, ledger.record_for(request, decision.fit, f"a{i}", 1.0), 1.0)
    return state, time.perf_counter() - started


def main() -> None:
    sizes = [int(a) for a in sys.argv[1:]] or [1000, 2000, 4000, 8000, 16000]
    print(f"{time.strftime('%Y-%m-%d')}, {platform.node()}, Python {platform.python_version()}")
    print("| nodes | fill (N one-candidate decisions + commits) | per decision |")
    print("| --- | --- | --- |")
    for nodes in sizes:
        _, seconds = fill(cluster(nodes), nodes)
        print(f"| {nodes:,} | {seconds:.2f} s | {seconds / nodes * 1e6:.0f} us |")


if __name__ == "__main__":
    main()
