"""The webhook's Prometheus series: admissions by review and verdict, served at `/metrics` on
the webhook's own port (the scrape speaks HTTPS to it, as the API server does)."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, generate_latest


class WebhookMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.admissions = Counter(
            "hami_webhook_admissions",
            "Admission reviews answered, by review (mutate, validate) and verdict (patched, "
            "allowed, denied, malformed).",
            ("review", "verdict"),
            registry=self.registry,
        )

    def admitted(self, review: str, status: int, payload: dict[str, Any]) -> str:
        """Count one answer; returns its verdict."""
        response = payload.get("response") if status == 200 else None
        if not isinstance(response, dict):
            verdict = "malformed"
        elif not response.get("allowed"):
            verdict = "denied"
        elif response.get("patch"):
            verdict = "patched"
        else:
            verdict = "allowed"
        self.admissions.labels(
            review if review in ("mutate", "validate") else "other", verdict
        ).inc()
        return verdict

    async def handler(self, _: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(self.registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )
