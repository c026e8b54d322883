"""shared/kvwatch.snapshot on a real nats-server: what a new leader reads back from the
allocations bucket is every live key, whatever the writers do meanwhile and whatever the server
says about the reader's pending count."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from nats.js import JetStreamContext

from shared.embedded_nats import EmbeddedNats
from shared.kvwatch import snapshot
from shared.natsutil import allocations_bucket, connect
from shared.schemas.placement import ALLOCATIONS_BUCKET


async def test_a_snapshot_taken_while_writers_churn_has_every_earlier_key(
    nats_server: EmbeddedNats,
) -> None:
    writer, reader = await connect(nats_server.url, "w"), await connect(nats_server.url, "r")
    try:
        kv = await allocations_bucket(writer.jetstream())
        for i in range(400):
            await kv.put(f"kept-{i}", str(i).encode())
        for i in range(0, 400, 3):
            await kv.delete(f"kept-{i}")
        expected = {f"kept-{i}": str(i).encode() for i in range(400) if i % 3}
        running = True

        async def churn(n: int) -> None:
            # Writers that never pause, on a bounded set of keys: a snapshot reads one message
            # per key (deletion markers too), so fresh keys would make each read longer.
            i = 0
            while running:
                i = (i + 1) % 64
                await kv.put(f"churn-{n}-{i}", b"x" * 200)
                await kv.delete(f"churn-{n}-{i}")

        writers = [asyncio.create_task(churn(n)) for n in range(4)]
        try:
            for _ in range(10):  # a snapshot that chases the writers never ends: fail instead
                got = await asyncio.wait_for(snapshot(reader.jetstream(), ALLOCATIONS_BUCKET), 30)
                assert {k: v for k, v in got.items() if k.startswith("kept-")} == expected
        finally:
            running = False
            await asyncio.gather(*writers)
        got = await snapshot(reader.jetstream(), ALLOCATIONS_BUCKET)
        assert got == expected  # every churned key was deleted again
    finally:
        await writer.close()
        await reader.close()


async def test_a_snapshot_does_not_wait_on_an_over_counted_pending_number(
    nats_server: EmbeddedNats, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server has over-counted a last-per-subject reader's pending messages before
    (nats-server#2611, #3148, #8313): a snapshot that waited for that count to reach zero would
    stall, and a new leader could not restore. Here every report says one more is pending."""
    original = JetStreamContext.PushSubscription.consumer_info

    async def over_counted(self: JetStreamContext.PushSubscription) -> Any:
        info = await original(self)
        info.num_pending = (info.num_pending or 0) + 1
        return info

    monkeypatch.setattr(JetStreamContext.PushSubscription, "consumer_info", over_counted)
    nc = await connect(nats_server.url, "test")
    try:
        kv = await allocations_bucket(nc.jetstream())
        await kv.put("a", b"1")
        await kv.put("b", b"2")
        await kv.delete("a")
        got = await snapshot(nc.jetstream(), ALLOCATIONS_BUCKET, timeout_s=1.0)
        assert got == {"b": b"2"}
    finally:
        await nc.close()
