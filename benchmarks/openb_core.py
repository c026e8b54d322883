"""The allocator core itself on the openb trace cluster: the cost of each online
fragmentation decision (1,213 nodes), and what it allocates, beside the replay's vectorised
copy of the same policy (benchmarks/openb_replay.py, `hami-fgd-online`) on the same arrivals.

    python benchmarks/openb_core.py NODES.csv PODS.csv [--seeds 42 43] [--policy fragmentation]

The cluster: each trace node is an inventory whose devices are its GPUs (memory 1000 "MiB",
so a share s of the trace is s MiB and s/10 % of the cores; whole GPUs ask for all of one),
with the node's CPU and memory as its allocatable host figures. Each GPU task of the list, in
the replay's order for the seed, is one PlaceRequest (its CPU and memory beside it, its GPU
models as use-gputype) decided by the core (`world.asked`: the mix observed, then `decide`)
and committed to the ledger when placed; nothing departs. The request names as candidates the
nodes with the CPU and memory it asks for (kube-scheduler's filter, before the extender).
CPU-only tasks are left out of the list for both (the allocator never sees them, and who
places them is kube-scheduler's business), so the two runs see the same arrivals. Prints the
decision's median and p99 and the unallocated GPUs at 100% and 130% arrival for the core and
for the replay.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import openb_replay as replay

from services.allocator.core import ledger, world
from services.allocator.core.placement import FitMemo, Placed, SchedulingSettings
from shared.schemas.inventory import DeviceInfo, NodeInventory
from shared.schemas.placement import ContainerRequest, PlaceRequest


def inventories(nodes: replay.Nodes) -> list[NodeInventory]:
    out = []
    for i in range(len(nodes.cpu)):
        devices = tuple(
            DeviceInfo(
                uuid=f"GPU-{i}-{d}",
                index=d,
                model=nodes.models[i],
                memory_mib=replay.MILLI,
                physical_memory_mib=replay.MILLI,
                split_count=64,
            )
            for d in range(int(nodes.gpus[i]))
        )
        out.append(
            NodeInventory(
                node=nodes.names[i],
                agent_id="a",
                devices=devices,
                cpu_milli=int(nodes.cpu[i]),
                memory_mib=int(nodes.mem[i]),
            )
        )
    return out


def request_of(
    pod: replay.Pod, i: int, policy: str, candidates: tuple[str, ...] | None
) -> PlaceRequest:
    if pod.gpus == 1 and pod.milli < replay.MILLI:
        container = ContainerRequest(
            count=1, memory_mib=pod.milli, cores=pod.milli // 10, use_types=pod.spec
        )
    else:
        container = ContainerRequest(count=pod.gpus, cores=100, use_types=pod.spec)
    return PlaceRequest(
        request_id=f"r{i}",
        containers=(container,),
        lease_ttl_s=None,
        candidate_nodes=candidates,
        node_policy=policy,
        cpu_milli=pod.cpu,
        memory_mib=pod.mem,
    )


MEMO_SHAPES = 64
"""As the allocator service keeps its FitMemo."""


def run_core(
    nodes: replay.Nodes, pods: list[replay.Pod], seed: int, policy: str, filtered: bool = True
) -> tuple[float, float, list[float]]:
    state = world.World()
    for inventory in inventories(nodes):
        state = world.node_seen(state, inventory, 0.0)
    settings, memo = SchedulingSettings(node_ttl_s=1e12), FitMemo(MEMO_SHAPES)
    capacity = nodes.capacity
    arrived = allocated = 0.0
    marks: dict[float, float] = {}
    costs = []
    names = nodes.names
    index = {name: i for i, name in enumerate(names)}
    cpu, mem = nodes.cpu.copy(), nodes.mem.copy()
    for i, pod in enumerate(replay.workload(pods, capacity, seed)):
        # kube-scheduler's filter: the nodes with the CPU and memory the pod asks for.
        room = np.flatnonzero((cpu >= pod.cpu) & (mem >= pod.mem))
        request = request_of(pod, i, policy, tuple(names[j] for j in room) if filtered else None)
        started = time.perf_counter()
        state, decision = world.asked(state, request, settings, 0.0, memo)
        costs.append(time.perf_counter() - started)
        arrived += pod.gpu_request
        if isinstance(decision, Placed):
            record = ledger.record_for(request, decision.fit, f"a{i}", 0.0)
            placed, _ = ledger.commit(state.ledger, record, 0.0)
            state = world.World(placed, state.signals, state.waiting)
            allocated += pod.gpu_request
            j = index[decision.fit.node]
            cpu[j] -= pod.cpu
            mem[j] -= pod.mem
        for mark in (1.0, 1.3):
            if mark not in marks and arrived >= mark * capacity - 1e-9:
                marks[mark] = capacity - allocated
    return marks.get(1.0, capacity - allocated), marks.get(1.3, capacity - allocated), costs


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("nodes", type=Path)
    parser.add_argument("pods", type=Path)
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 43])
    parser.add_argument("--policy", default="fragmentation")
    parser.add_argument(
        "--no-filter",
        action="store_true",
        help="no candidate list (the NATS API's common case): the core alone, which does not"
        " filter on host CPU and memory, so its placements are not the replay's",
    )
    args = parser.parse_args()
    nodes = replay.read_nodes(args.nodes)
    pods = [p for p in replay.read_pods(args.pods) if p.gpus]
    print(
        f"{args.pods.name}: {len(pods)} GPU tasks, {len(nodes.cpu)} nodes, core policy "
        f"{args.policy}"
    )
    print(
        "| seed | core unallocated 100% / 130% | replay hami-fgd-online | decisions | "
        "decision median | p99 |"
    )
    print("| --- | --- | --- | --- | --- | --- |")
    for seed in args.seeds:
        at100, at130, costs = run_core(nodes, pods, seed, args.policy, not args.no_filter)
        theirs = replay.run(nodes, pods, "hami-fgd-online", seed)
        costs.sort()
        print(
            f"| {seed} | {at100:.0f} / {at130:.0f} | {theirs[0]:.0f} / {theirs[1]:.0f} | "
            f"{len(costs)} | {1000 * statistics.median(costs):.2f} ms | "
            f"{1000 * costs[int(0.99 * len(costs))]:.2f} ms |",
            flush=True,
        )


if __name__ == "__main__":
    main()
