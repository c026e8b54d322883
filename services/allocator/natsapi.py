"""The placement API over NATS micro: one typed handler per endpoint of
shared/schemas/placement.py, errors mapped to NATS service errors in one place."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from nats.aio.client import Client
from nats.micro import add_service
from nats.micro.request import Request
from nats.micro.service import Service

from services.allocator.allocator import Allocator
from shared import tracing
from shared.errors import HamiError, InvalidRequest
from shared.schemas.base import Endpoint, Rep, Req
from shared.schemas.placement import COMMIT, ENDPOINTS, PLACE, RELEASE, RENEW, RESERVE, STATUS

log = logging.getLogger("hami.allocator")


def endpoint(
    served: Endpoint[Req, Rep],
    handler: Callable[[Req], Awaitable[Rep]],
    max_payload: Callable[[], int] = lambda: 0,
) -> Callable[[Request], Awaitable[None]]:
    """Decode, call, encode, and map errors to NATS micro replies, in one place. A reply
    larger than the server takes (``max_payload``; 0: unknown) is answered with an error that
    says so, not dropped (the asker would see only the server's MaxPayloadError)."""

    async def handle(request: Request) -> None:
        with tracing.messaging_server(request.subject, request.headers, len(request.data)) as span:
            try:
                reply = served.replies.encode(await handler(served.requests.decode(request.data)))
                limit = max_payload()
                if limit and len(reply) > limit:
                    raise InvalidRequest(
                        f"the {served.name} reply is {len(reply):,} bytes, more than this NATS "
                        f"server's max_payload of {limit:,}: ask for less (status: one node) or "
                        "raise max_payload (deploy/ sets 8MB)"
                    )
            except HamiError as e:
                span.set_attribute("error.type", e.code)
                tracing.failed(span, str(e))
                await request.respond_error(e.code, str(e))
                return
            except Exception as e:
                log.exception("handler failed", extra={"subject": request.subject})
                span.set_attribute("error.type", type(e).__name__)
                tracing.failed(span, repr(e))
                await request.respond_error("internal", f"internal error: {e!r}")
                return
            await request.respond(reply)

    return handle


async def serve_api(nc: Client, allocator: Allocator) -> Service:
    """Every endpoint of the placement API, answered by ``allocator``; stop the service to end."""
    service = await add_service(
        nc, name="hami-allocator", version="0.1.0", description="HAMi placement API"
    )
    served: list[Endpoint[Any, Any]] = []

    async def serve_endpoint(
        api: Endpoint[Req, Rep], handler: Callable[[Req], Awaitable[Rep]]
    ) -> None:  # typed: a handler must take the endpoint's request and return its reply
        await service.add_endpoint(
            name=api.name,
            subject=api.subject,
            handler=endpoint(api, handler, lambda: nc.max_payload),
        )
        served.append(api)

    await serve_endpoint(PLACE, allocator.place_request)
    await serve_endpoint(RESERVE, allocator.reserve)
    await serve_endpoint(COMMIT, allocator.commit)
    await serve_endpoint(RENEW, allocator.renew)
    await serve_endpoint(RELEASE, allocator.release)
    await serve_endpoint(STATUS, allocator.status)
    assert set(served) == set(ENDPOINTS), "every endpoint of the API is served"
    return service
