"""Replay a GPU-sharing trace (Alibaba openb format) the way the FGD paper's simulator did, and
report unallocated GPUs when arrived GPU requests reach 100% and 130% of capacity.

    python benchmarks/openb_replay.py NODES.csv PODS.csv [--policies binpack spread best-fit fgd]
                                      [--seeds 42..51]

Cluster = the node list (CPU, memory and GPU model are filters). Pods are sorted by name, then
shuffled per seed; random copies drawn with replacement are appended until GPU requests reach
130% of capacity; each pod goes through the scheduler once, in order; nothing departs; a pod
that fits nowhere is skipped. A share s of one GPU (gpu_milli) maps to s/1000 of its memory and
s/10 % of its cores in HAMi's terms; here, as in the paper, one number per GPU is tracked.
"""

from __future__ import annotations

import argparse
import csv
import random
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

G = 8  # GPUs per node, at most, in the trace


@dataclass(frozen=True)
class Pod:
    name: str
    cpu: int
    mem: int
    gpus: int
    milli: int
    spec: tuple[str, ...]

    @property
    def gpu_request(self) -> float:
        return self.gpus * self.milli / 1000 if self.gpus else 0.0


def read_nodes(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    rows = list(csv.DictReader(path.open()))
    cpu = np.array([int(r["cpu_milli"]) for r in rows], dtype=np.int64)
    mem = np.array([int(r["memory_mib"]) for r in rows], dtype=np.int64)
    gpus = np.array([int(r["gpu"]) for r in rows], dtype=np.int64)
    return cpu, mem, gpus, [r["model"] for r in rows]


def read_pods(path: Path) -> list[Pod]:
    pods = []
    for r in csv.DictReader(path.open()):
        spec = tuple(s for s in (r.get("gpu_spec") or "").split("|") if s)
        pods.append(
            Pod(
                r["name"],
                int(r["cpu_milli"]),
                int(r["memory_mib"]),
                int(r["num_gpu"]),
                int(r["gpu_milli"]),
                spec,
            )
        )
    return sorted(pods, key=lambda p: p.name)


class Cluster:
    def __init__(
        self,
        nodes: tuple[np.ndarray, np.ndarray, np.ndarray, list[str]],
        types: list[Pod],
        weights: np.ndarray,
    ) -> None:
        cpu, mem, gpus, models = nodes
        self.cpu_cap, self.mem_cap, self.gpus = cpu, mem, gpus
        self.models = models
        self.n = len(cpu)
        self.cpu = cpu.copy()
        self.mem = mem.copy()
        self.exists = np.arange(G)[None, :] < gpus[:, None]
        self.free = np.where(self.exists, 1000, 0).astype(np.int64)  # milli free per GPU
        self.capacity = int(gpus.sum())
        model_names = sorted(set(models))
        self.model_id = np.array([model_names.index(m) for m in models])
        # Target workload for the fragmentation measure: task types and their popularity.
        self.t_cpu = np.array([t.cpu for t in types])
        self.t_mem = np.array([t.mem for t in types])
        self.t_k = np.array([t.gpus if t.milli == 1000 else 0 for t in types])
        # GPU share a type needs from one GPU: a GPU with less free is a fragment for it.
        self.t_d = np.array([0 if t.gpus == 0 else min(t.milli, 1000) for t in types])
        self.t_p = weights / weights.sum()
        self.t_model_ok = np.array(
            [[not t.spec or m in t.spec for m in model_names] for t in types]
        )

    def model_ok(self, pod: Pod) -> np.ndarray:
        if not pod.spec or pod.gpus == 0:
            return np.ones(self.n, dtype=bool)
        return np.array([m in pod.spec for m in self.models])

    def frag(
        self, cpu: np.ndarray, mem: np.ndarray, free: np.ndarray, models: np.ndarray
    ) -> np.ndarray:
        """FGD's expected fragmentation of each row (node), against the task-type mix."""
        feasible = (
            (cpu[:, None] >= self.t_cpu[None, :])
            & (mem[:, None] >= self.t_mem[None, :])
            & self.t_model_ok[:, models].T
        )
        full = (free == 1000).sum(axis=1)
        feasible &= (self.t_k[None, :] == 0) | (full[:, None] >= self.t_k[None, :])
        # For each type: GPUs whose free share is below what the type needs are fragments.
        below = free[:, :, None] < self.t_d[None, None, :]
        per_type = (free[:, :, None] * below).sum(axis=1)
        total = free.sum(axis=1)[:, None]
        f = np.where(feasible, per_type, total)
        return f @ self.t_p

    def place(self, pod: Pod, policy: str) -> bool:
        ok = (self.cpu >= pod.cpu) & (self.mem >= pod.mem) & self.model_ok(pod)
        if pod.gpus == 0:
            cand = np.flatnonzero(ok)
            if cand.size == 0:
                return False
            node = int(self._choose_node(cand, pod, policy))
            self.cpu[node] -= pod.cpu
            self.mem[node] -= pod.mem
            return True
        if pod.milli < 1000:  # one GPU, a share of it
            gpu_ok = self.exists & (self.free >= pod.milli) & ok[:, None]
            nodes, gpus = np.nonzero(gpu_ok)
            if nodes.size == 0:
                return False
            node, gpu = self._choose_gpu(nodes, gpus, pod, policy)
            self.free[node, gpu] -= pod.milli
        else:
            full = (self.free == 1000).sum(axis=1)
            cand = np.flatnonzero(ok & (full >= pod.gpus))
            if cand.size == 0:
                return False
            node = int(self._choose_node(cand, pod, policy))
            whole = np.flatnonzero(self.free[node] == 1000)[: pod.gpus]
            self.free[node, whole] = 0
        self.cpu[node] -= pod.cpu
        self.mem[node] -= pod.mem
        return True

    def _after(
        self, nodes: np.ndarray, gpus: np.ndarray | None, pod: Pod
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        cpu = self.cpu[nodes] - pod.cpu
        mem = self.mem[nodes] - pod.mem
        free = self.free[nodes].copy()
        if gpus is not None:
            free[np.arange(len(nodes)), gpus] -= pod.milli
        elif pod.gpus:
            for row in range(len(nodes)):  # take whole GPUs: which ones does not matter
                whole = np.flatnonzero(free[row] == 1000)[: pod.gpus]
                free[row, whole] = 0
        return cpu, mem, free

    def _score(
        self, nodes: np.ndarray, gpus: np.ndarray | None, pod: Pod, policy: str
    ) -> np.ndarray:
        """Lower is better."""
        cpu, mem, free = self._after(nodes, gpus, pod)
        gpu_cap = np.maximum(self.gpus[nodes], 1) * 1000
        if policy == "fgd":
            models = self.model_id[nodes]
            before = self.frag(self.cpu[nodes], self.mem[nodes], self.free[nodes], models)
            return self.frag(cpu, mem, free, models) - before
        if policy == "best-fit":  # least left over after placement, resources normalised
            return (
                cpu / self.cpu_cap[nodes] + mem / self.mem_cap[nodes] + free.sum(axis=1) / gpu_cap
            )
        used = 1 - free.sum(axis=1) / gpu_cap  # GPU share in use after placement
        if policy == "binpack":
            tie = 0 if gpus is None else free[np.arange(len(nodes)), gpus] / 1000
            return -used + 1e-3 * tie  # fullest node, then the fullest GPU on it
        if policy == "spread":
            tie = 0 if gpus is None else -free[np.arange(len(nodes)), gpus] / 1000
            return used + 1e-3 * tie
        raise ValueError(f"unknown policy {policy!r}")

    def _choose_node(self, cand: np.ndarray, pod: Pod, policy: str) -> int:
        return int(cand[int(np.argmin(self._score(cand, None, pod, policy)))])

    def _choose_gpu(
        self, nodes: np.ndarray, gpus: np.ndarray, pod: Pod, policy: str
    ) -> tuple[int, int]:
        i = int(np.argmin(self._score(nodes, gpus, pod, policy)))
        return int(nodes[i]), int(gpus[i])


def workload(pods: list[Pod], capacity: int, seed: int) -> list[Pod]:
    rng = random.Random(seed)
    order = list(pods)
    rng.shuffle(order)
    total = sum(p.gpu_request for p in order)
    while total < 1.3 * capacity:
        extra = rng.choice(pods)
        order.append(extra)
        total += extra.gpu_request
    return order


def run(nodes, pods: list[Pod], policy: str, seed: int) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    counts: dict[tuple, int] = {}
    for p in pods:
        key = (p.cpu, p.mem, p.gpus, p.milli, p.spec)
        counts[key] = counts.get(key, 0) + 1
    types = [Pod("", *key) for key in counts]
    cluster = Cluster(nodes, types, np.array(list(counts.values()), dtype=float))
    arrived = allocated = 0.0
    marks: dict[float, float] = {}
    for pod in workload(pods, cluster.capacity, seed):
        arrived += pod.gpu_request
        if cluster.place(pod, policy):
            allocated += pod.gpu_request
        for mark in (1.0, 1.3):
            if mark not in marks and arrived >= mark * cluster.capacity:
                marks[mark] = cluster.capacity - allocated
    return marks[1.0], marks.get(1.3, cluster.capacity - allocated)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("nodes", type=Path)
    parser.add_argument("pods", type=Path)
    parser.add_argument("--policies", nargs="+", default=["binpack", "spread", "best-fit", "fgd"])
    parser.add_argument("--seeds", type=int, nargs="+", default=list(range(42, 52)))
    args = parser.parse_args()
    nodes = read_nodes(args.nodes)
    pods = read_pods(args.pods)
    print(
        f"{args.pods.name}: {len(pods)} pods, {int(nodes[2].sum())} GPUs on {len(nodes[0])} nodes"
    )
    print("| policy | unallocated GPUs at 100% | at 130% | seconds per run |")
    print("| --- | --- | --- | --- |")
    for policy in args.policies:
        results, started = [], time.perf_counter()
        for seed in args.seeds:
            results.append(run(nodes, pods, policy, seed))
        per_run = (time.perf_counter() - started) / len(args.seeds)
        at100 = statistics.mean(r[0] for r in results)
        at130 = statistics.mean(r[1] for r in results)
        print(f"| {policy} | {at100:.0f} | {at130:.0f} | {per_run:.1f} |", flush=True)


if __name__ == "__main__":
    sys.exit(main())
