"""The ledger's change log says exactly which nodes were touched since a mark, or that it
cannot say: never a wrong list (a score index built on it would answer stale)."""

from __future__ import annotations

from services.allocator.core import state as state_module
from services.allocator.core.state import ChangeLog, ClusterState


def test_says_what_was_touched_since_a_mark_of_its_own_past() -> None:
    s0 = ClusterState().touched("a")
    mark = s0.changes.mark
    s1 = s0.touched("b").touched("a").touched("c")
    assert s1.changes.since(mark) == ["b", "a", "c"]
    assert s1.changes.since(s1.changes.mark) == []


def test_an_empty_log_is_its_own_past_only() -> None:
    empty = ClusterState()
    later = empty.touched("a")
    assert later.changes.since(empty.changes.mark) == ["a"]
    # Another state started empty apart from this one: its mark is not this log's past.
    assert later.changes.since(ClusterState().changes.mark) is None


def test_cannot_say_for_another_lineage_or_a_later_mark() -> None:
    base = ClusterState().touched("a")
    left, right = base.touched("b"), base.touched("c")
    assert right.changes.since(left.changes.mark) is None  # same position, other touch
    assert base.changes.since(left.changes.mark) is None  # a mark from its future


def test_cannot_say_past_what_it_keeps() -> None:
    log = ChangeLog()
    first = log.logged("a", state_module.next_generation())
    mark = first.mark
    for i in range(state_module.CHANGES_KEPT):
        first = first.logged(f"n{i}", state_module.next_generation())
    assert len(first.entries) == state_module.CHANGES_KEPT
    assert first.since(mark) is None  # its entry is gone: the answer would be incomplete
    recent = first.entries[first.last - 2]
    kept = state_module.CHANGES_KEPT
    assert first.since((first.last - 2, recent[0])) == [f"n{i}" for i in (kept - 2, kept - 1)]


def test_the_log_is_not_part_of_state_equality() -> None:
    assert ClusterState() == ClusterState()
