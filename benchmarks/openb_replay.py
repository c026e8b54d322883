"""Replay a GPU-sharing trace (Alibaba openb format) the way the FGD paper's simulator did, and
report unallocated GPUs when arrived GPU requests reach 100% and 130% of capacity.

    python benchmarks/openb_replay.py NODES.csv PODS.csv [--policies binpack spread best-fit fgd]
                                      [--seeds 42 43 ...] [--jobs N]

Cluster = the node list (CPU, memory and GPU model are filters). Pods are sorted by name, then
shuffled per seed; random copies drawn with replacement are appended until GPU requests reach
130% of capacity; each pod goes through the scheduler once, in order; nothing departs; a pod
that fits nowhere is skipped. A share s of one GPU (gpu_milli) maps to s/1000 of its memory and
s/10 % of its cores in HAMi's terms; here, as in the paper, one number per GPU is tracked.

Policies (lower score wins, ties to the lowest node index, except the sim- and hami- ones):
  binpack   fullest node after placement, then the fullest GPU on it
  spread    emptiest node, then the emptiest GPU
  best-fit  least CPU + memory + GPU left over on the node, each normalised
  sim-best-fit  the FGD simulator's BestFit (pkg/simulator/plugin/best_fit_score.go):
            int((1 - sum(0.5 * (free - request) / maxSpec)) * 100) over (CPU, GPU) with
            maxSpec 128 CPUs and 8 GPUs, higher wins; ties to a node order shuffled per seed
            (as kube-scheduler picks among equal scores); a share goes to the GPU with the
            least left that holds it
  sim-gpu-packing  the simulator's GpuPacking (gpu_packing_score.go): shared GPUs first
            (100 - free share of the GPUs used / 10, at least 50), then free GPUs of a used
            node (50 - GPUs it breaks, at least 33), then an idle node (33 - its GPUs); ties
            and the GPU as for sim-best-fit
  fgd-sim   fgd as the authors' simulator scores it (fgd_score.go): int64(sigmoid(-increase
            / 1000) * 100), the first GPU of the best score for a share, node ties to the
            per-seed order, and every free GPU stranded for a CPU-only task
  fgd       the paper's Fragmentation Gradient Descent: the smallest increase of expected
            fragmentation against the trace's task mix (FGD's measure: CPU, GPU count, share
            and model; its 95% most popular task shapes)
  hami-fgd  ours, as services/allocator/core/fragmentation.py decides, with the whole list's
            mix (offline) within the allocator's bounds: the same gradient over the 32 most
            common shapes of GPU tasks, each weighing its share of them, plus a price on the
            GPU models that model-pinned tasks need (paid by unpinned tasks: the model's
            pinned share of what is asked over its share of what is free, renewed every 64
            GPU requests, in 25% steps, rounded apart from the gradient), increases
            within 0.04 GPU tied, the tightest GPU on the node; ties of a GPU task go to the
            first node in the order of a CRC-32 of its name (sn), those of a CPU-only task
            (which the allocator never sees; placed here by the same measure) to the node left
            fullest; host memory joins CPU in the feasibility test
  hami-fgd~X[,Y]  ours without X (ablation): tie (the exact gradient, ties to the first node
            index), names (a GPU task's ties to the node left fullest, not the name order),
            memory (CPU only in the test), scarcity; hami-fgd-online~X: tie or names
  hami-fgd-online  the same policy with the mix as the allocator learns it: from the arrivals so
            far, in order (each request counts before it is placed), refreshed every 64 requests
            into its 32 weightiest shapes, kept while within 5% (services/allocator/core/mix.py;
            the replay has no clock, so nothing decays); pinned shares from the arrivals too.
            hami-fgd, with the whole list's mix, is the offline variant of it.
  bound     not a policy: the fewest GPUs any policy, online or offline, could leave
            unallocated at each point (benchmarks/openb_bound.py: a linear relaxation of the
            offline packing of the tasks arrived by then, with scipy)
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import random
import statistics
import sys
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from services.allocator.core.fragmentation import PRICE_STEP  # the product's price steps
from services.allocator.core.policies import name_rank  # the product's own order

G = 8  # GPUs per node, at most, in the trace
MILLI = 1000


@dataclass(frozen=True)
class Pod:
    name: str
    cpu: int
    mem: int
    gpus: int
    milli: int  # per GPU: < 1000 only with gpus == 1
    spec: tuple[str, ...]

    @property
    def gpu_request(self) -> float:
        return self.gpus * self.milli / MILLI if self.gpus else 0.0

    @property
    def shape(self) -> tuple[int, int, int, int, tuple[str, ...]]:
        return (self.cpu, self.mem, self.gpus, self.milli, self.spec)


@dataclass(frozen=True)
class Nodes:
    cpu: np.ndarray
    mem: np.ndarray
    gpus: np.ndarray
    models: list[str]
    names: list[str]

    @property
    def capacity(self) -> int:
        return int(self.gpus.sum())


def _int(row: dict[str, str], column: str, path: Path) -> int:
    try:
        value = int(row[column])
    except (KeyError, ValueError):
        raise SystemExit(
            f"{path}: row {row.get('name') or row.get('sn')!r}: bad {column}"
        ) from None
    if value < 0:
        raise SystemExit(f"{path}: row {row.get('name') or row.get('sn')!r}: negative {column}")
    return value


def _rows(path: Path) -> list[dict[str, str]]:
    try:
        with path.open(newline="") as f:
            return list(csv.DictReader(f))
    except OSError as e:
        raise SystemExit(f"{path}: {e.strerror}") from None


def read_nodes(path: Path) -> Nodes:
    rows = _rows(path)
    if not rows:
        raise SystemExit(f"{path}: no nodes")
    gpus = [_int(r, "gpu", path) for r in rows]
    if max(gpus) > G:
        raise SystemExit(f"{path}: a node with more than {G} GPUs")
    return Nodes(
        np.array([_int(r, "cpu_milli", path) for r in rows], dtype=np.int64),
        np.array([_int(r, "memory_mib", path) for r in rows], dtype=np.int64),
        np.array(gpus, dtype=np.int64),
        [r.get("model") or "" for r in rows],
        [_name(r, path) for r in rows],
    )


def _name(row: dict[str, str], path: Path) -> str:
    if not row.get("sn"):
        raise SystemExit(f"{path}: a node without a name (sn)")
    return row["sn"]


def read_pods(path: Path) -> list[Pod]:
    pods = []
    for r in _rows(path):
        gpus, milli = _int(r, "num_gpu", path), _int(r, "gpu_milli", path)
        if (gpus and not 0 < milli <= MILLI) or (gpus > 1 and milli != MILLI):
            raise SystemExit(f"{path}: pod {r['name']!r}: {gpus} GPU(s) of {milli} milli")
        spec = tuple(s for s in (r.get("gpu_spec") or "").split("|") if s)
        pods.append(
            Pod(
                r["name"],
                _int(r, "cpu_milli", path),
                _int(r, "memory_mib", path),
                gpus,
                milli if gpus else 0,
                spec,
            )
        )
    if not pods:
        raise SystemExit(f"{path}: no pods")
    return sorted(pods, key=lambda p: p.name)


@dataclass(frozen=True)
class TaskMix:
    """The target workload a fragmentation measure is taken against: task shapes and weights."""

    cpu: np.ndarray
    mem: np.ndarray  # 0 where host memory is not part of the measure
    need: np.ndarray  # GPUs that must each have `share` free (0: CPU only)
    share: np.ndarray  # milli needed on each of those GPUs
    weight: np.ndarray  # sums to 1
    model_ok: np.ndarray  # [shape, model id]
    cpu_only_strands: bool = False
    """The simulator's rule: every free GPU is stranded for a CPU-only task (ours: none, when
    the task fits the node's CPU)."""

    @staticmethod
    def paper(pods: list[Pod], model_names: list[str], simulator: bool = False) -> TaskMix:
        """FGD's typical pods: (CPU, GPU count, share, model) by popularity, the most popular
        shapes that make up 95% of tasks (``simulator``: with its CPU-only rule)."""
        counts = Counter((p.cpu, 0, p.gpus, p.milli, p.spec) for p in pods)
        ranked = counts.most_common()
        total, kept, cum = sum(counts.values()), [], 0
        for shape, n in ranked:
            if cum >= 0.95 * total:
                break
            kept.append((shape, n))
            cum += n
        mix = TaskMix._build(kept, model_names)
        return dataclasses.replace(mix, cpu_only_strands=True) if simulator else mix

    @staticmethod
    def weighted(pods: list[Pod], model_names: list[str], *, memory: bool = True) -> TaskMix:
        """Ours (as services/allocator/core/fragmentation.py) with the whole list known in
        advance, within the allocator's own bounds: its MIX_SHAPES most common shapes of GPU
        tasks (it never hears of CPU-only ones), host memory included (``memory`` False:
        left out), each task counting one."""
        counts: Counter[tuple[int, int, int, int, tuple[str, ...]]] = Counter()
        for p in pods:
            if p.gpus:
                counts[p.shape if memory else (p.cpu, 0, p.gpus, p.milli, p.spec)] += 1
        top = sorted(counts.items(), key=lambda kv: (-kv[1], repr(kv[0])))[:MIX_SHAPES]
        return TaskMix._build(top, model_names)

    @staticmethod
    def _build(shapes: list[tuple[tuple, float]], model_names: list[str]) -> TaskMix:
        weight = np.array([n for _, n in shapes], dtype=float)
        weight = weight / weight.sum() if shapes else weight
        return TaskMix(
            cpu=np.array([s[0] for s, _ in shapes], dtype=np.int64),
            mem=np.array([s[1] for s, _ in shapes], dtype=np.int64),
            need=np.array([s[2] for s, _ in shapes], dtype=np.int64),
            share=np.array([s[3] for s, _ in shapes], dtype=np.int64),
            weight=weight,
            model_ok=np.array(
                [[not s[4] or m in s[4] for m in model_names] for s, _ in shapes], dtype=bool
            ).reshape(len(shapes), len(model_names)),  # no shapes: an empty mix, measuring 0
        )

    def fragmentation(
        self, cpu: np.ndarray, mem: np.ndarray, free: np.ndarray, model: np.ndarray
    ) -> np.ndarray:
        """Expected GPU milli no task of the mix can use, per row: for a task that fits, the
        GPUs with less free than its share; for one that does not, every free GPU."""
        enough = free[:, :, None] >= self.share[None, None, :]  # [row, gpu, shape]
        fits = (
            (cpu[:, None] >= self.cpu[None, :])
            & (mem[:, None] >= self.mem[None, :])
            & self.model_ok[:, model].T
            & (enough.sum(axis=1) >= self.need[None, :])
        )
        stranded = np.einsum("rg,rgs->rs", free, ~enough)
        total = free.sum(axis=1)
        if self.cpu_only_strands:
            fits = fits & (self.need[None, :] > 0)
        per_shape = np.where(fits, stranded, total[:, None])
        return per_shape @ self.weight


