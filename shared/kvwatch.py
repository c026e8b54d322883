"""Reading and following JetStream KV buckets, robust to NATS restarts."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from nats.errors import TimeoutError as NatsTimeout
from nats.js import JetStreamContext
from nats.js.api import DeliverPolicy
from nats.js.errors import NotFoundError
from nats.js.kv import KV_DEL, KV_PURGE, KeyValue

from shared.errors import Unavailable
from shared.runloop import raise_if_cancelling, sleep_or_stop

log = logging.getLogger("hami.kv")


async def snapshot(
    js: JetStreamContext, bucket: str, *, timeout_s: float = 5.0
) -> dict[str, bytes]:
    """Every live key's current value, complete: done once the reader has passed the last
    sequence the bucket's stream held after the reader existed (the reader goes in stream
    order, and a last value it skips is one that a later message replaced, which it reads).
    Not the reader's pending count: for last-per-subject readers the server has over-counted
    it before (nats-server#2611, #3148, #8313), and a count that never reaches zero stalls the
    read; nor nats-py's own watcher, which may say "done" before messages already sent have
    arrived (nats.py#842): a short snapshot here would be a new leader forgetting allocations.
    Raises Unavailable when the messages stop coming before that."""
    stream, subjects = f"KV_{bucket}", f"$KV.{bucket}.>"
    subscription = await js.subscribe(
        subjects,
        stream=stream,
        ordered_consumer=True,
        deliver_policy=DeliverPolicy.LAST_PER_SUBJECT,
    )
    prefix = len(f"$KV.{bucket}.")
    values: dict[str, bytes] = {}
    try:
        state = (await js.stream_info(stream)).state
        end = state.last_seq if state.messages else 0
        read = 0  # the stream sequence of the last message read
        while read < end:
            try:
                msg = await subscription.next_msg(timeout=timeout_s)
            except NatsTimeout as e:
                # The stream's last messages may be gone (a tombstone's TTL ran out): then
                # nothing is left past what was read, and the read is complete.
                if await _nothing_after(js, stream, subjects, read):
                    return values
                raise Unavailable(
                    f"bucket {bucket}: the snapshot stopped at sequence {read} of {end}; retry"
                ) from e
            read = msg.metadata.sequence.stream
            tail = msg.metadata.num_pending == 0 and read < end  # its last messages expired?
            if tail and await _nothing_after(js, stream, subjects, read):
                end = read
            key = msg.subject[prefix:]
            operation = (msg.headers or {}).get("KV-Operation")
            reason = (msg.headers or {}).get("Nats-Marker-Reason")
            if operation in (KV_DEL, KV_PURGE) or reason is not None:
                values.pop(key, None)
            else:
                values[key] = msg.data
        return values
    finally:
        with contextlib.suppress(Exception):
            await subscription.unsubscribe()


async def _nothing_after(js: JetStreamContext, stream: str, subjects: str, seq: int) -> bool:
    """Whether the stream holds no message past ``seq``."""
    try:
        await js.get_msg(stream, seq=seq + 1, subject=subjects, next=True)
    except NotFoundError:
        return True
    return False


async def follow(
    kv: KeyValue, stop: asyncio.Event, *, quiet_restart_s: float = 20.0
) -> AsyncIterator[tuple[str, bytes | None]]:
    """Yield (key, value) for the current values and every later change; value None is a delete.

    A watcher that hears nothing for ``quiet_restart_s`` is replaced and replays current values,
    so a consumer lost in a NATS restart heals itself; consumers must treat updates as idempotent.
    """
    while not stop.is_set():
        try:
            watcher = await kv.watchall()
        except Exception as e:  # NATS down: try again shortly
            raise_if_cancelling()
            log.warning("kv watch failed, retrying", extra={"error": repr(e)})
            await sleep_or_stop(stop, 1.0)
            continue
        loop = asyncio.get_running_loop()
        last_heard = loop.time()
        try:
            while not stop.is_set():
                try:
                    entry = await watcher.updates(timeout=min(quiet_restart_s, 1.0))
                except NatsTimeout:
                    raise_if_cancelling()
                    if loop.time() - last_heard > quiet_restart_s:
                        break
                    continue
                last_heard = loop.time()
                if entry is None:
                    continue
                if entry.operation in (KV_DEL, KV_PURGE):
                    yield entry.key, None
                else:
                    yield entry.key, entry.value
        finally:
            # Its subscription may be gone with the connection.
            with contextlib.suppress(Exception):
                await watcher.stop()
