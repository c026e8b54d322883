"""The extender's HTTP server, on every allocator, leader or not.

kube-scheduler runs beside each allocator (one pod) and calls its extender over loopback, but
kube-scheduler's leader and the allocator's leader are elected apart: the kube-scheduler that
leads may sit beside an allocator that stands by. So each allocator serves the HTTP API from
its start; while it leads it answers itself, and otherwise it forwards the call over NATS to
the leader (`hami.v1.extender.call`), which answers exactly as its own HTTP API would."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import msgspec
from aiohttp import web
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout

from services.allocator.extender import MAX_BODY, Extender, Verb, answer
from shared.errors import InvalidRequest
from shared.schemas.extender import EXTENDER_CALL, ExtenderAnswer, ExtenderCall

log = logging.getLogger("hami.extender")
FORWARD_TIMEOUT_S = 8.0
"""Below kube-scheduler's httpTimeout (10 s in deploy/): it hears our 503, not its own timeout."""
QUEUE = "hami-allocator-extender"


class ExtenderRouter:
    def __init__(self, nc: Client, timeout_s: float = FORWARD_TIMEOUT_S) -> None:
        self.nc = nc
        self.timeout_s = timeout_s
        self.local: Extender | None = None
        """Set while this allocator leads."""
        self.port: int | None = None
        """Where the HTTP API listens, once it does."""

    async def call(self, verb: Verb, body: bytes) -> tuple[int, bytes]:
        if self.local is not None:
            return await answer(self.local, verb, body)
        request = EXTENDER_CALL.requests.encode(ExtenderCall(verb=verb, body=body))  # type: ignore[arg-type]
        try:
            reply = await self.nc.request(EXTENDER_CALL.subject, request, timeout=self.timeout_s)
        except (TimeoutError, NatsTimeout, NoRespondersError) as e:
            log.warning(
                "no leader answered a forwarded call", extra={"verb": verb, "error": repr(e)}
            )
            return 503, b'{"Error": "no allocator leads yet; retry"}'
        try:
            forwarded = EXTENDER_CALL.replies.decode(reply.data)
        except InvalidRequest as e:
            return 502, msgspec.json.encode({"Error": f"the leader answered badly: {e}"})
        return forwarded.status, forwarded.body

    def healthy(self) -> bool:
        """Ready to answer: leading, or able to reach the leader."""
        return self.local is not None or self.nc.is_connected


def application(
    route: Callable[[Verb, bytes], Awaitable[tuple[int, bytes]]], healthy: Callable[[], bool]
) -> web.Application:
    def verb(name: Verb) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def handle(request: web.Request) -> web.Response:
            status, body = await route(name, await request.read())
            return web.Response(status=status, body=body, content_type="application/json")

        return handle

    async def health(_: web.Request) -> web.Response:
        return web.Response(status=200 if healthy() else 503, text="ok" if healthy() else "no")

    app = web.Application(client_max_size=MAX_BODY)
    for name in ("filter", "prioritize", "bind"):
        app.router.add_post(f"/{name}", verb(name))
    app.router.add_get("/healthz", health)
    return app


async def answer_forwarded(nc: Client, extender: Extender, stop: asyncio.Event) -> None:
    """While this allocator leads: answer the calls standbys forward."""

    async def on_call(msg: Msg) -> None:
        try:
            call = EXTENDER_CALL.requests.decode(msg.data)
            status, body = await answer(extender, call.verb, call.body)
        except InvalidRequest as e:
            status, body = 400, msgspec.json.encode({"Error": str(e)})
        await msg.respond(EXTENDER_CALL.replies.encode(ExtenderAnswer(status=status, body=body)))

    subscription = await nc.subscribe(EXTENDER_CALL.subject, queue=QUEUE, cb=on_call)
    try:
        await stop.wait()
    finally:
        await subscription.unsubscribe()


def local_application(extender: Extender) -> web.Application:
    """The HTTP API answered by ``extender`` alone (tests, benchmarks)."""

    async def route(verb: Verb, body: bytes) -> tuple[int, bytes]:
        return await answer(extender, verb, body)

    return application(route, lambda: True)
