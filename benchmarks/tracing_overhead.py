"""What tracing adds to a placement: off, on (exporting to a real Jaeger over OTLP), on with
one trace in ten sampled, and on with the collector unreachable, side by side in one run.

    python benchmarks/tracing_overhead.py [--placements 400] [--rounds 6] [--nodes 100]

One process: a real nats-server (JetStream, the durable allocation write included), the
allocator core with N simulated 8-GPU nodes, and the two paths every placement takes:
in-process (`Allocator.place_request`, as the extender calls it) and through NATS (the
placement API: a client span, the server span the decision is told on, trace context in
the headers). Each
placement is released again, so every round sees the same cluster. Rounds alternate the
modes so drift on a shared machine hits each alike; reported:
median and p99 per placement per mode and path, and each mode's median over off's."""

from __future__ import annotations

import argparse
import asyncio
import platform
import statistics
import sys
import tempfile
import time
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


async def one_round(
    allocator: Allocator, client: AllocatorClient, placements: int, seq: list[int]
) -> tuple[list[float], list[float]]:
    local, remote = [], []
    for _ in range(placements):
        for path, out in (("local", local), ("nats", remote)):
            seq[0] += 1
            request = PlaceRequest(
                request_id=f"r{seq[0]}",
                containers=(ContainerRequest(count=1, memory_mib=4000, cores=10),),
            )
            started = time.perf_counter()
            if path == "local":
                reply = await allocator.place_request(request)
            else:
                reply = await client.place(request)
            out.append(time.perf_counter() - started)
            assert reply.outcome == "placed" and reply.allocation is not None, reply
            await allocator.release_allocation(reply.allocation.allocation_id, "bench")
    return local, remote


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
            client_nc = await connect(server.url, "bench-client")
            client = AllocatorClient(client_nc)
            modes = {
                "off": {},
                "jaeger": {**jaeger.environment("http/protobuf")},
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
            await one_round(allocator, client, 50, seq)  # warm the caches and the connection
            for _ in range(args.rounds):
                for mode, env in modes.items():
                    stop = tracing.configure("hami-bench", env)
                    local, remote = await one_round(allocator, client, args.placements, seq)
                    stop()
                    results[mode]["local"] += local
                    results[mode]["nats"] += remote
            await service.stop()
            await client_nc.close()
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
    asyncio.run(main(parser.parse_args()))
