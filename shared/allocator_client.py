"""Request/reply client for the allocator's placement API, used by `hami run`, `hami status`
and external schedulers."""

from __future__ import annotations

from nats.aio.client import Client
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout

from shared.errors import Unavailable, error_from_code
from shared.schemas.base import Codec, T
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
    commit_reply_codec,
    commit_request_codec,
    place_reply_codec,
    place_request_codec,
    release_reply_codec,
    release_request_codec,
    renew_reply_codec,
    renew_request_codec,
    status_reply_codec,
    status_request_codec,
)

ERROR_HEADER = "Nats-Service-Error"
ERROR_CODE_HEADER = "Nats-Service-Error-Code"


class AllocatorClient:
    def __init__(self, nc: Client, *, timeout_s: float = 5.0) -> None:
        self._nc = nc
        self._timeout_s = timeout_s

    async def _call(self, subject: str, payload: bytes, reply_codec: Codec[T]) -> T:
        try:
            msg = await self._nc.request(subject, payload, timeout=self._timeout_s)
        except NoRespondersError as e:
            raise Unavailable(f"no allocator answers on {subject}; is `hami up` running?") from e
        except NatsTimeout as e:
            raise Unavailable(
                f"the allocator did not answer on {subject} in {self._timeout_s}s"
            ) from e
        headers = msg.headers or {}
        if ERROR_CODE_HEADER in headers:
            raise error_from_code(headers[ERROR_CODE_HEADER], headers.get(ERROR_HEADER, "error"))
        return reply_codec.decode(msg.data)

    async def place(self, request: PlaceRequest) -> PlaceReply:
        return await self._call(PLACE, place_request_codec.encode(request), place_reply_codec)

    async def reserve(self, request: PlaceRequest) -> PlaceReply:
        return await self._call(RESERVE, place_request_codec.encode(request), place_reply_codec)

    async def commit(
        self, allocation_id: str, lease_ttl_s: float | None = None, secret: str | None = None
    ) -> CommitReply:
        payload = commit_request_codec.encode(
            CommitRequest(
                allocation_id=allocation_id, lease_ttl_s=lease_ttl_s, holder_secret=secret
            )
        )
        return await self._call(COMMIT, payload, commit_reply_codec)

    async def renew(self, allocation_id: str, secret: str | None = None) -> RenewReply:
        payload = renew_request_codec.encode(
            RenewRequest(allocation_id=allocation_id, holder_secret=secret)
        )
        return await self._call(RENEW, payload, renew_reply_codec)

    async def release(
        self, allocation_id: str, reason: str = "released", secret: str | None = None
    ) -> ReleaseReply:
        payload = release_request_codec.encode(
            ReleaseRequest(allocation_id=allocation_id, reason=reason, holder_secret=secret)
        )
        return await self._call(RELEASE, payload, release_reply_codec)

    async def status(self, node: str | None = None) -> StatusReply:
        return await self._call(
            STATUS, status_request_codec.encode(StatusRequest(node=node)), status_reply_codec
        )
