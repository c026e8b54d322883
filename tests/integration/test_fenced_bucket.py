"""Storage-side fencing of the allocations bucket (services/allocator/fencedkv.py) on a real
nats-server: once a new leader has sealed the bucket, a write the old one still makes is
refused, whatever its clock says; the seal is invisible to the bucket's readers."""

from __future__ import annotations

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
        kv = await allocations_bucket(js)
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
        assert await snapshot(kv) == {"c": b"3"}  # no stray write, no seal key
        await old.seal()  # a deposed allocator that leads again takes over the same way
        with pytest.raises(Deposed):
            await new.put("c", b"4")
    finally:
        await nc.drain()
