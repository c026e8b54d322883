"""The mix sampler (benchmarks/openb_mixes.py) makes lists in the asked proportions, from the
default list's own tasks (model-constrained ones from a second list where the default has
none), the same list for the same seed."""

from __future__ import annotations

import dataclasses
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

BENCHMARKS = Path(__file__).parents[2] / "benchmarks"


def load(name: str) -> ModuleType:
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses resolve annotations through it
    spec.loader.exec_module(module)
    return module


def default_like() -> list:  # type: ignore[type-arg]
    replay = load("openb_replay")
    pods = []
    for i in range(400):
        gpus, milli = [(0, 0), (1, 300), (1, 1000), (4, 1000)][i % 4]
        spec = ("T4",) if i % 8 < 4 else ()  # every category has constrained tasks
        pods.append(replay.Pod(f"p{i:04d}", 4000, 8000, gpus, milli, spec))
    return pods


def test_the_sampler_keeps_the_asked_proportions_and_is_reproducible() -> None:
    mixes = load("openb_mixes")
    pods = default_like()
    mix = mixes.Mix(sharing=0.6, multi=0.1, cpu_only=0.2, constrained=0.3)
    made = mixes.sample(pods, mix, seed=7)
    assert len(made) == len(pods) and made == mixes.sample(pods, mix, seed=7)
    gpu = [p for p in made if p.gpus]
    assert abs(1 - len(gpu) / len(made) - 0.2) < 0.06
    assert abs(sum(p.gpus == 1 and p.milli < 1000 for p in gpu) / len(gpu) - 0.6) < 0.07
    assert abs(sum(p.gpus > 1 for p in gpu) / len(gpu) - 0.1) < 0.05
    assert abs(sum(bool(p.spec) for p in gpu) / len(gpu) - 0.3) < 0.07
    shapes = {(p.cpu, p.mem, p.gpus, p.milli, p.spec) for p in pods}
    assert all(
        (p.cpu, p.mem, p.gpus, p.milli, p.spec) in shapes for p in made
    )  # drawn, not made up
    assert len({p.name for p in made}) == len(made)


def test_constrained_tasks_come_from_the_second_list_when_the_default_names_no_model() -> None:
    mixes = load("openb_mixes")
    replay = load("openb_replay")
    plain = [dataclasses.replace(p, spec=()) for p in default_like()]
    pinned = [replay.Pod(f"s{i:04d}", 2000, 4000, 1, 1000, ("G2",)) for i in range(50)]
    mix = mixes.Mix(sharing=0.3, multi=0.1, cpu_only=0.1, constrained=0.2)
    with pytest.raises(SystemExit, match="no model-constrained"):
        mixes.sample(plain, mix, seed=3)  # asked for, none to draw: an error, not a quiet 0%
    pinned += [
        replay.Pod(f"t{i:04d}", 2000, 4000, g, m, ("T4",))
        for i, (g, m) in enumerate([(1, 500), (4, 1000)] * 20)
    ]
    made = mixes.sample(plain, mix, seed=3, constrained_from=pinned)
    gpu = [p for p in made if p.gpus]
    assert abs(sum(bool(p.spec) for p in gpu) / len(gpu) - 0.2) < 0.06
    assert {p.name.split("-")[0][0] for p in made if p.spec} <= {"s", "t"}
    unconstrained = mixes.Mix(sharing=0.3, multi=0.1, cpu_only=0.1, constrained=0.0)
    assert not any(p.spec for p in mixes.sample(plain, unconstrained, seed=3))


def test_impossible_mixes_are_refused() -> None:
    mixes = load("openb_mixes")
    with pytest.raises(SystemExit, match="past 100%"):
        mixes.sample(default_like(), mixes.Mix(0.7, 0.5, 0.0, 0.0), seed=1)


def test_the_sets_share_no_mix_and_no_seed_and_every_mix_is_valid() -> None:
    """Choices are made on one set and reported on others: no list may be in two of them."""
    mixes = load("openb_mixes")
    seen_mixes: set[object] = set()
    seen_seeds: set[int] = set()
    for name, (grid, seeds) in mixes.SETS.items():
        assert not seen_mixes & set(grid), name
        assert not seen_seeds & set(seeds), name
        assert all(m.sharing + m.multi <= 1.0 for m in grid), name
        seen_mixes |= set(grid)
        seen_seeds |= set(seeds)
