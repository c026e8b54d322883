"""An upper bound on the GPUs any scheduler could allocate to a list of arrived tasks on a
cluster (the trace replay's setting: benchmarks/openb_replay.py), online or offline.

The bound is a linear-programming relaxation of the offline packing problem. Its variables: how
many tasks of each shape go to each class of identical nodes (CPU, memory, GPU count, model),
and how many GPUs of each class are shared in each *pattern* (a multiset of shares that fit on
one GPU together: 470 + 470, 810 + 160, ...). Constraints: no class gets more CPU or memory than
its nodes have, nor more GPUs than it has (whole GPUs taken plus GPUs shared in some pattern);
the shares of each size placed on a class are at most what its patterns hold; model and
per-node CPU, memory and GPU-count limits hold; no shape is used more often than it arrived.
Every real placement is one feasible point (count tasks per shape and class, GPUs per pattern),
so the optimum is at least what any policy allocates. Patterns are generated as needed (column
generation: a knapsack over share sizes priced by the program's duals) until none improves it,
so the figure is the relaxation's true optimum. Further valid cuts: a node of n GPUs holds at
most floor(n / k) tasks of k or more whole GPUs, and a node at most as many tasks of one shape
as its CPU and memory hold whole.

What it relaxes: which node of a class a task lands on (CPU, memory and GPUs are pooled per
class, so a node's CPU running out before its GPUs is not charged), and arrival order. CPU-only
tasks give no GPU; the bound lets a scheduler leave them out. What it leaves unallocated is what
no scheduler, even one that knew every arrival in advance, could allocate; the gap between it
and a policy is an upper bound on what that policy could still win.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
from scipy.optimize import linprog
from scipy.sparse import coo_array

if TYPE_CHECKING:
    from openb_replay import Nodes, Pod

MILLI = 1000


def upper_bound(nodes: Nodes, arrived: Sequence[Pod], max_rounds: int = 500) -> float:
    """The most GPUs (in devices) a placement of ``arrived`` onto ``nodes`` could allocate."""
    return _Program(nodes, arrived).solve(max_rounds)


class _Program:
    def __init__(self, nodes: Nodes, arrived: Sequence[Pod]) -> None:
        self.classes = Counter(
            zip(
                nodes.cpu.tolist(),
                nodes.mem.tolist(),
                nodes.gpus.tolist(),
                nodes.models,
                strict=True,
            )
        )
        self.class_list = list(self.classes)
        self.tasks = Counter(p.shape for p in arrived if p.gpus)
        self.task_list = list(self.tasks)
        # (task, class) pairs that fit one node of the class.
        self.fits = [
            (t, c)
            for t, (cpu, mem, gpus, _, spec) in enumerate(self.task_list)
            for c, (ncpu, nmem, ngpus, model) in enumerate(self.class_list)
            if cpu <= ncpu and mem <= nmem and gpus <= ngpus and (not spec or model in spec)
        ]
        # Share sizes that may go to each class.
        self.sizes: dict[int, list[int]] = {}
        for t, c in self.fits:
            _, _, gpus, milli, _ = self.task_list[t]
            if gpus == 1 and milli < MILLI and milli not in self.sizes.setdefault(c, []):
                self.sizes[c].append(milli)
        self.patterns: list[tuple[int, tuple[tuple[int, int], ...]]] = [
            (c, ((s, MILLI // s),)) for c, sizes in self.sizes.items() for s in sizes
        ]

    def solve(self, max_rounds: int) -> float:
        if not self.fits:
            return 0.0
        for _ in range(max_rounds):
            value, duals = self._master()
            fresh = [p for c in self.sizes if (p := self._pattern(c, duals)) is not None]
            if not fresh:
                return value
            self.patterns.extend(fresh)
        raise RuntimeError(f"the bound's pattern generation did not converge in {max_rounds}")

    def _master(self) -> tuple[float, dict[tuple[str, int, int], float]]:
        rows: dict[tuple[str, int, int], int] = {}
        limits: list[float] = []
        entries: list[tuple[int, int, float]] = []

        def add(key: tuple[str, int, int], col: int, value: float, limit: float) -> None:
            if key not in rows:
                rows[key] = len(limits)
                limits.append(limit)
            entries.append((rows[key], col, value))

        gpu_value: list[float] = []
        most: list[float | None] = []  # per column: tasks of its shape the class could hold
        for col, (t, c) in enumerate(self.fits):
            cpu, mem, gpus, milli, _ = self.task_list[t]
            ncpu, nmem, ngpus, _ = self.class_list[c]
            count = self.classes[self.class_list[c]]
            gpu_value.append(gpus * milli / MILLI)
            per_node = min(ncpu // cpu if cpu else math.inf, nmem // mem if mem else math.inf)
            most.append(None if per_node == math.inf else float(count * per_node))
            add(("arrived", t, 0), col, 1.0, self.tasks[self.task_list[t]])
            add(("cpu", c, 0), col, cpu, count * ncpu)
            add(("memory", c, 0), col, mem, count * nmem)
            if gpus == 1 and milli < MILLI:
                add(("share", c, milli), col, 1.0, 0.0)
            else:
                add(("gpus", c, 0), col, gpus, count * ngpus)
                for k in range(2, gpus + 1):
                    add(("big", c, k), col, 1.0, count * (ngpus // k))
        for j, (c, pattern) in enumerate(self.patterns):
            col = len(self.fits) + j
            ngpus = self.class_list[c][2]
            gpu_value.append(0.0)
            most.append(None)
            add(("gpus", c, 0), col, 1.0, self.classes[self.class_list[c]] * ngpus)
            for size, k in pattern:
                add(("share", c, size), col, -float(k), 0.0)
        r, cols, vals = zip(*entries, strict=True)
        a = coo_array((vals, (r, cols)), shape=(len(limits), len(gpu_value))).tocsr()
        result = linprog(
            -np.array(gpu_value),
            A_ub=a,
            b_ub=np.array(limits),
            bounds=[(0, m) for m in most],
            method="highs",
        )
        if result.status != 0:
            raise RuntimeError(f"the bound's linear program did not solve: {result.message}")
        marginals = result.ineqlin.marginals
        return float(-result.fun), {key: -float(marginals[i]) for key, i in rows.items()}

    def _pattern(
        self, c: int, duals: dict[tuple[str, int, int], float]
    ) -> tuple[int, tuple[tuple[int, int], ...]] | None:
        """The pattern of class ``c`` worth most at the duals (an unbounded knapsack over its
        share sizes), if it is worth more than the GPU it takes."""
        sizes = self.sizes[c]
        worth = [duals.get(("share", c, s), 0.0) for s in sizes]
        unit = math.gcd(MILLI, *sizes)
        cells = MILLI // unit
        best = [0.0] * (cells + 1)
        last: list[int | None] = [None] * (cells + 1)
        for room in range(1, cells + 1):
            best[room], last[room] = best[room - 1], None
            for i, s in enumerate(sizes):
                w = s // unit
                if w <= room and best[room - w] + worth[i] > best[room] + 1e-12:
                    best[room], last[room] = best[room - w] + worth[i], i
        if best[cells] <= duals.get(("gpus", c, 0), 0.0) + 1e-9:
            return None
        taken: Counter[int] = Counter()
        room = cells
        while room > 0:
            i = last[room]
            if i is None:
                room -= 1
                continue
            taken[sizes[i]] += 1
            room -= sizes[i] // unit
        pattern = (c, tuple(sorted(taken.items())))
        return None if pattern in self.patterns else pattern
