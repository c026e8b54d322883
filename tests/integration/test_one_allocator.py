"""Exactly one allocator decides: two on one NATS, the leader killed with -9 in the middle of a
burst of placements; the standby takes over and no device is ever granted twice."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from services.nodeagent.service import serve as serve_agent
from services.nodeagent.settings import NodeAgentSettings
from shared.allocator_client import AllocatorClient
from shared.embedded_nats import EmbeddedNats
from shared.errors import HamiError
from shared.kvwatch import snapshot
from shared.natsutil import allocations_bucket, connect
from shared.schemas.placement import (
    ALLOCATIONS_BUCKET,
    ContainerRequest,
    PlaceRequest,
    allocation_codec,
)

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
LEADER_TTL_S = 4.0


def start_allocator(url: str, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "services.allocator",
                "--nats",
                url,
                "--leader-ttl",
                str(LEADER_TTL_S),
                "--sweep-interval",
                "0.2",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )


@pytest.mark.parametrize("fault", ["kill", "stop"])
async def test_the_standby_takes_over_and_nothing_is_granted_twice(
    nats_server: EmbeddedNats, tmp_path: Path, fault: str
) -> None:
    """kill: the leader dies (-9). stop: it is paused (SIGSTOP) past its lease, the standby
    takes over, and then it wakes up in the middle of the burst."""
    url = nats_server.url
    stop = asyncio.Event()
    agent = asyncio.create_task(
        serve_agent(
            NodeAgentSettings(
                nats_url=url, node="box", simulate="4xH200", heartbeat_interval_s=0.2
            ),
            stop,
        )
    )
    first = start_allocator(url, tmp_path / "first.log")
    nc = await connect(url, "test")
    client = AllocatorClient(nc, timeout_s=1.0)
    second: subprocess.Popen[bytes] | None = None
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if (await client.status()).nodes:
                    break
            except HamiError:
                pass
            assert time.monotonic() < deadline, (tmp_path / "first.log").read_text()
            await asyncio.sleep(0.1)
        second = start_allocator(url, tmp_path / "second.log")
        await allocations_bucket(nc.jetstream())
        violations: list[str] = []
        placed_at: list[float] = []
        running = True

        async def check() -> None:
            while running:
                holders: dict[str, str] = {}
                for key, value in (await snapshot(nc.jetstream(), ALLOCATIONS_BUCKET)).items():
                    record = allocation_codec.decode(value)
                    for grant in record.containers[0]:
                        if grant.uuid in holders and holders[grant.uuid] != key:
                            violations.append(f"{grant.uuid}: {holders[grant.uuid]} and {key}")
                        holders[grant.uuid] = key
                await asyncio.sleep(0.02)

        async def job(n: int) -> None:
            i = 0
            while running:
                i += 1
                request = PlaceRequest(
                    request_id=f"job-{n}-{i}",
                    containers=(ContainerRequest(cores=100),),  # a whole device each
                    lease_ttl_s=30,
                )
                try:
                    reply = await client.place(request)
                except HamiError:
                    await asyncio.sleep(0.1)
                    continue
                if reply.allocation is None:
                    await asyncio.sleep(0.05)
                    continue
                placed_at.append(time.monotonic())
                await asyncio.sleep(0.1)
                while running:
                    try:
                        await client.release(reply.allocation.allocation_id)
                        break
                    except HamiError:
                        await asyncio.sleep(0.1)

        workers = [asyncio.create_task(job(n)) for n in range(6)]
        checker = asyncio.create_task(check())
        await asyncio.sleep(3)
        first.send_signal(signal.SIGKILL if fault == "kill" else signal.SIGSTOP)
        killed_at = time.monotonic()
        if fault == "kill":
            first.wait()
        deadline = killed_at + 15
        while not any(t > killed_at + 0.5 for t in placed_at):
            assert time.monotonic() < deadline, (tmp_path / "second.log").read_text()[-2000:]
            await asyncio.sleep(0.1)
        took_over = min(t for t in placed_at if t > killed_at + 0.5) - killed_at
        if fault == "stop":  # the deposed leader wakes up while the burst goes on
            first.send_signal(signal.SIGCONT)
            deadline = time.monotonic() + 15
            while first.poll() is None:  # it finds its lease taken and stops
                assert time.monotonic() < deadline, "the deposed leader kept running"
                await asyncio.sleep(0.1)
            assert "lost the leader lease" in (tmp_path / "first.log").read_text()
        await asyncio.sleep(2)
        running = False
        await asyncio.gather(*workers, checker)
        assert not violations, violations[:5]
        assert took_over < 15
        assert "took over" in (tmp_path / "second.log").read_text()
    finally:
        await nc.close()
        for process in (first, second):
            if process is not None and process.poll() is None:
                process.terminate()
                process.wait(10)
        stop.set()
        await agent


async def test_a_second_allocator_does_not_serve_while_one_leads(
    nats_server: EmbeddedNats, tmp_path: Path
) -> None:
    first = start_allocator(nats_server.url, tmp_path / "a.log")
    second = None
    try:
        nc = await connect(nats_server.url, "test")
        client = AllocatorClient(nc, timeout_s=1.0)
        deadline = time.monotonic() + 30
        while True:
            try:
                await client.status()
                break
            except HamiError:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.1)
        second = start_allocator(nats_server.url, tmp_path / "b.log")
        await asyncio.sleep(LEADER_TTL_S * 1.5)
        assert "standing by" in (tmp_path / "b.log").read_text()
        assert "allocator serving" not in (tmp_path / "b.log").read_text()
        first.terminate()  # a clean stop hands over at once
        first.wait(10)
        deadline = time.monotonic() + LEADER_TTL_S
        while "allocator serving" not in (tmp_path / "b.log").read_text():
            assert time.monotonic() < deadline, (tmp_path / "b.log").read_text()
            await asyncio.sleep(0.1)
        await nc.close()
    finally:
        for process in (first, second):
            if process is not None and process.poll() is None:
                process.terminate()
                process.wait(10)
