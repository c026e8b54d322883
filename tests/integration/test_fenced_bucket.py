"""Storage-side fencing of the allocations bucket (services/allocator/fencedkv.py) on a real
nats-server: once a new leader has sealed the bucket, a write the old one still makes is
refused, whatever its clock says; the seal is invisible to the bucket's readers."""

from __future__ import annotations

import asyncio

import pytest

from services.allocator.fencedkv import Deposed, FencedBucket
from shared.embedded_nats import EmbeddedNats
from shared.errors import Unavailable
from shared.kvwatch import snapshot
from shared.natsutil import allocations_bucket, connect
from shared.schemas.placement import ALLOCATIONS_BUCKET


async def test_a_write_after_the_successor_sealed_is_refused(nats_server: EmbeddedNats) -> None:
    nc = await connect(nats_server.url, "test")
    try:
        js = nc.jetstream()
        await allocations_bucket(js)
        old, new = FencedBucket(js, ALLOCATIONS_BUCKET), FencedBucket(js, ALLOCATIONS_BUCKET)
        with pytest.raises(Unavailable):  # nothing is written before sealing
            await old.put("a", b"1")
        await old.seal()
        await old.put("a", b"1")
        await old.put("a", b"2")
        await new.seal()  # the successor takes over
        with pytest.raises(Deposed):
            await old.put("b", b"stray")  # the paused leader wakes up
        assert old.deposed.is_set()
        with pytest.raises(Unavailable):
            await old.delete("a")  # and stays refused
        await new.put("c", b"3")
        await new.delete("a")
        assert await snapshot(js, ALLOCATIONS_BUCKET) == {"c": b"3"}  # no stray write, no seal key
        await old.seal()  # a deposed allocator that leads again takes over the same way
        with pytest.raises(Deposed):
            await new.put("c", b"4")
    finally:
        await nc.drain()


async def test_a_snapshot_holds_every_live_key_and_no_deleted_one(
    nats_server: EmbeddedNats,
) -> None:
    """Thousands of keys, some replaced, deleted or purged, a writer still writing meanwhile:
    every key written before the snapshot began is in it with its last value, no deleted one
    is, and an empty bucket gives an empty snapshot at once."""
    nc = await connect(nats_server.url, "test")
    try:
        js = nc.jetstream()
        kv = await allocations_bucket(js)
        assert await snapshot(js, ALLOCATIONS_BUCKET) == {}
        expected: dict[str, bytes] = {}
        for i in range(3000):
            await kv.put(f"k{i}", b"v%d" % i)
            expected[f"k{i}"] = b"v%d" % i
        for i in range(0, 3000, 7):
            await kv.put(f"k{i}", b"again")
            expected[f"k{i}"] = b"again"
        for i in range(0, 3000, 11):
            await kv.delete(f"k{i}")
            expected.pop(f"k{i}")
        for i in range(5, 3000, 13):
            await kv.purge(f"k{i}")
            expected.pop(f"k{i}", None)

        async def write_on() -> None:
            for i in range(500):
                await kv.put(f"later{i}", b"x")

        writer = asyncio.create_task(write_on())
        got = await snapshot(js, ALLOCATIONS_BUCKET)
        await writer
        assert {k: v for k, v in got.items() if not k.startswith("later")} == expected
        final = await snapshot(js, ALLOCATIONS_BUCKET)
        assert final == {**expected, **{f"later{i}": b"x" for i in range(500)}}
    finally:
        await nc.close()


async def test_deletion_markers_expire_and_neither_the_fence_nor_a_snapshot_notices(
    nats_server: EmbeddedNats,
) -> None:
    """Every allocation is deleted in the end; its marker must not stay for ever. Once the
    markers expired (here after 1 s) the bucket holds only the live keys, a snapshot whose
    stream's last messages are gone ends at once, and the leader still writes."""
    nc = await connect(nats_server.url, "test")
    try:
        js = nc.jetstream()
        await allocations_bucket(js)
        leader = FencedBucket(js, ALLOCATIONS_BUCKET, tombstone_ttl_s=1)
        await leader.seal()
        assert (await js.stream_info(f"KV_{ALLOCATIONS_BUCKET}")).config.allow_msg_ttl
        for key in ("a", "b", "c"):
            await leader.put(key, key.encode())
        await leader.delete("a")
        await leader.delete("c")  # the stream's last message is a marker

        async def messages() -> int:
            return (await js.stream_info(f"KV_{ALLOCATIONS_BUCKET}")).state.messages

        for _ in range(100):
            if await messages() == 2:  # the seal and "b"
                break
            await asyncio.sleep(0.1)
        assert await messages() == 2
        got = await asyncio.wait_for(snapshot(js, ALLOCATIONS_BUCKET, timeout_s=30), 10)
        assert got == {"b": b"b"}
        await leader.put("d", b"d")  # expiry moved nothing the fence expects
        assert not leader.deposed.is_set()
        assert await snapshot(js, ALLOCATIONS_BUCKET) == {"b": b"b", "d": b"d"}
    finally:
        await nc.drain()
