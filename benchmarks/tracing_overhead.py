"""What tracing adds to a placement: off, on (exporting to a real Jaeger over OTLP), on with
one trace in ten sampled, on with the SDK's own span encoder instead of ours
(shared/otlpspans.py), and on with the collector unreachable, side by side in one run.

    python benchmarks/tracing_overhead.py [--placements 400] [--rounds 6] [--nodes 100]

A real nats-server (JetStream: the durable allocation write and the events included), the
allocator core with N simulated 8-GPU nodes, and the two paths every placement takes:
in-process (`Allocator.place_request`, as the extender calls it) and through NATS from a client
process of its own, as `hami run` asks (its span made and exported there; here the server span
the decision is told on; trace context in the headers). Each placement is released again, so
every round sees the same cluster. Rounds alternate the modes so drift on a shared machine
hits each alike; reported: median and p99 per placement per mode and path, and each mode's
median over off's."""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from services.allocator.allocator import Allocator  # noqa: E402
from services.allocator.natsapi import serve_api  # noqa: E402
from services.allocator.settings import AllocatorSettings  # noqa: E402
from shared import tracing  # noqa: E402
from shared.allocator_client import AllocatorClient  # noqa: E402
from shared.embedded_nats import start_nats  # noqa: E402
from shared.natsutil import allocations_bucket, connect, ensure_event_stream  # noqa: E402
from shared.schemas.inventory import DeviceInfo, NodeInventory, inventory_codec  # noqa: E402
from shared.schemas.placement import ContainerRequest, PlaceRequest  # noqa: E402


def inventory(i: int) -> NodeInventory:
    return NodeInventory(
        node=f"node-{i:05d}",
        agent_id="bench",
        devices=tuple(
            DeviceInfo(
                uuid=f"GPU-{i}-{d}",
                index=d,
                model="NVIDIA H200",
                memory_mib=143771,
                physical_memory_mib=143771,
                split_count=10,
            )
            for d in range(8)
        ),
    )


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def share(request_id: str) -> PlaceRequest:
    return PlaceRequest(
        request_id=request_id,
        containers=(ContainerRequest(count=1, memory_mib=4000, cores=10),),
    )


async def local_round(allocator: Allocator, placements: int, seq: list[int]) -> list[float]:
    out = []
    for _ in range(placements):
        seq[0] += 1
        started = time.perf_counter()
        reply = await allocator.place_request(share(f"r{seq[0]}"))
        out.append(time.perf_counter() - started)
        assert reply.outcome == "placed" and reply.allocation is not None, reply
        await allocator.release_allocation(reply.allocation.allocation_id, "bench")
    return out


async def nats_round(url: str, env: dict[str, str], placements: int, tag: str) -> list[float]:
    """The placements from a client process of its own, as `hami run` asks: its spans are
    made and exported there, the allocator's here."""
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        __file__,
        "--client",
        url,
        "--client-env",
        json.dumps(env),
        "--placements",
        str(placements),
        "--tag",
        tag,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    out, _ = await child.communicate()
    assert child.returncode == 0, out
    return list(json.loads(out))


def configure(service: str, env: dict[str, str]) -> Callable[[], bool]:
    """tracing.configure; with SDK_ENCODER in ``env``, the exporter keeps the SDK's own span
    encoder (the comparison for shared/otlpspans.py)."""
    from opentelemetry.exporter.otlp.proto.common import trace_encoder
    from opentelemetry.exporter.otlp.proto.http import trace_exporter

    stop = tracing.configure(service, {k: v for k, v in env.items() if k != SDK_ENCODER})
    if SDK_ENCODER in env:
        trace_exporter.encode_spans = trace_encoder.encode_spans  # type: ignore[attr-defined]
    return stop


SDK_ENCODER = "HAMI_BENCH_SDK_ENCODER"


