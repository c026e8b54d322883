"""Placement under load on a real `hami up` (authenticated local NATS, the allocator as its own
process, simulated devices): C concurrent clients, each placing a fractional share, holding it
briefly and releasing it, as `hami run` does, for S seconds.

Reports placements per second (median of 1-second windows) and time to placement (request to
answer, p50 and p99; answers of "wait" are retried and counted into the time of the placement
that finally succeeds).
Run: python benchmarks/placement_load.py [--clients 1 10 100] [--seconds 10] [--devices 8]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from services.local.paths import read_record
from shared.allocator_client import AllocatorClient
from shared.errors import HamiError
from shared.natsauth import load_credentials
from shared.natsutil import connect
from shared.schemas.placement import ContainerRequest, PlaceRequest

HAMI = [sys.executable, "-m", "services.local"]


async def load(
    url: str, creds: Path, clients: int, seconds: float
) -> tuple[list[float], list[float]]:
    nc = await connect(url, "bench", credentials=load_credentials(creds))
    client = AllocatorClient(nc, timeout_s=10)
    latencies: list[float] = []
    placed_at: list[float] = []
    end = time.monotonic() + seconds

    async def one() -> None:
        while time.monotonic() < end:
            secret = uuid.uuid4().hex
            request = PlaceRequest(
                request_id=uuid.uuid4().hex,
                containers=(ContainerRequest(memory_percent=5, cores=5),),
                holder_secret=secret,
            )
            started = time.monotonic()
            while True:
                try:
                    reply = await client.place(request)
                except HamiError:
                    await asyncio.sleep(0.05)
                    continue
                if reply.allocation is not None:
                    break
                await asyncio.sleep(0.01)
            latencies.append(time.monotonic() - started)
            placed_at.append(time.monotonic())
            await asyncio.sleep(0.05)  # the job runs
            await client.release(reply.allocation.allocation_id, secret=secret)

    try:
        await asyncio.gather(*(one() for _ in range(clients)))
    finally:
        await nc.close()
    return latencies, placed_at


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 10, 100])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--devices", type=int, default=8)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="hami-load-") as tmp:
        state = Path(tmp) / "state"
        env = {**os.environ, "HAMI_STATE_DIR": str(state)}
        up = subprocess.run(
            [
                *HAMI,
                "up",
                "--simulate",
                f"{args.devices}xH200",
                "--nats-port",
                "0",
                "--metrics-port",
                "0",
                "--split-count",
                "20",
            ],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        if up.returncode != 0:
            raise SystemExit(up.stderr)
        try:
            record = read_record(state)
            assert record is not None
            print(
                f"\n{time.strftime('%Y-%m-%d')}, {platform.node()}, {os.cpu_count()} cores, "
                f"Python {platform.python_version()}, {args.devices} simulated H200 (split 20)"
            )
            print(
                "| clients | placements/s (median of 1 s windows) | time to placement p50 | p99 |"
            )
            print("| --- | --- | --- | --- |")
            for clients in args.clients:
                latencies, placed_at = asyncio.run(
                    load(
                        record.nats_url,
                        state / "credentials" / "client.json",
                        clients,
                        args.seconds,
                    )
                )
                start = min(placed_at)
                windows = [0] * (int(args.seconds) + 1)
                for t in placed_at:
                    windows[min(len(windows) - 1, int(t - start))] += 1
                ordered = sorted(latencies)
                p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
                print(
                    f"| {clients} | {statistics.median(windows[:-1] or windows):.0f} | "
                    f"{statistics.median(ordered) * 1000:.1f} ms | {p99 * 1000:.1f} ms |"
                )
        finally:
            subprocess.run([*HAMI, "down"], env=env, capture_output=True, check=False)


if __name__ == "__main__":
    main()
