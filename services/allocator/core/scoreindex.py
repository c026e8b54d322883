"""The nodes a request shape fits, kept in score order between decisions, so that a policy
that scores every node (fragmentation, best-fit) finds its best without asking each of them
again: it catches up on the nodes touched since it last looked (the ledger's and the
signals' change logs, core/state.py: ChangeLog) and judges only those, and the nodes it has
never judged. What it answers is what a scan of the same nodes would: the highest score,
ties to the lexically smallest name, among the live nodes asked about."""

from __future__ import annotations

from bisect import bisect_left, insort
from collections.abc import Callable, Collection, Iterable

from services.allocator.core.fit import NodeFit, Reason
from services.allocator.core.state import LogMark

Judged = tuple[float, NodeFit] | Reason
"""A node's answer for a request: its score and fit, or why it does not fit."""

Best = tuple[str, float, NodeFit]

BULK = 64
"""More new fits than this at once (a first search, a new mix) are sorted in, not inserted."""


class ScoreIndex:
    """For one request shape under one bound policy (a FitMemo judge table's key): every node
    judged at its current generation, the fitting ones ordered by score. Mutable, owned by
    the memo like the tables it sits beside; it changes what a decision costs, never what it
    answers."""

    __slots__ = ("_complete", "_entry", "_judged", "_marks", "_ordered", "_pending")

    def __init__(self) -> None:
        # (-score, name, fit), best first: a sorted list, whose insertion moves pointers
        # (microseconds at 50,000 nodes) where a tree would allocate per entry.
        self._ordered: list[tuple[float, str, NodeFit]] = []
        self._entry: dict[str, tuple[float, str, NodeFit]] = {}
        self._judged: set[str] = set()
        self._pending: set[str] = set()
        """Touched since judged: what a search of every node judges again."""
        self._marks: tuple[LogMark, LogMark] | None = None
        self._complete = False
        """Every node of the state is judged or pending (a search with no candidates did it)."""

    def catch_up(
        self,
        marks: tuple[LogMark, LogMark],
        since: Callable[[tuple[LogMark, LogMark]], Iterable[str] | None],
    ) -> None:
        """Forget the answers of the nodes touched since the marks it last caught up to (every
        answer when ``since`` cannot say), and take the new marks."""
        if self._marks == marks:
            return
        changed = since(self._marks) if self._marks is not None else None
        if changed is None:
            self._ordered.clear()
            self._entry.clear()
            self._judged.clear()
            self._pending.clear()
            self._complete = False
        else:
            for name in changed:
                self._drop(name)
        self._marks = marks

    def best(
        self,
        names: Collection[str] | None,
        every: Callable[[], Iterable[str]],
        judge: Callable[[str], Judged | None],
        live: Callable[[str], bool],
    ) -> Best | None:
        """The best live fit among ``names`` (None: every node, ``every``), judging first the
        ones not judged at their current generation (``judge``: None for a name without a
        record, which stays unjudged); None when none of them fits now."""
        if names is None:
            if not self._complete:
                self._judge_all(every(), judge)
                self._complete = True
            elif self._pending:
                self._judge_all(list(self._pending), judge)
        elif isinstance(names, (set, frozenset)):
            self._judge_all(names - self._judged, judge)
        else:
            self._judge_all(names, judge)
        for negative, name, fit in self._ordered:
            if (names is None or name in names) and live(name):
                return name, -negative, fit
        return None

    def _judge_all(self, names: Iterable[str], judge: Callable[[str], Judged | None]) -> None:
        entry, judged, pending = self._entry, self._judged, self._pending
        items = []
        for name in names:
            if name in judged:
                continue
            pending.discard(name)
            answer = judge(name)
            if answer is None:
                continue  # no record: a node that comes (back) is touched, so met again
            judged.add(name)
            if not isinstance(answer, Reason):
                item = (-answer[0], name, answer[1])
                entry[name] = item
                items.append(item)
        ordered = self._ordered
        if len(items) > BULK:
            ordered.extend(items)  # one sort, not an insertion each
            ordered.sort(key=_rank)
        else:
            for item in items:
                insort(ordered, item, key=_rank)

    def _drop(self, name: str) -> None:
        self._judged.discard(name)
        self._pending.add(name)
        item = self._entry.pop(name, None)
        if item is not None:
            ordered = self._ordered
            del ordered[bisect_left(ordered, _rank(item), key=_rank)]


def _rank(item: tuple[float, str, NodeFit]) -> tuple[float, str]:
    """The order: score, best first, then name (names are unique: never the fit)."""
    return item[0], item[1]
