"""Request/reply client for the allocator's placement API, used by `hami run`, `hami status`
and external schedulers."""

from __future__ import annotations

from nats.aio.client import Client
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout

from shared import tracing
from shared.errors import Unavailable, error_from_code
from shared.schemas.base import Endpoint, Rep, Req
from shared.schemas.placement import (
    COMMIT,
    PLACE,
    RELEASE,
    RENEW,
    RESERVE,
    STATUS,
    CommitReply,
    CommitRequest,
    PlaceReply,
    PlaceRequest,
    ReleaseReply,
    ReleaseRequest,
    RenewReply,
    RenewRequest,
    StatusReply,
    StatusRequest,
)

ERROR_HEADER = "Nats-Service-Error"
ERROR_CODE_HEADER = "Nats-Service-Error-Code"


class AllocatorClient:
    def __init__(self, nc: Client, *, timeout_s: float = 5.0) -> None:
        self._nc = nc
        self._timeout_s = timeout_s

    async def call(self, endpoint: Endpoint[Req, Rep], request: Req) -> Rep:
        """Any endpoint of the placement API (shared/schemas/placement.py's ENDPOINTS)."""
        subject = endpoint.subject
        data = endpoint.requests.encode(request)
        try:
            with tracing.messaging_client(subject, len(data)) as headers:
                msg = await self._nc.request(
                    subject, data, timeout=self._timeout_s, headers=headers or None
                )
        except NoRespondersError as e:
            raise Unavailable(f"no allocator answers on {subject}; is `hami up` running?") from e
        except NatsTimeout as e:
            raise Unavailable(
                f"the allocator did not answer on {subject} in {self._timeout_s}s"
            ) from e
        headers = msg.headers or {}
        if ERROR_CODE_HEADER in headers:
            raise error_from_code(headers[ERROR_CODE_HEADER], headers.get(ERROR_HEADER, "error"))
        return endpoint.replies.decode(msg.data)

    async def place(self, request: PlaceRequest) -> PlaceReply:
        return await self.call(PLACE, request)

    async def reserve(self, request: PlaceRequest) -> PlaceReply:
        return await self.call(RESERVE, request)

    async def commit(
        self, allocation_id: str, lease_ttl_s: float | None = None, secret: str | None = None
    ) -> CommitReply:
        request = CommitRequest(
            allocation_id=allocation_id, lease_ttl_s=lease_ttl_s, holder_secret=secret
        )
        return await self.call(COMMIT, request)

    async def renew(self, allocation_id: str, secret: str | None = None) -> RenewReply:
        return await self.call(
            RENEW, RenewRequest(allocation_id=allocation_id, holder_secret=secret)
        )

    async def release(
        self, allocation_id: str, reason: str = "released", secret: str | None = None
    ) -> ReleaseReply:
        request = ReleaseRequest(allocation_id=allocation_id, reason=reason, holder_secret=secret)
        return await self.call(RELEASE, request)

    async def status(self, node: str | None = None, *, waiting_only: bool = False) -> StatusReply:
        return await self.call(STATUS, StatusRequest(node=node, waiting_only=waiting_only))