REFRESH_EVERY, MIX_SHAPES, CLOSE = 64, 32, 0.05
"""As services/allocator/core/mix.py and fragmentation.py: requests between snapshots, shapes
kept, and the total variation under which a snapshot stays."""


class OnlineMix:
    """The mix as the allocator learns it, from arrivals in order."""

    def __init__(self, model_names: list[str], shapes: int = MIX_SHAPES) -> None:
        self.model_names = model_names
        self.shapes = shapes
        self.weights: Counter[tuple[int, int, int, int, tuple[str, ...]]] = Counter()
        self.seen: list[Pod] = []
        self.since = 0
        self.shares: dict[tuple, float] = {}

    def observe(self, pod: Pod) -> bool:
        """Count the pod; True when a new snapshot should replace the one in use."""
        if pod.gpus == 0:
            return False  # the allocator never hears of CPU-only pods
        self.weights[pod.shape] += 1
        self.seen.append(pod)
        self.since += 1
        if self.shares and self.since < REFRESH_EVERY:
            return False
        self.since = 0
        top = sorted(self.weights.items(), key=lambda kv: (-kv[1], repr(kv[0])))[: self.shapes]
        total = sum(w for _, w in top)
        shares = {shape: w / total for shape, w in top}
        moved = sum(
            abs(shares.get(k, 0.0) - self.shares.get(k, 0.0))
            for k in shares.keys() | self.shares.keys()
        )
        if self.shares and moved / 2 <= CLOSE:
            return False
        self.shares = shares
        return True

    def snapshot(self) -> TaskMix:
        return TaskMix._build(list(self.shares.items()), self.model_names)


