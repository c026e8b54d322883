"""Compute shares on AMD GPUs as CU masks: each container's share of a GPU is a set of compute
units of its own, disjoint from its neighbours', written in ROCm's `HSA_CU_MASK` syntax
(`<gpu>:<cu list>[;<gpu>:<cu list>]`, GPUs numbered as the container sees them; ROCm's
*Setting the number of compute units*). Pure functions; the node's record of who holds which
CUs is services/nodeagent/culedger.py."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from shared.errors import InvalidRequest


def cus_for(cores_percent: int, total: int) -> int:
    """The CUs a share of ``cores_percent`` gets: rounded down (the shares the allocator lets
    share a GPU sum to at most 100%, so their CUs always fit), at least one."""
    return max(1, cores_percent * total // 100)


def choose(total: int, taken: Iterable[int], need: int, device: str) -> tuple[int, ...]:
    """The lowest ``need`` CUs not ``taken``; InvalidRequest when fewer are free."""
    held = set(taken)
    free = [cu for cu in range(total) if cu not in held]
    if len(free) < need:
        raise InvalidRequest(
            f"device {device}: {need} compute units asked, {len(free)} of {total} free"
        )
    return tuple(free[:need])


def cu_list(cus: Iterable[int]) -> str:
    """`0-75,100-120`: runs of consecutive CUs."""
    runs: list[list[int]] = []
    for cu in sorted(set(cus)):
        if runs and cu == runs[-1][1] + 1:
            runs[-1][1] = cu
        else:
            runs.append([cu, cu])
    return ",".join(f"{a}-{b}" if a != b else str(a) for a, b in runs)


def hsa_cu_mask(per_visible_gpu: Sequence[tuple[int, ...] | None]) -> str:
    """The variable for the container's GPUs in order; a GPU without a mask (a whole one) is
    left out (unlisted GPUs keep every CU)."""
    return ";".join(
        f"{i}:{cu_list(cus)}" for i, cus in enumerate(per_visible_gpu) if cus is not None
    )
