"""Reading a container's resource quantities from a raw pod, for every service that reads pods
(the webhook validates them, the allocator turns them into requests)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from shared.quantity import parse_k8s_quantity


def container_resources(container: Mapping[str, Any]) -> dict[str, object]:
    """Every resource the container names, limits over requests (for extended resources
    Kubernetes requires them equal where both are given)."""
    resources = container.get("resources")
    if not isinstance(resources, Mapping):
        return {}
    values: dict[str, object] = {}
    for section in ("requests", "limits"):
        given = resources.get(section)
        if isinstance(given, Mapping):
            values.update(given)
    return values


def whole_quantity(value: object) -> int | None:
    """A whole-number quantity in any Kubernetes spelling (2000, "2k", "2e3"), else None.
    Negative numbers are returned as they are: the caller says why they are refused."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if not isinstance(value, str):
        return None
    try:
        number = parse_k8s_quantity(value)
    except ValueError:
        return None
    return int(number) if number.denominator == 1 else None
