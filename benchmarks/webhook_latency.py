"""Admission latency at a fixed request rate over HTTPS on loopback.

The webhook runs as its own process (as deployed); an open-loop client sends AdmissionReviews
at --rate per second for --seconds and records each request's latency (send to full response).
Run: python benchmarks/webhook_latency.py [--rate 500 --seconds 10]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.e2e.controlplane.pki import Pki

MANAGED = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {"name": "p", "namespace": "ns"},
    "spec": {
        "containers": [
            {
                "name": "main",
                "image": "x",
                "resources": {
                    "limits": {
                        "nvidia.com/gpu": "1",
                        "nvidia.com/gpumem": "3000",
                        "nvidia.com/gpucores": "30",
                    }
                },
            }
        ]
    },
}
PLAIN = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {"name": "p", "namespace": "ns"},
    "spec": {"containers": [{"name": "main", "image": "x", "resources": {"limits": {"cpu": "1"}}}]},
}


def review(pod: dict, i: int) -> bytes:  # type: ignore[type-arg]
    return json.dumps(
        {
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": f"u{i}",
                "kind": {"group": "", "version": "v1", "kind": "Pod"},
                "operation": "CREATE",
                "object": pod,
                "userInfo": {"username": "bench"},
            },
        }
    ).encode()


async def load(
    url: str, context: ssl.SSLContext, body_of, rate: float, seconds: float
) -> list[float]:  # type: ignore[no-untyped-def]
    latencies: list[float] = []
    connector = aiohttp.TCPConnector(limit=64, ssl=context)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one(i: int) -> None:
            start = time.perf_counter()
            async with session.post(
                url, data=body_of(i), headers={"Content-Type": "application/json"}
            ) as response:
                await response.read()
                assert response.status == 200
            latencies.append(time.perf_counter() - start)

        for i in range(50):  # warm the connection pool
            await one(i)
        latencies.clear()
        tasks = []
        t0 = time.perf_counter()
        for i in range(int(rate * seconds)):
            delay = t0 + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(i)))
        await asyncio.gather(*tasks)
    return latencies


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rate", type=float, default=500)
    parser.add_argument("--seconds", type=float, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        pki = Pki.create(Path(tmp))
        pair = pki.leaf("webhook")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "services.webhook",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--cert-file",
                str(pair.cert),
                "--key-file",
                str(pair.key),
                "--log-level",
                "WARNING",
            ],
            cwd=Path(__file__).resolve().parents[1],
        )
        try:
            context = ssl.create_default_context(cafile=str(pki.ca.cert))
            deadline = time.monotonic() + 15
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), 0.2).close()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)
            print(
                f"machine: {platform.node()} {platform.processor() or platform.machine()}, "
                f"python {platform.python_version()}, "
                f"rate {args.rate:.0f}/s for {args.seconds:.0f}s"
            )
            for name, pod in (("managed pod (mutate)", MANAGED), ("plain pod (mutate)", PLAIN)):
                lat = asyncio.run(
                    load(
                        f"https://127.0.0.1:{port}/mutate",
                        context,
                        lambda i, pod=pod: review(pod, i),
                        args.rate,
                        args.seconds,
                    )
                )
                print(
                    f"{name}: n={len(lat)} p50={statistics.median(lat) * 1e3:.2f} ms "
                    f"p99={percentile(lat, 99) * 1e3:.2f} ms max={max(lat) * 1e3:.2f} ms"
                )
        finally:
            server.terminate()
            server.wait(10)


if __name__ == "__main__":
    main()
