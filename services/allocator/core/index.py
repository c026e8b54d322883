"""Nodes ordered by load, kept up to date one node at a time, so a decision can look at the
most (binpack) or least (spread) loaded nodes first and stop after a few that fit, instead of
scoring every node in the cluster."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from immutables import Map

STEPS = 100
"""Buckets per unit of load: nodes within 1% of each other share a bucket (kept in name order)."""


@dataclass(frozen=True, slots=True)
class LoadIndex:
    bucket_of: Map[str, int] = field(default_factory=Map)
    members: Map[int, tuple[str, ...]] = field(default_factory=Map)

    def without(self, node: str) -> LoadIndex:
        bucket = self.bucket_of.get(node)
        if bucket is None:
            return self
        rest = tuple(n for n in self.members[bucket] if n != node)
        members = self.members.set(bucket, rest) if rest else self.members.delete(bucket)
        return LoadIndex(self.bucket_of.delete(node), members)

    def with_load(self, node: str, load: float) -> LoadIndex:
        bucket = int(load * STEPS)
        if self.bucket_of.get(node) == bucket:
            return self
        index = self.without(node)
        peers = index.members.get(bucket, ())
        return LoadIndex(
            index.bucket_of.set(node, bucket),
            index.members.set(bucket, tuple(sorted((*peers, node)))),
        )

    def ordered(self, *, most_loaded_first: bool) -> Iterator[str]:
        for bucket in sorted(self.members.keys(), reverse=most_loaded_first):
            yield from self.members[bucket]
