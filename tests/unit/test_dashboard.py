"""The Grafana dashboard deploy/ ships queries only metrics the services export: a renamed or
dropped series breaks this test, not an operator's panel."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

from services.telemetry.core import DESCRIPTIONS

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


def test_every_metric_a_dashboard_queries_is_exported() -> None:
    boards = sorted(DASHBOARDS.glob("**/*.json"))
    assert boards, "no dashboard found"
    for board in boards:
        queries = list(expressions(json.loads(board.read_text())))
        assert queries, f"{board.name}: no queries"
        names = {m for q in queries for m in re.findall(r"\bhami_[a-z0-9_]+\b", q)}
        assert names, f"{board.name}: queries name no HAMi metric"
        unknown = sorted(names - set(DESCRIPTIONS))
        assert not unknown, f"{board.name} queries metrics nobody exports: {unknown}"
