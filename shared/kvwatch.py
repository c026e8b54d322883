"""Reading and following JetStream KV buckets, robust to NATS restarts."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from nats.errors import TimeoutError as NatsTimeout
from nats.js.kv import KV_DEL, KV_PURGE, KeyValue

from shared.runloop import sleep_or_stop

log = logging.getLogger("hami.kv")


async def snapshot(kv: KeyValue, *, timeout_s: float = 5.0) -> dict[str, bytes]:
    """Every live key's current value."""
    watcher = await kv.watchall()
    values: dict[str, bytes] = {}
    try:
        while True:
            entry = await watcher.updates(timeout=timeout_s)
            if entry is None:
                return values
            if entry.operation in (KV_DEL, KV_PURGE):
                values.pop(entry.key, None)
            elif entry.value is not None:
                values[entry.key] = entry.value
    finally:
        await watcher.stop()


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
