"""The trace replay (benchmarks/openb_replay.py) measures fragmentation the way the allocator's
core does, so that its packing numbers speak for the product's policy: devices, shares, and the
host CPU and memory a node has left for each shape of the mix."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
from hypothesis import example, given, settings
from hypothesis import strategies as st
from immutables import Map

from services.allocator.core.fragmentation import measure
from services.allocator.core.mix import MixSnapshot
from services.allocator.core.state import DeviceUsage
from shared.schemas.placement import ContainerRequest
from shared.schemas.placement import ContainerRequest as C
from tests.unit.helpers import device

REPLAY = Path(__file__).parents[2] / "benchmarks" / "openb_replay.py"


def replay() -> ModuleType:
    spec = importlib.util.spec_from_file_location("openb_replay", REPLAY)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["openb_replay"] = module  # dataclasses resolve annotations through it
    spec.loader.exec_module(module)
    return module


milli = st.sampled_from([0, 100, 200, 300, 450, 500, 700, 1000])
shapes = st.one_of(
    st.tuples(st.just(1), st.sampled_from([100, 250, 500, 800])),  # a share of one GPU
    st.tuples(st.sampled_from([1, 2, 4]), st.just(1000)),  # whole GPUs
)


host = st.tuples(st.sampled_from([0, 4000, 8000]), st.sampled_from([0, 16384, 65536]))


@settings(max_examples=80, deadline=None)
@given(
    nodes=st.lists(
        st.tuples(st.lists(milli, min_size=1, max_size=8), host), min_size=1, max_size=6
    ),
    mix=st.lists(
        st.tuples(shapes, host, st.integers(1, 5)),
        min_size=1,
        max_size=5,
        unique_by=lambda x: (x[0], x[1]),
    ),
)
def test_replay_and_core_measure_the_same_fragmentation(
    nodes: list[tuple[list[int], tuple[int, int]]],
    mix: list[tuple[tuple[int, int], tuple[int, int], int]],
) -> None:
    r = replay()
    total = sum(w for _, _, w in mix)
    core = MixSnapshot(
        shapes=tuple(
            (
                ((ContainerRequest(count=n, cores=s // 10, memory_percent=s // 10),), need),
                w / total,
            )
            for (n, s), need, w in mix
        )
    )
    task_mix = r.TaskMix._build(
        [((cpu, mem, n, s, ()), w) for (n, s), (cpu, mem), w in mix], model_names=["NVIDIA H200"]
    )
    free = np.zeros((len(nodes), r.G), dtype=np.int64)
    for row, (used, _) in enumerate(nodes):
        free[row, : len(used)] = [1000 - u for u in used]
    cpu = np.array([room[0] for _, room in nodes], dtype=np.int64)
    mem = np.array([room[1] for _, room in nodes], dtype=np.int64)
    zeros = np.zeros(len(nodes), dtype=np.int64)
    theirs = task_mix.fragmentation(cpu, mem, free, zeros) / 1000
    for row, (used, room) in enumerate(nodes):
        devices = tuple(device(i, node=f"n{row}", memory=1000, split=100) for i in range(len(used)))
        usage = Map(
            {
                d.uuid: DeviceUsage(memory_mib=u, cores=u // 10, count=1)
                for d, u in zip(devices, used, strict=True)
                if u
            }
        )
        assert abs(measure(core, devices, usage, room) - theirs[row]) < 1e-9, (used, room, mix)


def test_replay_runs_any_list_in_the_format_and_refuses_bad_rows(tmp_path: Path) -> None:
    import pytest

    r = replay()
    nodes = tmp_path / "nodes.csv"
    nodes.write_text(
        "sn,cpu_milli,memory_mib,gpu,model\na,32000,65536,2,T4\nb,64000,131072,4,V100\n"
    )
    pods = tmp_path / "pods.csv"
    pods.write_text(
        "name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec\n"
        "p0,4000,8192,1,500,\np1,8000,8192,2,1000,V100\np2,2000,4096,0,0,\n"
        "p3,4000,8192,1,1000,T4\np4,1000,1024,1,250,\n"
    )
    for policy in ("binpack", "spread", "best-fit", "fgd", "hami-fgd"):
        at100, at130 = r.run(r.read_nodes(nodes), r.read_pods(pods), policy, 42)
        assert 0 <= at130 <= at100 <= 6, policy
    bad = tmp_path / "bad.csv"
    bad.write_text("name,cpu_milli,memory_mib,num_gpu,gpu_milli\nq,1000,1024,2,500\n")
    with pytest.raises(SystemExit, match=r"q.*2 GPU"):
        r.read_pods(bad)
    with pytest.raises(SystemExit, match=r"missing\.csv"):
        r.read_nodes(tmp_path / "missing.csv")


def test_the_simulators_packing_and_best_fit_rules() -> None:
    """sim-gpu-packing: a share goes to a GPU already shared before a free GPU of a used node,
    and that before an idle node; sim-best-fit: to the node left with the least CPU and GPU
    (the FGD simulator's plugins, as benchmarks/openb_replay.py reproduces them)."""
    r = replay()
    nodes = r.Nodes(
        cpu=np.array([64000, 64000, 64000]),
        mem=np.array([262144] * 3),
        gpus=np.array([2, 2, 2]),
        models=["V100"] * 3,
        names=["a", "b", "c"],
    )
    share = r.Pod(name="p", cpu=1000, mem=1000, gpus=1, milli=300, spec=())
    for policy in ("sim-gpu-packing", "sim-best-fit"):
        cluster = r.Cluster(nodes, policy, None, seed=7)
        cluster.free[1, :2] = [1000, 600]  # node 1 shares a GPU; node 2 uses one whole
        cluster.free[2, :2] = [0, 1000]
        cluster.cpu[2] = 2000  # and has almost no CPU left
        node, gpu = cluster._by_simulator(np.flatnonzero(cluster.fits(share)), share)
        expected = (1, 1) if policy == "sim-gpu-packing" else (2, 1)
        assert (node, gpu) == expected, policy


def test_the_simulators_fgd_score_makes_near_equals_ties() -> None:
    """fgd-sim scores as the simulator: int64(sigmoid(-increase / 1000) * 100), so increases
    a few hundredths of a GPU apart score the same, and a CPU-only task strands every free GPU."""
    r = replay()
    scores = r.sim_score(np.array([0.0, 10.0, 39.0, 41.0, 1000.0, -500.0]))
    assert list(scores) == [50, 49, 49, 48, 26, 62]
    mix = r.TaskMix.paper(
        [r.Pod(name="c", cpu=1000, mem=0, gpus=0, milli=0, spec=())], ["V100"], simulator=True
    )
    free = np.array([[1000, 500, 0, 0, 0, 0, 0, 0]])
    frag = mix.fragmentation(np.array([8000]), np.array([0]), free, np.array([0]))
    assert frag[0] == 1500  # ours would say 0: the CPU-only task fits the node


def test_ours_breaks_ties_as_the_core_does() -> None:
    """hami-fgd with nothing to tell nodes apart: a GPU task goes to the first node in the
    core's order of names (policies.name_rank), a CPU-only task to the node left fullest."""
    from services.allocator.core.policies import name_rank

    r = replay()
    names = ["node-a", "node-b", "node-c", "node-d"]
    assert names.index(min(names, key=name_rank)) not in (0, 2)  # neither first nor fullest
    nodes = r.Nodes(
        cpu=np.array([64000] * 4),
        mem=np.array([262144] * 4),
        gpus=np.array([2] * 4),
        models=["V100"] * 4,
        names=names,
    )
    cluster = r.Cluster(nodes, "hami-fgd", r.TaskMix._build([], ["V100"]))
    cluster.free[2, 0] = 500  # the fullest node, not first by name
    gpu_task = r.Pod(name="g", cpu=1000, mem=1000, gpus=1, milli=300, spec=())
    node, _ = cluster._by_fragmentation(np.flatnonzero(cluster.fits(gpu_task)), gpu_task)
    assert names[node] == min(names, key=name_rank)
    cpu_task = r.Pod(name="c", cpu=1000, mem=1000, gpus=0, milli=0, spec=())
    node, _ = cluster._by_fragmentation(np.flatnonzero(cluster.fits(cpu_task)), cpu_task)
    assert node == 2
    plain = r.Cluster(nodes, "hami-fgd~names", r.TaskMix._build([], ["V100"]))
    plain.free[2, 0] = 500
    node, _ = plain._by_fragmentation(np.flatnonzero(plain.fits(gpu_task)), gpu_task)
    assert node == 2


MODELS = ["A10", "P100", "T4"]


@settings(max_examples=60, deadline=None)
@example(  # a pinned model with nothing free: the price of the last millionth of a GPU
    gpus=[(0, 1), (2, 1)],
    tasks=[((1, 500), ["A10"], 1), ((1, 500), [], 1)],
    used=[1000] * 8 + [0] * 40,
).via("a model used up")
@given(
    gpus=st.lists(st.tuples(st.integers(0, 2), st.integers(1, 8)), min_size=1, max_size=6),
    tasks=st.lists(
        st.tuples(
            st.sampled_from([(1, 250), (1, 500), (1, 1000), (2, 1000), (4, 1000)]),
            st.lists(st.sampled_from(MODELS), max_size=2, unique=True),
            st.integers(1, 4),
        ),
        min_size=1,
        max_size=6,
    ),
    used=st.lists(st.sampled_from([0, 250, 500, 1000]), min_size=48, max_size=48),
)
def test_replay_prices_models_as_the_core_does(
    gpus: list[tuple[int, int]],
    tasks: list[tuple[tuple[int, int], list[str], int]],
    used: list[int],
) -> None:
    """Pinned shares of what is asked and prices from what is free: the replay's mirror of
    core/fragmentation.py (snapshot_of, model_prices), on the same tasks and free capacity."""
    from services.allocator.core.fragmentation import model_prices, snapshot_of

    r = replay()
    models = [MODELS[m] for m, _ in gpus]
    nodes = r.Nodes(
        cpu=np.array([64000] * len(gpus)),
        mem=np.array([262144] * len(gpus)),
        gpus=np.array([n for _, n in gpus]),
        models=models,
        names=[f"n{i}" for i in range(len(gpus))],
    )
    cluster = r.Cluster(nodes, "hami-fgd", r.TaskMix._build([], sorted(set(models))))
    for row, (_, n) in enumerate(gpus):
        cluster.free[row, :n] = [1000 - u for u in used[row * 8 : row * 8 + n]]
    pods = [
        r.Pod(name=f"p{i}-{k}", cpu=1000, mem=1000, gpus=n, milli=s, spec=tuple(spec))
        for i, ((n, s), spec, times) in enumerate(tasks)
        for k in range(times)
    ]
    cluster.set_scarcity(pods)
    cluster.reprice()
    installed: dict[str, int] = {}
    free: dict[str, int] = {}
    for row, model in enumerate(models):
        installed[model] = installed.get(model, 0) + gpus[row][1]
        left = int(cluster.free[row].sum()) * 1000  # milli -> the ledger's millionths
        if left:
            free[model] = free.get(model, 0) + left
    counts: dict[object, float] = {}
    for (n, s), spec, times in tasks:
        shape = (C(count=n, cores=s // 10, use_types=tuple(spec)),)
        key = (shape, (1000, 1000))
        counts[key] = counts.get(key, 0) + times
    pinned = snapshot_of(counts, installed).pinned  # type: ignore[arg-type]
    core = model_prices(pinned, free)
    for i, model in enumerate(cluster.model_names):
        assert abs(cluster.scarcity[i] - pinned.get(model, 0.0)) < 1e-9, model
        assert abs(cluster.price[i] - core.get(model, 0.0)) < 1e-6 * max(1.0, cluster.price[i])
