"""The webhook's I/O shell: AdmissionReview v1 over HTTPS; certificates reload on change."""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import ssl
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import msgspec
from aiohttp import web
from opentelemetry.trace import SpanKind

from services.webhook.bootstrap import Bootstrap, ensure_certificate
from services.webhook.core.admission import Verdict, mutate, validate
from services.webhook.core.settings import WebhookSettings
from services.webhook.metrics import WebhookMetrics
from services.webhook.settings import ServeSettings as ServeSettings
from shared import tracing
from shared.errors import HamiError, Unavailable
from shared.kube.client import KubeClient
from shared.runloop import every

log = logging.getLogger("hami.webhook")
Decide = Callable[[Mapping[str, Any], WebhookSettings], Verdict]
"""mutate or validate (services/webhook/core/admission.py)."""
MAX_BODY = 3 * 1024 * 1024  # the API server's own request limit
_json = msgspec.json.Encoder()


def review_response(uid: str, verdict: Verdict) -> dict[str, Any]:
    response: dict[str, Any] = {"uid": uid, "allowed": verdict.allowed}
    if verdict.patch:
        response["patchType"] = "JSONPatch"
        response["patch"] = base64.b64encode(_json.encode(list(verdict.patch))).decode()
    if not verdict.allowed:
        response["status"] = {"code": 403, "reason": "Forbidden", "message": verdict.message}
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response}


def answer(body: bytes, decide: Decide, settings: WebhookSettings) -> tuple[int, dict[str, Any]]:
    """HTTP status and JSON for one AdmissionReview body; malformed input is a 400, not a crash."""
    status, payload, _ = review_answer(body, decide, settings)
    return status, payload


@dataclass(frozen=True, slots=True)
class Decided:
    uid: str
    verdict: Verdict
    dry_run: bool


def review_answer(
    body: bytes, decide: Decide, settings: WebhookSettings
) -> tuple[int, dict[str, Any], Decided | None]:
    """`answer`, and the decision it came from (None for a malformed review)."""
    try:
        review = msgspec.json.decode(body)
    except msgspec.DecodeError as e:
        return 400, {"error": f"body is not JSON: {e}"}, None
    except RecursionError:
        return 400, {"error": "body is nested too deeply"}, None
    request = review.get("request") if isinstance(review, dict) else None
    if not isinstance(request, dict) or not isinstance(request.get("uid"), str):
        return 400, {"error": "expected an AdmissionReview with request.uid"}, None
    if review.get("apiVersion") not in ("admission.k8s.io/v1", None):
        return 400, {"error": f"unsupported apiVersion {review.get('apiVersion')!r}; use v1"}, None
    try:
        verdict = decide(request, settings)
    except (TypeError, ValueError, AttributeError, KeyError, IndexError, RecursionError) as e:
        # A shape the core did not expect: refuse this review, keep serving the next.
        log.exception("admission request not understood", extra={"uid": request["uid"]})
        return 400, {"error": f"AdmissionReview not understood: {type(e).__name__}"}, None
    decided = Decided(request["uid"], verdict, request.get("dryRun") is True)
    return 200, review_response(request["uid"], verdict), decided


EnsureTemplates = Callable[[Sequence[Mapping[str, Any]]], Awaitable[None]]
"""Makes the ResourceClaimTemplates a DRA-mode pod names (side effects: none on dry run)."""


