"""The Grafana dashboard deploy/ ships queries only series the services really expose (their
Prometheus exposition, suffixes included): a renamed or dropped series breaks this test, not
an operator's panel. And it covers what operators asked to see."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

from prometheus_client.registry import CollectorRegistry

from services.allocator.metrics import AllocatorMetrics
from services.telemetry.core import DESCRIPTIONS, KINDS
from services.webhook.metrics import WebhookMetrics

DASHBOARDS = Path(__file__).resolve().parents[2] / "deploy" / "kustomize" / "components"


def expressions(node: object) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "expr" and isinstance(value, str):
                yield value
            else:
                yield from expressions(value)
    elif isinstance(node, list):
        for item in node:
            yield from expressions(item)


def every_exposed_name() -> set[str]:
    registry = CollectorRegistry()
    AllocatorMetrics(registry).decided("placed", "binpack", "spread", 0.001, 0)  # labelled: used
    allocator = {s.name for family in registry.collect() for s in family.samples}
    webhook = WebhookMetrics()
    webhook.admitted("mutate", 200, {"response": {"allowed": True}})
    hooks = {s.name for family in webhook.registry.collect() for s in family.samples}
    telemetry = {f"{n}_total" if KINDS.get(n) == "counter" else n for n in DESCRIPTIONS}
    return allocator | hooks | telemetry


def test_every_metric_a_dashboard_queries_is_exported() -> None:
    boards = [
        p for p in sorted(DASHBOARDS.glob("**/*.json")) if "panels" in json.loads(p.read_text())
    ]
    assert boards, "no dashboard found"
    known = every_exposed_name()
    for board in boards:
        queries = list(expressions(json.loads(board.read_text())))
        assert queries, f"{board.name}: no queries"
        names = {m for q in queries for m in re.findall(r"\bhami_[a-z0-9_]+\b", q)}
        assert names, f"{board.name}: queries name no HAMi metric"
        unknown = sorted(names - known)
        assert not unknown, f"{board.name} queries metrics nobody exports: {unknown}"


def test_the_dashboard_shows_the_cluster_gpus_sharing_containers_and_decisions() -> None:
    board = json.loads((DASHBOARDS / "monitoring" / "hami-gpus.json").read_text())
    rows = [p["title"] for p in board["panels"] if p["type"] == "row"]
    assert rows == [
        "Cluster overview",
        "GPUs per node",
        "Sharing per GPU",
        "Containers: usage against limit",
        "Scheduler decisions",
    ]
    queries = " ".join(expressions(board))
    for wanted in (
        "hami_vgpu_memory_used_bytes",
        "hami_vgpu_memory_limit_bytes",
        "hami_allocator_decisions_total",
        "hami_allocator_decision_seconds_bucket",
        "hami_webhook_admissions_total",
    ):
        assert wanted in queries, wanted
