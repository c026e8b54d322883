"""AMD compute shares as CU masks: ROCm's syntax, shares that never overlap on a GPU, the
node's durable record of them (same CUs on a retried Allocate, ended allocations' CUs given
back when needed, an unreadable record fails closed)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.nodeagent.core.cumask import choose, cu_list, cus_for, hsa_cu_mask
from services.nodeagent.culedger import CuLedger
from shared.errors import InvalidRequest, Unavailable


def test_rocm_syntax() -> None:
    assert cu_list([0, 1, 2, 5, 7, 8]) == "0-2,5,7-8"
    assert hsa_cu_mask([(0, 1, 2), None, (10, 11)]) == "0:0-2;2:10-11"
    assert cus_for(25, 304) == 76 and cus_for(1, 50) == 1
    with pytest.raises(InvalidRequest, match="77 compute units asked, 76 of 304 free"):
        choose(304, range(228), 77, "GPU-x")


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(1, 100), min_size=1, max_size=12), st.sampled_from([60, 104, 304]))
def test_shares_the_allocator_lets_share_a_gpu_always_fit_apart(
    shares: list[int], total: int
) -> None:
    # The allocator keeps a GPU's compute shares at 100% at most; each gets its own CUs.
    fitting: list[int] = []
    for share in shares:
        if sum(fitting) + share <= 100:
            fitting.append(share)
    taken: list[int] = []
    for share in fitting:
        if len(taken) >= total:
            break  # more shares than CUs: one CU each at least is asked
        cus = choose(total, taken, min(cus_for(share, total), total - len(taken)), "g")
        assert not set(cus) & set(taken)
        taken.extend(cus)
    assert len(taken) == len(set(taken)) <= total


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)


def test_the_ledger_keeps_gives_back_and_fails_closed(tmp_path: Path) -> None:
    live = {"a1", "a2"}
    ledger = CuLedger(tmp_path / "amd" / "cu-masks.json", live.__contains__)
    [first] = run(ledger.masks_for("a1", "pod1_main", [("GPU-x", 304, 76)]))
    assert first == tuple(range(76))
    [second] = run(ledger.masks_for("a2", "pod2_main", [("GPU-x", 304, 152)]))
    assert second == tuple(range(76, 228))
    # A retried Allocate for the same container gets the same CUs; a restarted agent too.
    again = CuLedger(tmp_path / "amd" / "cu-masks.json", live.__contains__)
    assert run(again.masks_for("a1", "pod1_main", [("GPU-x", 304, 76)])) == [first]
    # No room: an allocation still live keeps its CUs.
    with pytest.raises(InvalidRequest, match="free"):
        run(again.masks_for("a3", "pod3_main", [("GPU-x", 304, 152)]))
    # Once a1 has ended, its CUs come back to the container that needs them.
    live.discard("a1")
    [third] = run(again.masks_for("a3", "pod3_main", [("GPU-x", 304, 152)]))
    assert set(third) == set(range(76)) | set(range(228, 304))
    assert not set(third) & set(second)
    # An unreadable record hands out nothing.
    (tmp_path / "amd" / "cu-masks.json").write_text("{not json")
    with pytest.raises(Unavailable, match="fix or remove it"):
        run(again.masks_for("a4", "pod4_main", [("GPU-x", 304, 10)]))