async def client_main(url: str, env: dict[str, str], placements: int, tag: str) -> None:
    stop = configure("hami-bench-client", env)
    nc = await connect(url, "bench-client")
    client = AllocatorClient(nc)
    await asyncio.sleep(2.5)  # steady state: the exporter (and any helper) ready first
    for i in range(20):  # the connection and the first requests
        reply = await client.place(share(f"{tag}-warm{i}"))
        assert reply.allocation is not None, reply
        await client.release(reply.allocation.allocation_id)
    out = []
    for i in range(placements):
        started = time.perf_counter()
        reply = await client.place(share(f"{tag}-{i}"))
        out.append(time.perf_counter() - started)
        assert reply.allocation is not None, reply
        await client.release(reply.allocation.allocation_id)
    await nc.close()
    stop()
    print(json.dumps(out))


async def main(args: argparse.Namespace) -> None:
    jaeger = None
    with tempfile.TemporaryDirectory() as scratch:
        server = start_nats(Path(scratch) / "nats", port=0)
        try:
            from tests.e2e.observability.jaeger import start_jaeger

            jaeger = start_jaeger(Path(scratch) / "jaeger")
            nc = await connect(server.url, "bench")
            js = nc.jetstream()
            await ensure_event_stream(js)  # the allocation events, as the service has them
            allocations = await allocations_bucket(js)
            # Nothing heartbeats here: the nodes must not expire during the run.
            settings = AllocatorSettings(nats_url=server.url, node_ttl_s=86400)
            allocator = Allocator(settings, js, allocations)
            await allocator.restore()  # takes the bucket over, as a new leader does
            for i in range(args.nodes):
                allocator.observe_node(f"node-{i:05d}", inventory_codec.encode(inventory(i)))
            service = await serve_api(nc, allocator)
            modes = {
                "off": {},
                "jaeger": {**jaeger.environment("http/protobuf")},
                "jaeger-sdk-enc": {**jaeger.environment("http/protobuf"), SDK_ENCODER: "1"},
                "jaeger-10%": {
                    **jaeger.environment("http/protobuf"),
                    "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
                    "OTEL_TRACES_SAMPLER_ARG": "0.1",
                },
                "unreachable": {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9"},
            }
            results: dict[str, dict[str, list[float]]] = {
                m: {"local": [], "nats": []} for m in modes
            }
            seq = [0]
            await local_round(allocator, 50, seq)  # warm the caches
            for round_ in range(args.rounds):
                for mode, env in modes.items():
                    stop = configure("hami-bench", env)
                    # Steady state, not start-up: exporters (and any helper) ready first.
                    await asyncio.sleep(2.5)
                    await local_round(allocator, 20, seq)
                    results[mode]["local"] += await local_round(allocator, args.placements, seq)
                    results[mode]["nats"] += await nats_round(
                        server.url, env, args.placements, f"{mode}-{round_}"
                    )
                    stop()
            await service.stop()
            await nc.close()
        finally:
            if jaeger is not None:
                jaeger.stop()
            server.stop()
    machine = platform.processor() or platform.machine()
    print(
        f"# {time.strftime('%Y-%m-%d')} on {platform.node()} ({machine}), "
        f"Python {platform.python_version()}; {args.nodes} nodes x 8 GPUs; "
        f"{args.rounds} rounds x {args.placements} placements per mode and path"
    )
    print(f"{'mode':<12} {'path':<6} {'median ms':>10} {'p99 ms':>8} {'median / off':>13}")
    # (the OTLP exporter's retry warnings for the unreachable mode go to stderr)
    for path in ("local", "nats"):
        base = statistics.median(results["off"][path])
        for mode in modes:
            values = results[mode][path]
            median, p99 = statistics.median(values), percentile(values, 0.99)
            print(
                f"{mode:<12} {path:<6} {median * 1e3:>10.3f} {p99 * 1e3:>8.3f} "
                f"{median / base:>13.3f}"
            )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--placements", type=int, default=400)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--nodes", type=int, default=100)
    parser.add_argument("--client", help=argparse.SUPPRESS)  # the NATS client's own process
    parser.add_argument("--client-env", default="{}", help=argparse.SUPPRESS)
    parser.add_argument("--tag", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client:
        asyncio.run(
            client_main(args.client, json.loads(args.client_env), args.placements, args.tag)
        )
    else:
        asyncio.run(main(args))