def application(
    settings: WebhookSettings,
    metrics: WebhookMetrics | None = None,
    ensure_templates: EnsureTemplates | None = None,
) -> web.Application:
    counted = metrics if metrics is not None else WebhookMetrics()

    async def with_templates(payload: dict[str, Any], decided: Decided | None) -> dict[str, Any]:
        if decided is None or not decided.verdict.templates or decided.dry_run:
            return payload
        try:
            if ensure_templates is None:
                raise Unavailable("this webhook has no Kubernetes client to make claim templates")
            await ensure_templates(decided.verdict.templates)
        except HamiError as e:
            # Fail closed: a pod naming a template that is not there would never start.
            log.warning("claim templates not made", extra={"uid": decided.uid, "error": str(e)})
            refused = Verdict(False, f"cannot make the pod's ResourceClaimTemplate ({e}); retry")
            return review_response(decided.uid, refused)
        return payload

    def route(decide: Decide) -> Callable[[web.Request], Any]:
        async def handle(request: web.Request) -> web.Response:
            body = await request.read()
            # The API server sends trace context when its tracing is on; else a trace starts here.
            with tracing.span(
                f"POST {request.path}",
                kind=SpanKind.SERVER,
                parent=tracing.extract(request.headers),
                attributes={"http.request.method": "POST", "http.route": request.path},
            ) as span:
                context = tracing.annotation_value()
                decider = partial(decide, trace_context=context) if decide is mutate else decide
                status, payload, decided = review_answer(body, decider, settings)
                payload = await with_templates(payload, decided)
                span.set_attribute("http.response.status_code", status)
                verdict = counted.admitted(request.path.strip("/"), status, payload)
                span.set_attribute("hami.verdict", verdict)
            if status != 200:
                log.warning("bad admission request", extra={"path": request.path, **payload})
            return web.Response(
                status=status, body=_json.encode(payload), content_type="application/json"
            )

        return handle

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application(client_max_size=MAX_BODY)
    app.router.add_post("/mutate", route(mutate))
    app.router.add_post("/validate", route(validate))
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", counted.handler)
    return app


class CertificateReloader:
    """Loads the pair into one SSLContext; new handshakes use whatever was loaded last."""

    def __init__(self, cert: Path, key: Path) -> None:
        self.cert, self.key = cert, key
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self._stamp = self._mtimes()
        self.context.load_cert_chain(cert, key)

    def _mtimes(self) -> tuple[float, float]:
        return os.stat(self.cert).st_mtime, os.stat(self.key).st_mtime

    async def check(self) -> None:
        stamp = self._mtimes()
        if stamp == self._stamp:
            return
        try:
            self.context.load_cert_chain(self.cert, self.key)
        except (ssl.SSLError, OSError) as e:  # half-written pair: keep the old one, try again
            log.warning("certificate reload failed", extra={"cert": self.cert, "error": repr(e)})
            return
        self._stamp = stamp
        log.info("certificate reloaded", extra={"cert": self.cert})


async def serve(
    settings: ServeSettings, stop: asyncio.Event, started: Callable[[int], None] | None = None
) -> None:
    cert, key = Path(settings.cert_file), Path(settings.key_file)
    if settings.tls_secret is not None:
        cert, key = await _bootstrapped_pair(settings)
    tls = CertificateReloader(cert, key)
    kube = await KubeClient.from_config(settings.kubeconfig) if settings.admission.dra else None
    made: set[tuple[str, str]] = set()

    async def ensure_templates(templates: Sequence[Mapping[str, Any]]) -> None:
        assert kube is not None
        for body in templates:
            where = (body["metadata"]["namespace"], body["metadata"]["name"])
            if where not in made:  # each shape once per namespace; a deleted one comes back
                await kube.ensure_claim_template(dict(body))
                made.add(where)

    runner = web.AppRunner(
        application(settings.admission, ensure_templates=ensure_templates if kube else None),
        access_log=None,
    )
    await runner.setup()
    site = web.TCPSite(runner, settings.host, settings.port, ssl_context=tls.context)
    await site.start()
    port = runner.addresses[0][1]
    log.info("webhook serving", extra={"address": f"{settings.host}:{port}"})
    if started is not None:
        started(port)
    try:
        await every(stop, settings.reload_interval_s, "certificate-reload", tls.check)
    finally:
        await runner.cleanup()
        if kube is not None:
            await kube.close()


async def _bootstrapped_pair(settings: ServeSettings) -> tuple[Path, Path]:
    assert settings.tls_secret is not None
    plan = Bootstrap(
        secret=settings.tls_secret,
        service=settings.service_name,
        configuration=settings.configuration_name,
    )
    kube = await KubeClient.from_config(settings.kubeconfig)
    try:
        return await ensure_certificate(kube, plan, Path(settings.tls_dir))
    finally:
        await kube.close()
