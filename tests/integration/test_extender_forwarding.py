"""kube-scheduler may lead beside an allocator that stands by: that allocator's extender
forwards each call over NATS to the leader and returns the leader's answer unchanged; with no
leader it answers 503 (kube-scheduler retries), and once it leads it answers itself."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import aiohttp
import msgspec

from services.allocator.extenderhttp import ExtenderRouter
from services.allocator.service import serve
from services.allocator.settings import AllocatorSettings
from shared.embedded_nats import EmbeddedNats
from shared.natsutil import connect
from tests.e2e.controlplane.cluster import free_port
from tests.integration.waiting import until

FILTER = json.dumps(
    {
        "Pod": {
            "metadata": {"uid": "u1", "name": "p", "namespace": "default"},
            "spec": {
                "containers": [{"name": "c", "resources": {"limits": {"nvidia.com/gpu": "1"}}}]
            },
        },
        "NodeNames": ["nowhere"],
    }
).encode()


def kubeconfig(directory: Path) -> str:
    """A client that is never reached: these calls need no API server."""
    path = directory / "kubeconfig"
    path.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "c",
                "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:9"}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
            }
        )
    )
    return str(path)


async def post(
    session: aiohttp.ClientSession, port: int, verb: str, body: bytes
) -> tuple[int, object]:
    async with session.post(f"http://127.0.0.1:{port}/{verb}", data=body) as response:
        return response.status, await response.json()


async def test_a_standby_answers_with_the_leaders_answer(
    nats_server: EmbeddedNats, tmp_path: Path
) -> None:
    settings = AllocatorSettings(
        nats_url=nats_server.url,
        kubeconfig=kubeconfig(tmp_path),
        leader_ttl_s=2.0,
        reconcile_interval_s=3600.0,
    )
    ports = free_port(), free_port()
    stops = asyncio.Event(), asyncio.Event()
    leading: list[int] = []
    allocators = [
        asyncio.create_task(
            serve(with_port(settings, ports[0]), stops[0], extender_started=leading.append)
        )
    ]
    try:
        async with aiohttp.ClientSession() as session:
            await until(lambda: bool(leading))
            assert leading == [ports[0]]
            allocators.append(
                asyncio.create_task(
                    serve(with_port(settings, ports[1]), stops[1], extender_started=leading.append)
                )
            )
            await until_healthy(session, ports[1])  # its HTTP API is up before it leads
            direct = await post(session, ports[0], "filter", FILTER)
            forwarded = await post(session, ports[1], "filter", FILTER)
            assert direct[0] == 200 and forwarded == direct
            answered = direct[1]
            assert isinstance(answered, dict) and answered["NodeNames"] == []
            failed = {**answered["FailedNodes"], **answered["FailedAndUnresolvableNodes"]}
            assert "nowhere" in failed
            bad = await post(session, ports[1], "filter", b"[1, 2")
            assert bad[0] == 400 and bad == await post(session, ports[0], "filter", b"[1, 2")
            assert leading == [ports[0]]  # the second still stands by
            stops[0].set()  # a clean stop resigns: the standby leads at once, answers itself
            await allocators[0]
            await until(lambda: len(leading) == 2)
            assert leading == [ports[0], ports[1]]
            assert await post(session, ports[1], "filter", FILTER) == direct
    finally:
        for stop in stops:
            stop.set()
        await asyncio.gather(*allocators)


async def until_healthy(session: aiohttp.ClientSession, port: int) -> None:
    deadline = time.monotonic() + 15
    while True:
        try:
            async with session.get(f"http://127.0.0.1:{port}/healthz") as health:
                if health.status == 200:
                    return
        except aiohttp.ClientConnectionError:
            pass
        assert time.monotonic() < deadline, "the standby's extender never answered"
        await asyncio.sleep(0.1)


def with_port(settings: AllocatorSettings, port: int) -> AllocatorSettings:
    return msgspec.structs.replace(settings, extender_port=port)


async def test_with_no_leader_a_forwarded_call_answers_503(nats_server: EmbeddedNats) -> None:
    nc = await connect(nats_server.url, "test")
    try:
        status, body = await ExtenderRouter(nc, timeout_s=0.5).call("filter", FILTER)
        assert status == 503 and b"retry" in body
    finally:
        await nc.drain()
