"""The allocator and a node agent against a real nats-server: placement over request/reply,
leases, release, durability across allocator and NATS restarts."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import msgspec
import pytest
from nats.aio.client import Client

from services.allocator.service import serve as serve_allocator
from services.allocator.settings import AllocatorSettings
from services.local.supervisor import free_port
from services.nodeagent.service import serve as serve_agent
from services.nodeagent.settings import NodeAgentSettings
from shared.allocator_client import AllocatorClient
from shared.embedded_nats import EmbeddedNats, start_nats
from shared.errors import InvalidRequest, Unavailable
from shared.natsutil import connect
from shared.schemas.events import EVENTS, event_codec
from shared.schemas.placement import ALLOCATIONS_BUCKET, ContainerRequest, PlaceRequest
from shared.schemas.usage import USAGE, UsageSample, usage_codec


@dataclass
class Running:
    stop: asyncio.Event
    task: asyncio.Task[None]

    async def halt(self) -> None:
        self.stop.set()
        await asyncio.wait_for(self.task, 10)


def start(coro_factory) -> Running:  # type: ignore[no-untyped-def]
    stop = asyncio.Event()
    return Running(stop, asyncio.create_task(coro_factory(stop)))


def allocator(url: str, **kw: object) -> Running:
    settings = AllocatorSettings(nats_url=url, sweep_interval_s=0.1, **kw)  # type: ignore[arg-type]
    return start(lambda stop: serve_allocator(settings, stop))


def agent(url: str, simulate: str = "2xH200", node: str = "box") -> Running:
    settings = NodeAgentSettings(
        nats_url=url, node=node, simulate=simulate, heartbeat_interval_s=0.2, split_count=3
    )
    return start(lambda stop: serve_agent(settings, stop))


@contextlib.asynccontextmanager
async def client_for(url: str) -> AsyncIterator[tuple[Client, AllocatorClient]]:
    nc = await connect(url, "test")
    try:
        yield nc, AllocatorClient(nc, timeout_s=2.0)
    finally:
        await nc.close()


async def until(predicate, timeout_s: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not await predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.05)


async def nodes_seen(client: AllocatorClient, count: int = 1) -> bool:
    try:
        return len((await client.status()).nodes) >= count
    except Unavailable:
        return False


def place_request(rid: str, **kw: object) -> PlaceRequest:
    return PlaceRequest(request_id=rid, containers=(ContainerRequest(**kw),))  # type: ignore[arg-type]


async def test_place_share_release(nats_server: EmbeddedNats) -> None:
    url = nats_server.url
    alloc, node = allocator(url), agent(url)
    async with client_for(url) as (nc, client):
        await until(lambda: nodes_seen(client))
        events: list[str] = []

        async def on_event(msg) -> None:  # type: ignore[no-untyped-def]
            events.append(event_codec.decode(msg.data).kind)

        await nc.subscribe(f"{EVENTS}.>", cb=on_event)

        one = await client.place(place_request("1", memory_mib=4000, cores=30))
        two = await client.place(place_request("2", memory_mib=4000, cores=30))
        assert one.outcome == two.outcome == "placed"
        assert one.allocation and two.allocation
        # spread is the default device policy: two jobs land on the two devices
        assert one.allocation.containers[0][0].uuid != two.allocation.containers[0][0].uuid
        again = await client.place(place_request("1", memory_mib=4000, cores=30))
        assert again.allocation == one.allocation  # idempotent retry
        status = await client.status()
        assert len(status.allocations) == 2
        assert sorted(d.used_memory_mib for d in status.devices) == [4000, 4000]

        never = await client.place(place_request("3", count=3))
        assert never.outcome == "never" and "2 of 2 devices fit, 3 asked" in never.reason
        with pytest.raises(InvalidRequest, match=r"<= 100 - at `\$\.containers\[0\]\.cores`"):
            await client.place(place_request("4", cores=150))

        assert (await client.release(one.allocation.allocation_id)).released
        assert not (await client.release(one.allocation.allocation_id)).released
        await until(lambda: asyncio.sleep(0, result=events.count("released") == 1))
        assert events.count("allocated") == 2
    await node.halt()
    await alloc.halt()


async def test_wait_then_fit_after_release(nats_server: EmbeddedNats) -> None:
    """And the waiting request is listed with its reason (status, the allocator's metrics)
    until it is placed."""
    url = nats_server.url
    port = free_port()
    alloc, node = allocator(url, metrics_port=port), agent(url, simulate="1xT4")
    async with client_for(url) as (_, client):
        await until(lambda: nodes_seen(client))
        first = await client.place(place_request("1", memory_percent=60))
        assert first.outcome == "placed" and first.allocation
        blocked = await client.place(place_request("2", memory_percent=60))
        assert blocked.outcome == "wait" and "memory" in blocked.reason
        [waiting] = (await client.status()).waiting
        assert waiting.request_id == "2" and waiting.reason == blocked.reason
        only = await client.status(waiting_only=True)  # what telemetry polls: no cluster dump
        assert only.waiting == (waiting,) and not (only.nodes or only.devices or only.allocations)
        assert "hami_allocator_waiting_requests 1.0" in await scrape(port)
        await client.release(first.allocation.allocation_id)
        assert (await client.place(place_request("2", memory_percent=60))).outcome == "placed"
        assert not (await client.status()).waiting
        metrics = await scrape(port)
        assert "hami_allocator_waiting_requests 0.0" in metrics
        for outcome, count in (("placed", 2), ("wait", 1)):
            assert (
                f'hami_allocator_decisions_total{{gpu_policy="spread",node_policy="binpack",'
                f'outcome="{outcome}"}} {count}.0'
            ) in metrics
        assert "hami_allocator_decision_seconds_count" in metrics
    await node.halt()
    await alloc.halt()


async def scrape(port: int) -> str:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}/metrics") as reply,
    ):
        return await reply.text()


async def test_unrenewed_lease_expires(nats_server: EmbeddedNats) -> None:
    url = nats_server.url
    alloc, node = allocator(url), agent(url)
    async with client_for(url) as (_, client):
        await until(lambda: nodes_seen(client))
        reply = await client.place(
            PlaceRequest(
                request_id="x", containers=(ContainerRequest(memory_mib=1),), lease_ttl_s=0.5
            )
        )
        assert reply.allocation
        renewed = await client.renew(reply.allocation.allocation_id)
        assert renewed.ok and renewed.expires_in_s == pytest.approx(0.5)

        async def gone() -> bool:
            return not (await client.status()).allocations

        await until(gone, timeout_s=5)
        assert not (await client.renew(reply.allocation.allocation_id)).ok
    await node.halt()
    await alloc.halt()


async def test_allocations_survive_allocator_and_nats_restarts(tmp_path: Path) -> None:
    server = start_nats(tmp_path / "nats", port=0)
    url = server.url
    port = int(url.rsplit(":", 1)[1])
    alloc, node = allocator(url), agent(url, simulate="1xH200")
    try:
        async with client_for(url) as (_, client):
            await until(lambda: nodes_seen(client))
            placed = []
            for i in range(3):
                reply = await client.place(place_request(str(i), memory_mib=10000, cores=20))
                assert reply.allocation
                placed.append(reply.allocation)
        alloc.task.cancel()  # a crash: no clean shutdown
        with contextlib.suppress(asyncio.CancelledError):
            await alloc.task
        server.process.kill()  # and NATS dies too, without warning
        server.process.wait()
        server = start_nats(tmp_path / "nats", port=port)
        alloc = allocator(url)
        async with client_for(url) as (_, client):
            await until(lambda: nodes_seen(client))
            status = await client.status()
            assert sorted(a.allocation_id for a in status.allocations) == sorted(
                a.allocation_id for a in placed
            )
            [device] = status.devices
            assert (device.used_memory_mib, device.used_cores, device.used_count) == (30000, 60, 3)
            retry = await client.place(place_request("0", memory_mib=10000, cores=20))
            assert retry.allocation == placed[0]  # no double allocation on retry
            assert len((await client.status()).allocations) == 3
    finally:
        await node.halt()
        await alloc.halt()
        server.stop()


async def test_node_that_stops_heartbeating_leaves_the_pool(nats_server: EmbeddedNats) -> None:
    url = nats_server.url
    alloc = allocator(url, node_ttl_s=0.6)
    node = agent(url)
    async with client_for(url) as (_, client):
        await until(lambda: nodes_seen(client))
        node.task.cancel()  # dies without withdrawing its inventory
        with contextlib.suppress(asyncio.CancelledError):
            await node.task
        await asyncio.sleep(1.0)
        reply = await client.place(place_request("late", memory_mib=1))
        assert reply.outcome == "never" and "no live node" in reply.reason
    await alloc.halt()


async def test_no_allocator_is_a_clear_error(nats_server: EmbeddedNats) -> None:
    async with client_for(nats_server.url) as (_, client):
        with pytest.raises(Unavailable, match="no allocator answers"):
            await client.status()


async def test_unreachable_nats_is_a_clear_error() -> None:
    with pytest.raises(Unavailable, match="hami up"):
        await connect("nats://127.0.0.1:1", "test", reconnect=False, connect_timeout_s=0.5)


async def test_two_phase_reserve_then_commit(nats_server: EmbeddedNats) -> None:
    url = nats_server.url
    alloc, node = allocator(url), agent(url)
    async with client_for(url) as (_, client):
        await until(lambda: nodes_seen(client))
        lapsed = await client.reserve(
            PlaceRequest(
                request_id="lapsed", containers=(ContainerRequest(memory_mib=10),), lease_ttl_s=0.4
            )
        )
        kept = await client.reserve(
            PlaceRequest(
                request_id="kept", containers=(ContainerRequest(memory_mib=10),), lease_ttl_s=0.4
            )
        )
        assert lapsed.allocation and kept.allocation
        committed = await client.commit(kept.allocation.allocation_id)
        assert committed.committed and committed.allocation
        assert committed.allocation.lease_ttl_s is None
        await asyncio.sleep(1.2)
        ids = {a.allocation_id for a in (await client.status()).allocations}
        assert ids == {kept.allocation.allocation_id}  # the uncommitted one went back
        assert not (await client.commit(lapsed.allocation.allocation_id)).committed
    alloc.task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await alloc.task
    alloc = allocator(url)
    async with client_for(url) as (_, client):
        await until(lambda: nodes_seen(client))
        [record] = (await client.status()).allocations
        assert record.allocation_id == kept.allocation.allocation_id and record.lease_ttl_s is None
    await node.halt()
    await alloc.halt()


async def test_usage_samples_steer_placement_off_a_busy_device(nats_server: EmbeddedNats) -> None:
    """Usage feedback: a device that is busy in practice (here: a sample says 95%) loses the
    tie between two idle devices."""
    url = nats_server.url
    alloc, node = allocator(url), agent(url)
    async with client_for(url) as (nc, client):
        await until(lambda: nodes_seen(client))
        first = sorted((await client.status()).devices, key=lambda d: d.index)[0].uuid
        busy = UsageSample(
            node="box",
            device_uuid=first,
            at=0.0,
            memory_used_bytes=0,
            memory_total_bytes=1,
            utilization_percent=95.0,
        )
        await nc.publish(f"{USAGE}.box", usage_codec.encode(busy))
        await nc.flush()
        serial = 0

        async def lands_elsewhere() -> bool:
            nonlocal serial
            serial += 1
            reply = await client.place(place_request(f"h{serial}", memory_mib=1000, cores=10))
            assert reply.allocation
            await client.release(reply.allocation.allocation_id)
            return reply.allocation.containers[0][0].uuid != first

        await until(lands_elsewhere)
    await node.halt()
    await alloc.halt()


@pytest.mark.parametrize("corrupt", ["truncated", "garbage"])
async def test_an_unreadable_record_keeps_its_devices_out_of_use(
    nats_server: EmbeddedNats, corrupt: str
) -> None:
    url = nats_server.url
    alloc, node = allocator(url), agent(url, simulate="2xH200")
    try:
        async with client_for(url) as (nc, client):
            await until(lambda: nodes_seen(client))
            reply = await client.place(place_request("held", cores=100))  # one whole device
            assert reply.allocation is not None
            held = reply.allocation.containers[0][0].uuid
            await alloc.halt()
            kv = await nc.jetstream().key_value(ALLOCATIONS_BUCKET)
            raw = (await kv.get(reply.allocation.allocation_id)).value or b""
            await kv.put(
                reply.allocation.allocation_id,
                raw[: len(raw) // 2] if corrupt == "truncated" else b"\x00not json",
            )
            alloc = allocator(url)
            await until(lambda: nodes_seen(client))
            status = await client.status()
            [problem] = status.problems
            assert reply.allocation.allocation_id in problem
            # "truncated" still names its device: only that one is kept out; "garbage" names
            # nothing, so nothing is placed until an operator repairs or deletes it.
            free = [d.uuid for d in status.devices if d.healthy]
            if corrupt == "truncated":
                assert held not in free and len(free) == 1
                again = await client.place(place_request("next", cores=100))
                assert again.allocation is not None
                assert again.allocation.containers[0][0].uuid != held
                third = await client.place(place_request("third", cores=100))
                assert third.outcome == "wait"
            else:
                assert free == []
    finally:
        await node.halt()
        await alloc.halt()


async def test_only_the_holder_renews_or_releases_its_allocation(nats_server: EmbeddedNats) -> None:
    url = nats_server.url
    alloc, node = allocator(url), agent(url, simulate="1xH200")
    try:
        async with client_for(url) as (_, client):
            await until(lambda: nodes_seen(client))
            secret = "s" * 32
            request = PlaceRequest(
                request_id="mine", containers=(ContainerRequest(cores=10),), holder_secret=secret
            )
            reply = await client.place(request)
            assert reply.allocation is not None
            allocation = reply.allocation.allocation_id
            for guess in (None, "x" * 32):
                with pytest.raises(InvalidRequest, match="held by someone else"):
                    await client.release(allocation, secret=guess)
                with pytest.raises(InvalidRequest, match="held by someone else"):
                    await client.renew(allocation, secret=guess)
            with pytest.raises(InvalidRequest, match="another holder"):
                await client.place(msgspec.structs.replace(request, holder_secret=None))
            assert (await client.renew(allocation, secret=secret)).ok
            assert (await client.release(allocation, secret=secret)).released
    finally:
        await node.halt()
        await alloc.halt()
