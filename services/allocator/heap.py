"""The allocator holds the whole cluster in memory as many small, long-lived, immutable objects
(a persistent map node per change, a record per allocation): at 50,000 nodes, hundreds of
thousands. CPython's cyclic collector would scan that heap again and again as it grows while
the state is built and restored; measured (benchmarks/core_scaling.py, docs/benchmarks.md) that
is a fifth to a third of building and restoring and half the decision p99. The collector stays
on (cycles do happen: exceptions, frames); it only runs less often in the young generation."""

from __future__ import annotations

import gc

YOUNG_THRESHOLD = 50_000
"""Allocations minus deallocations between young collections (CPython's default: 700)."""


def tune_for_a_large_heap() -> None:
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, old)
