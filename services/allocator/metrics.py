"""The allocator's own Prometheus series: decisions by outcome and policy, how long each took,
and the requests waiting. One registry per allocator (tests run several in a process)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

DECISION_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
"""Seconds: a decision at 1,000 nodes is ~2 ms, a durable write a few ms more."""


class AllocatorMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.decisions = Counter(
            "hami_allocator_decisions",
            "Placement requests answered, by outcome (placed, wait, never, error) and policy.",
            ("outcome", "node_policy", "gpu_policy"),
            registry=self.registry,
        )
        self.latency = Histogram(
            "hami_allocator_decision_seconds",
            "Time from a placement request to its answer, the durable write included.",
            ("node_policy", "gpu_policy"),
            buckets=DECISION_BUCKETS,
            registry=self.registry,
        )
        self.extender = Histogram(
            "hami_allocator_extender_call_seconds",
            "Time the extender took to answer a kube-scheduler call, by verb (filter, "
            "prioritize, bind): the body read and decoded, the answer encoded.",
            ("verb",),
            buckets=DECISION_BUCKETS,
            registry=self.registry,
        )
        self.waiting = Gauge(
            "hami_allocator_waiting_requests",
            "Requests told to wait that have not been placed since and still ask.",
            registry=self.registry,
        )

    def decided(
        self, outcome: str, node_policy: str, gpu_policy: str, seconds: float, waiting: int
    ) -> None:
        self.decisions.labels(outcome, node_policy, gpu_policy).inc()
        self.latency.labels(node_policy, gpu_policy).observe(seconds)
        self.waiting.set(waiting)