ABLATIONS = ("tie", "names", "memory", "scarcity")
"""What ``hami-fgd~X,Y`` leaves out of ours: coarse ties, the name order among a GPU task's
ties (the fullest node instead), host memory in the feasibility test, the scarcity of pinned
models."""
ONLINE_ABLATIONS = ("tie", "names")
"""Those that apply to the online variant too (its mix and scarcity come from the arrivals)."""


TIE_MILLI = 40.0
"""As services/allocator/core/mix.py's TIE (0.04 of a device): fragmentation increases closer
than this are ties."""


def shapes_of(policy: str) -> tuple[str, int]:
    """`hami-fgd-online#N`: the online mix's top N shapes instead of MIX_SHAPES (an
    experiment); the rest of the name stays."""
    name, _, count = policy.partition("#")
    rest = ""
    if "@" in count:
        count, _, tie = count.partition("@")
        rest = f"@{tie}"
    if not count:
        return policy, MIX_SHAPES
    if not count.isdigit() or int(count) < 1:
        raise SystemExit(f"policy {policy!r}: the shapes after # are a positive number")
    return name + rest, int(count)


def tie_of(policy: str) -> tuple[str, float]:
    """`hami-fgd@T` / `hami-fgd-online@T`: ties within T milli-GPU instead (an experiment)."""
    policy = shapes_of(policy)[0]
    name, _, tie = policy.partition("@")
    try:
        return name, float(tie) if tie else TIE_MILLI
    except ValueError:
        raise SystemExit(f"policy {policy!r}: the tie after @ is a number of milli-GPU") from None


