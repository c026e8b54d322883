"""The nodes a request shape fits, kept in score order between decisions, so that a policy
that scores every node (fragmentation, best-fit) finds its best without asking each of them
again: it catches up on the nodes touched since it last looked (the ledger's and the
signals' change logs, core/state.py: ChangeLog) and judges only those, and the nodes it has
never judged. What it answers is what a scan of the same nodes would: the highest score,
ties to the lexically smallest name, among the live nodes asked about."""

from __future__ import annotations

from bisect import bisect_left, insort
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass

from services.allocator.core.fit import NodeFit, Reason
from services.allocator.core.policies import Takes
from services.allocator.core.state import LogMark

Judged = tuple[float, NodeFit] | Reason
"""A node's answer for a request: its score and fit, or why it does not fit."""

Best = tuple[str, float, NodeFit]


@dataclass(frozen=True, slots=True)
class Pricing:
    """The prices a decision adds to the remembered scores (policies.py: the node policy's
    ``takes`` and ``charge``, at its current prices). ``takes`` is None for a bound policy
    that never charges (no flexible container, or a policy without prices)."""

    takes: Callable[[str, NodeFit], Takes] | None = None
    charge: Callable[[Takes], float] = lambda takes: 0.0


NO_PRICING = Pricing()

BULK = 64
"""More new fits than this at once (a first search, a new mix) are sorted in, not inserted."""


class ScoreIndex:
    """For one request shape under one bound policy (a FitMemo judge table's key): every node
    judged at its current generation, the fitting ones ordered by score. Mutable, owned by
    the memo like the tables it sits beside; it changes what a decision costs, never what it
    answers.

    Prices are not remembered in a score (policies.py): the fitting nodes are grouped by what
    their fit takes that prices charge for, each group in the order of the score before
    prices. A charge is the same for a whole group, so new prices reorder the groups, never
    a group: the best is the best of the groups' firsts, each with its charge."""

    __slots__ = ("_complete", "_entry", "_groups", "_judged", "_marks", "_pending")

    def __init__(self) -> None:
        # Per group, (-score, name, fit), best first: a sorted list, whose insertion moves
        # pointers (microseconds at 50,000 nodes) where a tree would allocate per entry.
        self._groups: dict[Takes, list[tuple[float, str, NodeFit]]] = {}
        self._entry: dict[str, tuple[Takes, tuple[float, str, NodeFit]]] = {}
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
            self._groups.clear()
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
        pricing: Pricing = NO_PRICING,
    ) -> Best | None:
        """The best live fit among ``names`` (None: every node, ``every``), judging first the
        ones not judged at their current generation (``judge``: None for a name without a
        record, which stays unjudged), each scored with ``pricing``'s charge added; None when
        none of them fits now."""
        if names is None:
            if not self._complete:
                self._judge_all(every(), judge, pricing)
                self._complete = True
            elif self._pending:
                self._judge_all(list(self._pending), judge, pricing)
        elif isinstance(names, (set, frozenset)):
            self._judge_all(names - self._judged, judge, pricing)
        else:
            self._judge_all(names, judge, pricing)
        found: Best | None = None
        for taken, ordered in self._groups.items():
            for negative, name, fit in ordered:
                if (names is None or name in names) and live(name):
                    score = (-negative + pricing.charge(taken)) if taken else -negative
                    if found is None or score > found[1] or (score == found[1] and name < found[0]):
                        found = (name, score, fit)
                    break
        return found

    def _judge_all(
        self, names: Iterable[str], judge: Callable[[str], Judged | None], pricing: Pricing
    ) -> None:
        entry, judged, pending, takes = self._entry, self._judged, self._pending, pricing.takes
        items: dict[Takes, list[tuple[float, str, NodeFit]]] = {}
        for name in names:
            if name in judged:
                continue
            pending.discard(name)
            answer = judge(name)
            if answer is None:
                continue  # no record: a node that comes (back) is touched, so met again
            judged.add(name)
            if not isinstance(answer, Reason):
                taken = takes(name, answer[1]) if takes is not None else ()
                item = (-answer[0], name, answer[1])
                entry[name] = (taken, item)
                items.setdefault(taken, []).append(item)
        for taken, new in items.items():
            ordered = self._groups.setdefault(taken, [])
            if len(new) > BULK:
                ordered.extend(new)  # one sort, not an insertion each
                ordered.sort(key=_rank)
            else:
                for item in new:
                    insort(ordered, item, key=_rank)

    def _drop(self, name: str) -> None:
        self._judged.discard(name)
        self._pending.add(name)
        held = self._entry.pop(name, None)
        if held is not None:
            taken, item = held
            ordered = self._groups[taken]
            del ordered[bisect_left(ordered, _rank(item), key=_rank)]
            if not ordered:
                del self._groups[taken]


def _rank(item: tuple[float, str, NodeFit]) -> tuple[float, str]:
    """The order: score, best first, then name (names are unique: never the fit)."""
    return item[0], item[1]
