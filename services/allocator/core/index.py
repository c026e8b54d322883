"""Nodes ordered by load, kept up to date one node at a time, so a decision can look at the
most (binpack) or least (spread) loaded nodes first and stop after a few that fit, instead of
scoring every node in the cluster.

A bucket holds its nodes in name order as a tuple of sorted chunks of at most 2 x CHUNK names:
moving one node touches one chunk and copies the bucket's tuple of chunk references, so an
update costs O(CHUNK + bucket size / CHUNK), not O(bucket size) (every node of an empty
cluster shares one bucket)."""

from __future__ import annotations

import bisect
import heapq
from collections.abc import Iterator
from dataclasses import dataclass, field

from immutables import Map

STEPS = 100
"""Buckets per unit of load: nodes within 1% of each other share a bucket (kept in name order)."""
CHUNK = 64

Chunks = tuple[tuple[str, ...], ...]


def _last(chunk: tuple[str, ...]) -> str:
    return chunk[-1]


def _insert(chunks: Chunks, node: str) -> Chunks:
    i = min(bisect.bisect_left(chunks, node, key=_last), len(chunks) - 1) if chunks else 0
    if not chunks:
        return ((node,),)
    chunk = chunks[i]
    at = bisect.bisect_left(chunk, node)
    grown = (*chunk[:at], node, *chunk[at:])
    if len(grown) > 2 * CHUNK:
        return (*chunks[:i], grown[:CHUNK], grown[CHUNK:], *chunks[i + 1 :])
    return (*chunks[:i], grown, *chunks[i + 1 :])


def _remove(chunks: Chunks, node: str) -> Chunks:
    i = bisect.bisect_left(chunks, node, key=_last)
    chunk = chunks[i]
    at = bisect.bisect_left(chunk, node)
    assert chunk[at] == node, "the index lost track of a node"
    rest = chunk[:at] + chunk[at + 1 :]
    return (*chunks[:i], rest, *chunks[i + 1 :]) if rest else (*chunks[:i], *chunks[i + 1 :])


@dataclass(frozen=True, slots=True)
class LoadIndex:
    bucket_of: Map[str, int] = field(default_factory=Map)
    members: Map[int, Chunks] = field(default_factory=Map)

    def without(self, node: str) -> LoadIndex:
        bucket = self.bucket_of.get(node)
        if bucket is None:
            return self
        rest = _remove(self.members[bucket], node)
        members = self.members.set(bucket, rest) if rest else self.members.delete(bucket)
        return LoadIndex(self.bucket_of.delete(node), members)

    def with_load(self, node: str, load: float) -> LoadIndex:
        bucket = int(load * STEPS)
        if self.bucket_of.get(node) == bucket:
            return self
        index = self.without(node)
        return LoadIndex(
            index.bucket_of.set(node, bucket),
            index.members.set(bucket, _insert(index.members.get(bucket, ()), node)),
        )

    def ordered(self, *, most_loaded_first: bool) -> Iterator[str]:
        for bucket in sorted(self.members.keys(), reverse=most_loaded_first):
            for chunk in self.members[bucket]:
                yield from chunk

    def keyed(self, *, most_loaded_first: bool) -> Iterator[tuple[int, str]]:
        """The same walk, each name with its place in it (for merging walks of indexes)."""
        direction = -1 if most_loaded_first else 1
        for bucket in sorted(self.members.keys(), reverse=most_loaded_first):
            for chunk in self.members[bucket]:
                for name in chunk:
                    yield direction * bucket, name


def merged(indexes: list[LoadIndex], *, most_loaded_first: bool) -> Iterator[str]:
    """The walk of several indexes as one (a name in more than one comes once)."""
    if len(indexes) == 1:
        yield from indexes[0].ordered(most_loaded_first=most_loaded_first)
        return
    last = None
    walks = [i.keyed(most_loaded_first=most_loaded_first) for i in indexes]
    for place in heapq.merge(*walks):
        if place != last:
            yield place[1]
        last = place
