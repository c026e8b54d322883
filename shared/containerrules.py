"""The rules a container's device requests follow, one set for every service that reads pods:
the webhook refuses the pod with the first problem, the allocator refuses the placement with it.
Problems are typed (a code, where, which resource, the value) and each shell says them in its
own protocol; `str(problem)` is the sentence users see."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, Literal

import msgspec

from shared.podresources import container_resources, whole_quantity
from shared.resources import ResourceNames

ProblemCode = Literal[
    "not_whole",
    "negative",
    "too_many_devices",
    "cores_range",
    "percent_range",
    "memory_and_percentage",
    "memory_too_large",
    "memory_zero",
    "priority_range",
]


class Limits(msgspec.Struct, frozen=True, kw_only=True):
    max_devices_per_container: int = 16
    """The most devices one container may ask for (the allocator's limit)."""
    max_device_memory_mib: int | None = None
    """The largest device memory known to the cluster; None: not checked here."""


class Problem(msgspec.Struct, frozen=True, kw_only=True):
    code: ProblemCode
    where: str
    """`container 'main'`, `initContainer 0`."""
    resource: str
    value: object
    limit: int | None = None
    hint: str = ""
    """Said after the sentence (the unit a number is read in)."""

    def __str__(self) -> str:  # one sentence per code
        w, r, v = self.where, self.resource, self.value
        if self.code == "not_whole":
            return f"{w}: {r}={v!r} must be a whole number{self.hint}"
        if self.code == "negative":
            return f"{w}: {r}={v} must not be negative"
        if self.code == "too_many_devices":
            return f"{w}: {r}={v} is more devices than one container may have ({self.limit})"
        if self.code == "cores_range":
            return f"{w}: {r}={v} must be 0..100 (percent of one device; 100 takes it whole)"
        if self.code == "percent_range":
            return f"{w}: {r}={v} must be 1..100"
        if self.code == "memory_and_percentage":
            return f"{w}: give {r} or {v}, not both"
        if self.code == "memory_too_large":
            return f"{w}: {r}={v} MiB exceeds the largest device in the cluster ({self.limit} MiB)"
        if self.code == "memory_zero":
            return f"{w}: {r}=0 must be at least 1 MiB"
        return f"{w}: {r}={v} must be 0 (high) or 1 (low)"


def requested(
    container: Mapping[str, Any], where: str, names: ResourceNames
) -> tuple[dict[str, int], Problem | None]:
    """The container's managed quantities as whole numbers, or the first that is not one."""
    values: dict[str, int] = {}
    raw_values = container_resources(container)
    for name in (*names.managed, names.priority):
        raw = raw_values.get(name)
        if raw is None:
            continue
        number = whole_quantity(raw)
        if number is None:
            hint = " of MiB, e.g. 3000" if name == names.memory else ""
            return values, Problem(
                code="not_whole", where=where, resource=name, value=raw, hint=hint
            )
        if number < 0:
            return values, Problem(code="negative", where=where, resource=name, value=number)
        values[name] = number
    return values, None


def problems(
    container: Mapping[str, Any], where: str, names: ResourceNames, limits: Limits
) -> Iterator[Problem]:
    """Every rule the container breaks, in the order users fix them."""
    values, unreadable = requested(container, where, names)
    if unreadable is not None:
        yield unreadable
        return
    count = values.get(names.count, 0)
    if count > limits.max_devices_per_container:
        yield Problem(
            code="too_many_devices",
            where=where,
            resource=names.count,
            value=count,
            limit=limits.max_devices_per_container,
        )
    if values.get(names.cores, 0) > 100:
        yield Problem(
            code="cores_range", where=where, resource=names.cores, value=values[names.cores]
        )
    percent = values.get(names.memory_percentage)
    if percent is not None and not 1 <= percent <= 100:
        yield Problem(
            code="percent_range", where=where, resource=names.memory_percentage, value=percent
        )
    if names.memory in values and names.memory_percentage in values:
        yield Problem(
            code="memory_and_percentage",
            where=where,
            resource=names.memory,
            value=names.memory_percentage,
        )
    memory = values.get(names.memory)
    if (
        memory is not None
        and limits.max_device_memory_mib is not None
        and memory > limits.max_device_memory_mib
    ):
        yield Problem(
            code="memory_too_large",
            where=where,
            resource=names.memory,
            value=memory,
            limit=limits.max_device_memory_mib,
        )
    if memory == 0:
        yield Problem(code="memory_zero", where=where, resource=names.memory, value=0)
    priority = values.get(names.priority)
    if priority is not None and priority not in (0, 1):
        yield Problem(code="priority_range", where=where, resource=names.priority, value=priority)


def first_problem(
    container: Mapping[str, Any], where: str, names: ResourceNames, limits: Limits
) -> Problem | None:
    return next(problems(container, where, names, limits), None)
