"""A digest of every placement (and every wait/never message) a random workload gets through
the allocator core, per policy and seed: run it under two trees (PYTHONPATH=tree) with a fixed
PYTHONHASHSEED and compare, to show a refactoring changed no decision.

    PYTHONHASHSEED=0 PYTHONPATH=. python benchmarks/placement_digest.py
"""

from __future__ import annotations

import hashlib
import random

from services.allocator.core import ledger
from services.allocator.core.fragmentation import observe_request
from services.allocator.core.placement import FitMemo, Placed, SchedulingSettings, decide
from services.allocator.core.state import ClusterState
from shared.schemas.inventory import DeviceInfo, NodeInventory
from shared.schemas.placement import ContainerRequest, PlaceRequest

MODELS = ("NVIDIA H200", "NVIDIA A100", "Tesla T4")
POLICIES = ("binpack", "spread", "best-fit", "fragmentation")


def cluster(nodes: int, rng: random.Random) -> ClusterState:
    state = ClusterState()
    for i in range(nodes):
        devices = tuple(
            DeviceInfo(
                uuid=f"G-{i}-{d}",
                index=d,
                model=MODELS[i % 3],
                memory_mib=80000,
                physical_memory_mib=80000,
                numa_node=d // 4,
            )
            for d in range(rng.choice([2, 4, 8]))
        )
        inventory = NodeInventory(node=f"n{i:03d}", agent_id="a", devices=devices)
        state = ledger.observe_inventory(state, inventory, 0.0)
    return state


def container(rng: random.Random) -> ContainerRequest:
    count = rng.choice([1, 1, 1, 2, 4])
    cores = rng.choice([0, 10, 30, 100])
    types = rng.choice([(), (), ("H200",), ("T4",)])
    numa = rng.random() < 0.1
    percent = rng.choice([None, 10, 25, 50])
    if percent is None:
        mib = rng.choice([1000, 20000, 60000])
        return ContainerRequest(
            count=count, memory_mib=mib, cores=cores, use_types=types, numa_bind=numa
        )
    return ContainerRequest(
        count=count, memory_percent=percent, cores=cores, use_types=types, numa_bind=numa
    )


def no_signals() -> object | None:
    try:
        from services.allocator.core.signals import NO_SIGNALS
    except ImportError:
        return None
    return NO_SIGNALS


def digest(policy: str, seed: int, nodes: int = 60, requests: int = 700) -> str:
    rng = random.Random(seed)
    state, signals = cluster(nodes, rng), no_signals()
    memo = FitMemo()
    settings = SchedulingSettings(node_policy=policy, node_ttl_s=1e12)
    live: list[str] = []
    out: list[object] = []
    for i in range(requests):
        now = 1.0 + i
        if live and rng.random() < 0.3:
            state, _ = ledger.release(state, live.pop(rng.randrange(len(live))), now)
            continue
        names = tuple(f"n{rng.randrange(nodes):03d}" for _ in range(5))
        candidates = names if rng.random() < 0.3 else None
        request = PlaceRequest(
            request_id=f"r{i}", containers=(container(rng),), candidate_nodes=candidates
        )
        if signals is None:  # a tree from before the signals left the ledger
            state = observe_request(state, request.containers, now)  # type: ignore[call-arg,arg-type]
            decision = decide(state, request, settings, now, memo)
        else:
            signals = observe_request(signals, state, request.containers, now)
            decision = decide(state, request, settings, now, memo, signals=signals)
        if isinstance(decision, Placed):
            record = ledger.record_for(request, decision.fit, f"a{i}", now)
            state, _ = ledger.commit(state, record, now)
            live.append(record.allocation_id)
            grants = tuple(g.uuid for gs in decision.fit.containers for g in gs)
            out.append((decision.fit.node, grants))
        else:
            out.append((type(decision).__name__, decision.reason))
    return hashlib.sha256(repr(out).encode()).hexdigest()[:16]


if __name__ == "__main__":
    for policy in POLICIES:
        print(policy, " ".join(digest(policy, seed) for seed in range(1, 6)))
