"""The replay's upper bound (benchmarks/openb_bound.py) is a bound: no policy allocates more
than it says, and no placement of the tasks could (brute force on small cases); and it sees
what stops a real packing (shares that do not pair, multi-GPU tasks, models, CPU)."""

from __future__ import annotations

import itertools
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

BENCHMARKS = Path(__file__).parents[2] / "benchmarks"

pytest.importorskip("scipy")


def modules() -> tuple[ModuleType, ModuleType]:
    if str(BENCHMARKS) not in sys.path:
        sys.path.insert(0, str(BENCHMARKS))
    import openb_bound
    import openb_replay

    return openb_replay, openb_bound


def nodes_of(r: ModuleType, spec: list[tuple[int, int, str]]) -> object:
    """(CPU milli, GPUs, model) per node; memory is plentiful."""
    return r.Nodes(
        cpu=np.array([c for c, _, _ in spec], dtype=np.int64),
        mem=np.array([1 << 20] * len(spec), dtype=np.int64),
        gpus=np.array([g for _, g, _ in spec], dtype=np.int64),
        models=[m for _, _, m in spec],
        names=[f"node-{i}" for i in range(len(spec))],
    )


def pod(r: ModuleType, i: int, cpu: int, gpus: int, milli: int, spec: tuple[str, ...] = ()):
    return r.Pod(name=f"p{i:03d}", cpu=cpu, mem=1, gpus=gpus, milli=milli, spec=spec)


def test_shares_that_do_not_pair_leave_their_rest_of_the_gpu() -> None:
    r, b = modules()
    nodes = nodes_of(r, [(64000, 2, "V100")])
    pods = [pod(r, i, 1000, 1, 600) for i in range(4)]
    assert b.upper_bound(nodes, pods) == pytest.approx(1.2)  # one 600 per GPU
    pods += [pod(r, 9, 1000, 1, 400)]
    assert b.upper_bound(nodes, pods) == pytest.approx(1.6)  # 600 + 400 fill one GPU


def test_multi_gpu_tasks_need_a_node_with_enough_gpus() -> None:
    r, b = modules()
    nodes = nodes_of(r, [(64000, 4, "V100"), (64000, 2, "V100")])
    # Two 3-GPU tasks: one fits the 4-GPU node, none the 2-GPU node.
    assert b.upper_bound(nodes, [pod(r, i, 1000, 3, 1000) for i in range(2)]) == pytest.approx(3)


def test_models_and_cpu_limit_the_bound() -> None:
    r, b = modules()
    nodes = nodes_of(r, [(8000, 2, "T4"), (64000, 2, "V100")])
    pinned = [pod(r, i, 1000, 1, 1000, ("V100",)) for i in range(4)]
    assert b.upper_bound(nodes, pinned) == pytest.approx(2)
    hungry = [pod(r, i, 6000, 1, 1000) for i in range(4)]  # the T4 node's CPU holds one
    assert b.upper_bound(nodes, hungry) == pytest.approx(3)


def best_placement(r: ModuleType, nodes: object, pods: list) -> float:
    """The most GPU share any assignment of the pods (each to one node or none, a share to one
    GPU) allocates: brute force."""
    best = 0.0
    slots = [(n, g) for n in range(len(nodes.cpu)) for g in range(int(nodes.gpus[n]))]
    for choice in itertools.product(range(len(slots) + 1), repeat=len(pods)):
        cpu = nodes.cpu.copy()
        free = {s: 1000 for s in slots}
        ok, total = True, 0.0
        for p, c in zip(pods, choice, strict=True):
            if c == len(slots):
                continue
            n, g = slots[c]
            model_ok = not p.spec or nodes.models[n] in p.spec
            if p.gpus == 1 and p.milli < 1000:
                need = [(n, g)]
                take = p.milli
            else:
                need = [(n, g + k) for k in range(p.gpus)]  # consecutive GPUs from g
                take = 1000
            if not model_ok or cpu[n] < p.cpu or any(free.get(s, -1) < take for s in need):
                ok = False
                break
            cpu[n] -= p.cpu
            for s in need:
                free[s] -= take
            total += p.gpu_request
        if ok:
            best = max(best, total)
    return best


task = st.one_of(
    st.tuples(st.sampled_from([300, 500, 600, 700]), st.just(1)),
    st.tuples(st.just(1000), st.integers(1, 3)),
)


@settings(max_examples=40, deadline=None)
@given(
    spec=st.lists(
        st.tuples(st.sampled_from([4000, 16000]), st.integers(1, 3), st.sampled_from("AB")),
        min_size=1,
        max_size=2,
    ),
    tasks=st.lists(
        st.tuples(task, st.sampled_from([1000, 3000]), st.sampled_from([(), ("A",)])),
        min_size=1,
        max_size=4,
    ),
)
def test_no_placement_and_no_policy_allocates_more_than_the_bound(
    spec: list[tuple[int, int, str]], tasks: list
) -> None:
    r, b = modules()
    nodes = nodes_of(r, spec)
    pods = [
        pod(r, i, cpu, gpus, milli, model) for i, ((milli, gpus), cpu, model) in enumerate(tasks)
    ]
    bound = b.upper_bound(nodes, pods)
    assert best_placement(r, nodes, pods) <= bound + 1e-6
    assert bound <= sum(p.gpu_request for p in pods) + 1e-6
    for policy in ("binpack", "best-fit", "fgd-sim", "hami-fgd-online"):
        order = r.workload(pods, nodes.capacity, 42)
        for mark, unallocated in zip((1.0, 1.3), r.run(nodes, pods, policy, 42), strict=True):
            arrived = r.arrived_until(order, nodes.capacity, mark)
            floor = nodes.capacity - b.upper_bound(nodes, arrived)
            assert unallocated >= floor - 1e-6, (policy, mark)
