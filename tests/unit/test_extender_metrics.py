"""Every extender call is timed by verb, answered or refused: the share of kube-scheduler's
cycle spent in the extender is read from these (benchmarks/scheduling_throughput.py)."""

from __future__ import annotations

import msgspec

from services.allocator.extender import Extender, answer
from services.allocator.metrics import AllocatorMetrics
from tests.unit.test_extender_best_node import allocator, args


async def test_calls_are_timed_by_verb() -> None:
    metrics = AllocatorMetrics()
    extender = Extender(allocator("binpack"), None, metrics=metrics)
    body = msgspec.json.encode(args("15000"))
    for verb in ("filter", "filter", "prioritize"):
        status, _ = await answer(extender, verb, body)
        assert status == 200
    status, _ = await answer(extender, "filter", b"{not json")
    assert status == 400

    def count(verb: str) -> float | None:
        return metrics.registry.get_sample_value(
            "hami_allocator_extender_call_seconds_count", {"verb": verb}
        )

    assert (count("filter"), count("prioritize"), count("bind")) == (3.0, 1.0, None)
    total = metrics.registry.get_sample_value(
        "hami_allocator_extender_call_seconds_sum", {"verb": "filter"}
    )
    assert total is not None and total > 0
