"""Connecting to NATS and declaring the JetStream buckets and streams every service relies on."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any
from urllib.parse import urlsplit

from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig, RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import BadRequestError, BucketNotFoundError
from nats.js.kv import KeyValue

from shared.errors import Unavailable
from shared.natsauth import Credentials
from shared.schemas.events import EVENTS, EVENTS_STREAM
from shared.schemas.inventory import NODES_BUCKET
from shared.schemas.placement import ALLOCATIONS_BUCKET

log = logging.getLogger("hami.nats")


class _Client(Client):
    """nats-py's client, closing what a failed attempt left before each new one.

    nats-py 2.16 reuses one transport object across attempts, and a new attempt replaces its
    connection without closing the old. When a server accepts and then fails the handshake
    (a restarting or overloaded one), every such attempt leaked a socket until the garbage
    collector met it; in the tests, a ResourceWarning far from its cause."""

    async def _connect_to_server(self, s: Any) -> None:
        # Every caller reaches here with the previous connection already given up (a failed
        # first attempt, or a reconnect that closed it or whose attempt failed).
        previous: Any = self._transport
        if previous:
            previous.close()
            with contextlib.suppress(Exception):
                await previous.wait_closed()
        await super()._connect_to_server(s)


async def connect(
    url: str,
    name: str,
    *,
    connect_timeout_s: float = 3.0,
    reconnect: bool = True,
    credentials: Credentials | None = None,
) -> Client:
    """Connect, or raise Unavailable with what to do. With ``reconnect`` the client keeps
    trying forever after a first success (a restarted local NATS comes back)."""

    async def on_error(e: Exception) -> None:
        log.warning("nats error", extra={"client": name, "error": repr(e)})

    options: dict[str, Any] = {
        "name": name,
        "connect_timeout": connect_timeout_s,
        "allow_reconnect": reconnect,
        "max_reconnect_attempts": -1 if reconnect else 0,
        "reconnect_time_wait": 0.5,
        "error_cb": on_error,
    }
    if credentials is not None:
        options["user"], options["password"] = credentials.user, credentials.password
    unreachable = Unavailable(
        f"cannot reach NATS at {url}: start HAMi with `hami up` or pass --nats URL"
    )
    # nats-py keeps retrying a refused first connection; a plain TCP probe answers at once.
    if not await _accepts_tcp(url, connect_timeout_s):
        raise unreachable
    nc = _Client()
    try:
        await asyncio.wait_for(nc.connect(url, **options), 2 * connect_timeout_s)
    except Exception as e:  # nats raises several unrelated types for "cannot connect"
        with contextlib.suppress(Exception):  # a refused client still holds its socket
            await nc.close()
        if "authorization" in str(e).lower():
            raise Unavailable(
                f"NATS at {url} refused this client: it needs the credentials of a HAMi "
                "service or user (`hami up` keeps them in its state directory)"
            ) from e
        raise unreachable from e
    return nc


async def _accepts_tcp(url: str, timeout_s: float) -> bool:
    parsed = urlsplit(url if "://" in url else f"nats://{url}")
    try:
        _, writer = await asyncio.wait_for(
            asyncio.open_connection(parsed.hostname or "127.0.0.1", parsed.port or 4222), timeout_s
        )
    except (OSError, TimeoutError, ValueError):
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


async def ensure_kv(
    js: JetStreamContext, bucket: str, *, history: int = 1, create: bool = True, replicas: int = 1
) -> KeyValue:
    """The bucket, created if missing (``replicas`` copies: 3 on a 3-server NATS cluster, so
    losing a server loses nothing); a reader (``create`` False: it may not send a create at
    all) waits for its owner to create it."""
    waited = False
    while True:
        with contextlib.suppress(BucketNotFoundError):
            return await js.key_value(bucket)
        if create:
            break
        if not waited:
            log.info("waiting for the bucket to be created", extra={"bucket": bucket})
            waited = True
        await asyncio.sleep(0.5)
    try:
        return await js.create_key_value(
            KeyValueConfig(
                bucket=bucket, history=history, storage=StorageType.FILE, replicas=replicas
            )
        )
    except BadRequestError:
        # Exists with a different configuration (e.g. an operator changed history): use it.
        return await js.key_value(bucket)


async def nodes_bucket(js: JetStreamContext, *, create: bool = True, replicas: int = 1) -> KeyValue:
    return await ensure_kv(js, NODES_BUCKET, create=create, replicas=replicas)


async def allocations_bucket(
    js: JetStreamContext, *, create: bool = True, replicas: int = 1
) -> KeyValue:
    return await ensure_kv(js, ALLOCATIONS_BUCKET, create=create, replicas=replicas)


async def ensure_event_stream(js: JetStreamContext, *, replicas: int = 1) -> None:
    config = StreamConfig(
        name=EVENTS_STREAM,
        subjects=[f"{EVENTS}.>"],
        storage=StorageType.FILE,
        retention=RetentionPolicy.LIMITS,
        max_age=24 * 3600.0,
        duplicate_window=120.0,
        num_replicas=replicas,
    )
    try:
        await js.add_stream(config)
    except BadRequestError:
        await js.update_stream(config)