def policy_parts(policy: str) -> tuple[str, frozenset[str]]:
    policy, _ = tie_of(policy)
    base, _, off = policy.partition("~")
    without = frozenset(filter(None, off.split(",")))
    known = {
        "binpack",
        "spread",
        "best-fit",
        "sim-best-fit",
        "sim-gpu-packing",
        "fgd",
        "fgd-sim",
        "hami-fgd",
        "hami-fgd-online",
        "bound",
    }
    allowed = {"hami-fgd": set(ABLATIONS), "hami-fgd-online": set(ONLINE_ABLATIONS)}
    if base not in known or not without <= allowed.get(base, set()):
        raise SystemExit(
            f"unknown policy {policy!r}: one of {', '.join(sorted(known))}, or hami-fgd~X[,Y] "
            f"with X, Y among {', '.join(ABLATIONS)} (hami-fgd-online~X: "
            f"{', '.join(ONLINE_ABLATIONS)})"
        )
    return base, without


class Cluster:
    def __init__(self, nodes: Nodes, policy: str, mix: TaskMix | None, seed: int = 0) -> None:
        self.policy, self.without = policy_parts(policy)
        self.tie = tie_of(policy)[1]
        # The simulator's ties: kube-scheduler's pick among equal scores, here a node order
        # shuffled once per seed.
        self.tie_rank = np.random.RandomState(seed).permutation(len(nodes.cpu))
        # Ours: the allocator's fixed order of names.
        self.name_rank = np.array([name_rank(n) for n in nodes.names])
        if self.policy == "hami-fgd-online":
            self.policy = "hami-fgd"  # the same policy; only where its mix comes from differs
        self.mix = mix
        self.cpu_cap, self.mem_cap = nodes.cpu, nodes.mem
        self.cpu, self.mem = nodes.cpu.copy(), nodes.mem.copy()
        self.exists = np.arange(G)[None, :] < nodes.gpus[:, None]
        self.gpu_cap = np.maximum(nodes.gpus, 1) * MILLI
        self.free = np.where(self.exists, MILLI, 0).astype(np.int64)
        self.model_names = sorted(set(nodes.models))
        self.model = np.array([self.model_names.index(m) for m in nodes.models])
        self.models = nodes.models
        self.n = len(nodes.cpu)
        self.version = np.zeros(self.n, dtype=np.int64)
        self.scarcity = np.zeros(len(self.model_names))
        self.price = np.zeros(len(self.model_names))
        # Per pod shape: each node's fragmentation delta (and GPU) as of the node's version.
        self._deltas: dict[tuple, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        self._frag = (
            None
            if mix is None
            else mix.fragmentation(
                self.cpu,
                self.mem if self._memory else np.zeros_like(self.mem),
                self.free,
                self.model,
            )
        )

    # -- the filter ------------------------------------------------------------------------
    def model_ok(self, pod: Pod) -> np.ndarray:
        if not pod.spec or pod.gpus == 0:
            return np.ones(self.n, dtype=bool)
        return np.isin(self.model, [i for i, m in enumerate(self.model_names) if m in pod.spec])

    def fits(self, pod: Pod) -> np.ndarray:
        ok = (self.cpu >= pod.cpu) & (self.mem >= pod.mem) & self.model_ok(pod)
        if pod.gpus:
            ok &= (self.free >= pod.milli).sum(axis=1) >= pod.gpus
        return ok

    # -- placement -------------------------------------------------------------------------
    def place(self, pod: Pod) -> bool:
        cand = np.flatnonzero(self.fits(pod))
        if cand.size == 0:
            return False
        if self.mix is not None:
            node, gpu = self._by_fragmentation(cand, pod)
        elif self.policy.startswith("sim-"):
            node, gpu = self._by_simulator(cand, pod)
        else:
            node, gpu = self._by_score(cand, pod)
        self.cpu[node] -= pod.cpu
        self.mem[node] -= pod.mem
        if pod.gpus == 1 and pod.milli < MILLI:
            self.free[node, gpu] -= pod.milli
        elif pod.gpus:
            whole = np.flatnonzero(self.free[node] == MILLI)[: pod.gpus]
            self.free[node, whole] = 0
        self.version[node] += 1
        if self._frag is not None:
            self._frag[node] = self._frag_of(np.array([node]), self.free[[node]], pod, 0)[0]
        return True

    def _by_score(self, cand: np.ndarray, pod: Pod) -> tuple[int, int]:
        free = self.free[cand]
        cpu = (self.cpu[cand] - pod.cpu) / self.cpu_cap[cand]
        mem = (self.mem[cand] - pod.mem) / self.mem_cap[cand]
        gpu = -1
        if pod.gpus == 1 and pod.milli < MILLI:
            # The GPU on each node the policy prefers: fullest (binpack, best-fit) or emptiest.
            fitting = np.where(free >= pod.milli, free, -1 if self.policy == "spread" else 10**9)
            pick = fitting.argmax(axis=1) if self.policy == "spread" else fitting.argmin(axis=1)
            left = free.sum(axis=1) - pod.milli
            gpu_left = free[np.arange(len(cand)), pick] - pod.milli
        else:
            pick = np.zeros(len(cand), dtype=np.int64)
            left = free.sum(axis=1) - pod.gpus * pod.milli
            gpu_left = np.zeros(len(cand))
        used = 1 - left / self.gpu_cap[cand]
        if self.policy == "binpack":
            score = -used + 1e-4 * gpu_left / MILLI
        elif self.policy == "spread":
            score = used - 1e-4 * gpu_left / MILLI
        elif self.policy == "best-fit":
            score = cpu + mem + (1 - used)
        else:
            raise SystemExit(f"unknown policy {self.policy!r}")
        i = int(np.argmin(score))
        gpu = int(pick[i])
        return int(cand[i]), gpu

    def _by_simulator(self, cand: np.ndarray, pod: Pod) -> tuple[int, int]:
        """The FGD simulator's BestFit or GpuPacking: integer scores, higher wins, ties to
        the per-seed node order; a share on the GPU with the least left that holds it."""
        free = self.free[cand]
        exists = self.exists[cand]
        share = pod.gpus == 1 and pod.milli < MILLI
        need = pod.milli if share else MILLI
        fitting = np.where(free >= need, free, 10**9)
        tight = fitting.argmin(axis=1)
        if self.policy == "sim-best-fit":
            cpu_left = (self.cpu[cand] - pod.cpu) / 128_000.0  # milli-CPU
            gpu_left = (free.sum(axis=1) - pod.gpus * pod.milli) / 8000.0
            score = ((1.0 - (0.5 * cpu_left + 0.5 * gpu_left)) * 100).astype(np.int64)
        else:
            fully_free = ((free == MILLI) & exists).sum(axis=1)
            gpus = exists.sum(axis=1)
            if pod.gpus == 0 or pod.milli <= 0:
                score = np.zeros(len(cand), dtype=np.int64)
            elif share:
                on_used = free[np.arange(len(cand)), tight] < MILLI
                left = free[np.arange(len(cand)), tight] * 100 // MILLI
                score = np.where(
                    fully_free == gpus,
                    np.maximum(100 // 3 - fully_free, fully_free),
                    np.where(on_used, np.maximum(100 - left // 10, 50), np.maximum(50 - 1, 33)),
                )
            else:
                score = np.where(
                    fully_free == gpus,
                    np.maximum(100 // 3 - fully_free, fully_free),
                    np.maximum(50 - pod.gpus, 33),
                )
        best = score == score.max()
        i = int(np.flatnonzero(best)[np.argmin(self.tie_rank[cand[best]])])
        return int(cand[i]), int(tight[i]) if share else -1

    def _frag_of(self, rows: np.ndarray, free: np.ndarray, pod: Pod, taken: int) -> np.ndarray:
        assert self.mix is not None
        cpu = self.cpu[rows] - taken * pod.cpu
        mem = self.mem[rows] - taken * pod.mem if self._memory else np.zeros(len(rows))
        return self.mix.fragmentation(cpu, mem, free, self.model[rows])

    @property
    def _memory(self) -> bool:
        return self.policy == "hami-fgd" and "memory" not in self.without

    def set_scarcity(self, pods: list[Pod]) -> None:
        """Per GPU model: the share of the GPUs asked that model-pinned tasks want of it (each
        pinned task's ask spread over its allowed models by size): the allocator's pinned
        shares (services/allocator/core/fragmentation.py: snapshot_of)."""
        size = np.zeros(len(self.model_names))
        np.add.at(size, self.model, self.exists.sum(axis=1))
        demand = np.zeros(len(self.model_names))
        for p in pods:
            if p.spec and p.gpus:
                allowed = [i for i, m in enumerate(self.model_names) if m in p.spec]
                demand[allowed] += p.gpu_request * size[allowed] / size[allowed].sum()
        volume = sum(p.gpu_request for p in pods)
        self.scarcity = demand / volume  # the pinned share of what is asked, per model

    def reprice(self) -> None:
        """Each model's price: its pinned share over its share of what is free now, in the
        allocator's steps (fragmentation.py: model_prices), renewed when it renews them."""
        free = np.bincount(self.model, weights=self.free.sum(axis=1), minlength=len(self.price))
        price = self.scarcity * free.sum() / np.maximum(free, 1e-3)  # as the core's 1e-6 GPU
        steps = np.round(np.log(np.maximum(price, 1e-9)) / np.log(PRICE_STEP))
        self.price = np.where(price < 0.01, 0.0, PRICE_STEP**steps)

    def set_mix(self, mix: TaskMix) -> None:
        """A new snapshot of the mix: every node's fragmentation is measured again."""
        self.mix = mix
        self._deltas.clear()
        mem = self.mem if self._memory else np.zeros_like(self.mem)
        self._frag = mix.fragmentation(self.cpu, mem, self.free, self.model)

    def _deltas_for(self, pod: Pod) -> tuple[np.ndarray, np.ndarray]:
        """Each node's fragmentation increase if the pod went there (inf: cannot), and the GPU
        for a shared pod. Only nodes changed since this shape was last asked are recomputed."""
        key = (pod.cpu, pod.mem, pod.gpus, pod.milli)
        cached = self._deltas.get(key)
        if cached is None:
            cached = (np.full(self.n, -1), np.zeros(self.n), np.zeros(self.n, dtype=np.int64))
            self._deltas[key] = cached
        seen, delta, gpu = cached
        stale = np.flatnonzero(seen != self.version)
        if stale.size:
            before = self._frag[stale]
            if pod.gpus == 1 and pod.milli < MILLI and self.policy == "hami-fgd":
                # The tightest GPU that fits on each node (as the core's device order).
                free = self.free[stale].copy()
                pick = np.where(free >= pod.milli, free, 10 * MILLI).argmin(axis=1)
                free[np.arange(stale.size), pick] -= pod.milli
                gpu[stale] = pick
                delta[stale] = self._frag_of(stale, free, pod, 1) - before
            elif pod.gpus == 1 and pod.milli < MILLI:
                # Every GPU of every stale node as a candidate: rows = node x GPU.
                rows = np.repeat(stale, G)
                free = self.free[rows].copy()
                col = np.tile(np.arange(G), stale.size)
                free[np.arange(rows.size), col] -= pod.milli
                after = self._frag_of(rows, free, pod, 1).reshape(stale.size, G)
                after = np.where(self.free[stale] >= pod.milli, after, np.inf)
                if self.policy == "fgd-sim":  # its integer score; the first GPU of the best
                    scores = np.where(np.isfinite(after), sim_score(after - before[:, None]), -1)
                    gpu[stale] = scores.argmax(axis=1)
                    delta[stale] = -scores.max(axis=1)
                else:
                    gpu[stale] = after.argmin(axis=1)
                    delta[stale] = after.min(axis=1) - before
            else:
                free = self.free[stale].copy()
                if pod.gpus:
                    order = np.argsort(free != MILLI, axis=1, kind="stable")[:, : pod.gpus]
                    np.put_along_axis(free, order, 0, axis=1)
                delta[stale] = self._frag_of(stale, free, pod, 1) - before
                if self.policy == "fgd-sim":
                    delta[stale] = -sim_score(delta[stale])
            seen[stale] = self.version[stale]
        return delta, gpu

    def _by_fragmentation(self, cand: np.ndarray, pod: Pod) -> tuple[int, int]:
        delta, gpu = self._deltas_for(pod)
        d = delta[cand]
        if self.policy == "hami-fgd" and not pod.spec:
            extra = self.price[self.model[cand]] * pod.gpus * pod.milli
        else:
            extra = np.zeros(len(cand))
        if self.policy == "hami-fgd" and "tie" not in self.without:
            # Ties (within TIE_MILLI): a GPU task's to the first node in the name order, a
            # CPU-only task's to the node left fullest.
            if pod.gpus and "names" not in self.without:
                rank = self.name_rank[cand]
            else:
                rank = self.free[cand].sum(axis=1) / self.gpu_cap[cand]
            # The price rounded on its own, as the allocator's, which adds it to a remembered
            # score (policies.py: FragmentationAware.charge).
            i = int(np.lexsort((rank, np.round(d / self.tie) + np.round(extra / self.tie)))[0])
        elif self.policy == "fgd-sim":  # the simulator's ties: the per-seed node order
            d = d + extra
            best = d == d.min()
            i = int(np.flatnonzero(best)[np.argmin(self.tie_rank[cand[best]])])
        else:
            i = int(np.argmin(d + extra))
        node = int(cand[i])
        return node, int(gpu[node])


def sim_score(increase: np.ndarray) -> np.ndarray:
    """The FGD simulator's score of a fragmentation increase (milli-GPU):
    int64(sigmoid(-increase / 1000) * 100); placements within a few hundredths of a GPU of
    each other score the same."""
    return (100.0 / (1.0 + np.exp(increase / 1000.0))).astype(np.int64)


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


def arrived_until(order: list[Pod], capacity: int, mark: float) -> list[Pod]:
    """The tasks arrived when GPU requests first reach ``mark`` of capacity (that one too)."""
    arrived = 0.0
    for i, pod in enumerate(order):
        arrived += pod.gpu_request
        if arrived >= mark * capacity - 1e-9:
            return order[: i + 1]
    return order


def run(nodes: Nodes, pods: list[Pod], policy: str, seed: int) -> tuple[float, float]:
    if policy == "bound":  # the fewest unallocated GPUs any policy could leave
        from openb_bound import upper_bound

        order = workload(pods, nodes.capacity, seed)
        at100, at130 = (
            max(
                0.0, nodes.capacity - upper_bound(nodes, arrived_until(order, nodes.capacity, mark))
            )
            for mark in (1.0, 1.3)
        )
        return at100, at130
    model_names = sorted(set(nodes.models))
    base, without = policy_parts(policy)
    mix = None
    if base in ("fgd", "fgd-sim"):
        mix = TaskMix.paper(pods, model_names, simulator=base == "fgd-sim")
    elif base == "hami-fgd":
        mix = TaskMix.weighted(pods, model_names, memory="memory" not in without)
    online = OnlineMix(model_names, shapes_of(policy)[1]) if base == "hami-fgd-online" else None
    if online is not None:  # nothing learnt yet, as the allocator starts: every node measures 0
        mix = TaskMix._build([], model_names)
    cluster = Cluster(nodes, policy, mix, seed)
    if base == "hami-fgd" and "scarcity" not in without:
        cluster.set_scarcity(pods)
    capacity = nodes.capacity
    arrived = allocated = 0.0
    asked = 0  # GPU requests so far: the allocator renews prices every REFRESH_EVERY of them
    marks: dict[float, float] = {}
    for pod in workload(pods, capacity, seed):
        if online is not None and online.observe(pod):  # observed before it is placed
            cluster.set_mix(online.snapshot())
            cluster.set_scarcity(online.seen)
        if pod.gpus:
            asked += 1
            if asked % REFRESH_EVERY == 1:  # the 1st, the 65th, ...: as a snapshot falls due
                cluster.reprice()
        arrived += pod.gpu_request
        if cluster.place(pod):
            allocated += pod.gpu_request
        for mark in (1.0, 1.3):
            if mark not in marks and arrived >= mark * capacity - 1e-9:
                marks[mark] = capacity - allocated
    return marks[1.0], marks.get(1.3, capacity - allocated)


def _one(args: tuple[Path, Path, str, int]) -> tuple[str, int, float, float, float]:
    node_path, pod_path, policy, seed = args
    started = time.perf_counter()
    at100, at130 = run(read_nodes(node_path), read_pods(pod_path), policy, seed)
    return policy, seed, at100, at130, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("nodes", type=Path)
    parser.add_argument("pods", type=Path)
    parser.add_argument(
        "--policies",
        nargs="+",
        default=[
            "bound",
            "binpack",
            "spread",
            "best-fit",
            "fgd-sim",
            "hami-fgd",
            "hami-fgd-online",
        ],
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=list(range(42, 52)))
    parser.add_argument("--jobs", type=int, default=1, help="runs in parallel (processes)")
    args = parser.parse_args()
    for policy in args.policies:
        policy_parts(policy)  # an unknown name fails here, before any run
    nodes, pods = read_nodes(args.nodes), read_pods(args.pods)
    print(f"{args.pods.name}: {len(pods)} pods, {nodes.capacity} GPUs on {len(nodes.cpu)} nodes")
    print("| policy | unallocated GPUs (allocated) at 100% | at 130% | seeds | seconds per run |")
    print("| --- | --- | --- | --- | --- |")
    jobs = [(args.nodes, args.pods, p, s) for p in args.policies for s in args.seeds]
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        results = list(pool.map(_one, jobs))
    for policy in args.policies:
        mine = [r for r in results if r[0] == policy]
        at100 = statistics.mean(r[2] for r in mine)
        at130 = statistics.mean(r[3] for r in mine)
        per_run = statistics.mean(r[4] for r in mine)
        share = [f"{u:.0f} ({100 * (1 - u / nodes.capacity):.1f}%)" for u in (at100, at130)]
        print(f"| {policy} | {share[0]} | {share[1]} | {len(mine)} | {per_run:.1f} |", flush=True)


if __name__ == "__main__":
    sys.exit(main())
