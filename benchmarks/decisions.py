"""Placement decisions per second: filter + score + reserve of 1-GPU fractional requests on
N nodes x 8 GPUs at 50% fill, in process (the core) and through the extender HTTP API (the
extender in its own process, as kube-scheduler's client is in its own).

Run: python benchmarks/decisions.py [--nodes 100 1000 5000] [--decisions 300]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import platform
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from multiprocessing.connection import Connection

import msgspec
from aiohttp import ClientSession, web

from services.allocator import heap
from services.allocator.core import ledger
from services.allocator.core.fragmentation import observe_request
from services.allocator.core.placement import FitMemo, Placed, SchedulingSettings, decide
from services.allocator.core.signals import NO_SIGNALS
from services.allocator.core.state import ClusterState
from services.allocator.extender import Extender
from services.allocator.extenderhttp import local_application as application
from shared.schemas.inventory import DeviceInfo, NodeInventory
from shared.schemas.placement import ContainerRequest, PlaceRequest

SETTINGS = SchedulingSettings(node_ttl_s=1e12)
_json = msgspec.json.Encoder()
_decode = msgspec.json.decode


def cluster(nodes: int, gpus: int = 8, fill: float = 0.5, seed: int = 1) -> ClusterState:
    state = ClusterState()
    for n in range(nodes):
        devices = tuple(
            DeviceInfo(
                uuid=f"GPU-{n}-{g}",
                index=g,
                model="NVIDIA H200",
                memory_mib=143771,
                physical_memory_mib=143771,
                split_count=10,
            )
            for g in range(gpus)
        )
        state = ledger.observe_inventory(
            state, NodeInventory(node=f"node-{n:05d}", agent_id="a", devices=devices), 0.0
        )
    rng = random.Random(seed)
    target, used, i = fill * nodes * gpus * 143771, 0, 0
    while used < target:
        pct = rng.choice([5, 10, 20, 25, 30, 50])
        req = PlaceRequest(
            request_id=f"fill-{i}",
            containers=(ContainerRequest(memory_percent=pct, cores=pct),),
            lease_ttl_s=None,
            candidate_nodes=(f"node-{rng.randrange(nodes):05d}",),
        )
        decision = decide(state, req, SETTINGS, 0.0)
        if isinstance(decision, Placed):
            record = ledger.record_for(req, decision.fit, f"f{i}", 0.0)
            state, _ = ledger.commit(state, record, 0.0)
            used += record.containers[0][0].memory_mib
        i += 1
    return state


POLICY: str | None = None
"""--policy: the node policy every benchmark request names (None: the cluster default)."""


def request(i: int) -> PlaceRequest:
    return PlaceRequest(
        request_id=f"bench-{i}",
        lease_ttl_s=None,
        node_policy=POLICY,
        containers=(ContainerRequest(memory_percent=5, cores=5),),
    )


def in_process(state: ClusterState, count: int) -> list[float]:
    memo = FitMemo()  # as the allocator service keeps one
    signals = NO_SIGNALS
    times = []
    for i in range(count):
        start = time.perf_counter()
        signals = observe_request(signals, state, request(i).containers, 0.0)
        decision = decide(state, request(i), SETTINGS, 0.0, memo, signals=signals)
        if isinstance(decision, Placed):  # reserve: the new state is what the next one sees
            state, _ = ledger.commit(
                state, ledger.record_for(request(i), decision.fit, f"b{i}", 0.0), 0.0
            )
        times.append(time.perf_counter() - start)
    return times


class StateOnly:
    """What the extender's filter and prioritize read from the allocator."""

    def __init__(self, state: ClusterState) -> None:
        self.state = state
        self.signals = NO_SIGNALS
        self.scheduling = SETTINGS
        self.fits = FitMemo()


def gpu_pod(i: int) -> dict[str, object]:
    limits = {
        "nvidia.com/gpu": "1",
        "nvidia.com/gpumem-percentage": "5",
        "nvidia.com/gpucores": "5",
    }
    return {
        "metadata": {"name": f"p{i}", "namespace": "d", "uid": f"u{i}"},
        "spec": {"containers": [{"name": "c", "resources": {"limits": limits}}]},
    }


def extender_server_time(state: ClusterState, count: int) -> list[float]:
    """What the extender's own work costs per pod, without HTTP: decode the arguments, filter
    every node, prioritize the passing ones, encode the answers."""
    extender = Extender(StateOnly(state), None)  # type: ignore[arg-type]
    names = sorted(state.nodes)
    times = []
    for i in range(count + 5):
        body = _json.encode({"Pod": gpu_pod(i), "NodeNames": names})
        start = time.perf_counter()
        passed = extender.filter(_decode(body))
        answer = _json.encode(passed)
        body = _json.encode({"Pod": gpu_pod(i), "NodeNames": _decode(answer)["NodeNames"]})
        _json.encode(extender.prioritize(_decode(body)))
        if i >= 5:
            times.append(time.perf_counter() - start)
    return times


def _serve(state: ClusterState, port_out: Connection) -> None:
    """The extender in its own process, as kube-scheduler calls it from its own."""

    async def main() -> None:
        app = application(Extender(StateOnly(state), None))  # type: ignore[arg-type]
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port_out.send(runner.addresses[0][1])
        await asyncio.Event().wait()

    asyncio.run(main())


def kube_scheduler_sample(nodes: int) -> int:
    """How many nodes kube-scheduler hands its extenders per pod with its default
    percentageOfNodesToScore (adaptive: 50% minus 1% per 125 nodes, at least 5%, at least 100
    nodes): it stops filtering once it has found that many feasible nodes."""
    if nodes < 100:
        return nodes
    return max(100, nodes * max(5, 50 - nodes // 125) // 100)


def over_http(state: ClusterState, count: int, sample: int | None = None) -> list[float]:
    receive, send = multiprocessing.Pipe(duplex=False)
    server = multiprocessing.get_context("fork").Process(
        target=_serve, args=(state, send), daemon=True
    )
    server.start()
    try:
        port = receive.recv()
        return asyncio.run(_client(port, sorted(state.nodes), count, sample))
    finally:
        server.kill()
        server.join()


async def _client(port: int, names: list[str], count: int, sample: int | None) -> list[float]:
    """``sample``: send that many names per pod, the window moving on each time (as
    kube-scheduler's next start index does); None: every name."""
    times = []
    async with ClientSession() as session:
        for i in range(count + 5):
            pod = gpu_pod(i)
            window = names
            if sample is not None:
                start_at = (i * sample) % len(names)
                window = (names[start_at:] + names[:start_at])[:sample]
            body = _json.encode({"Pod": pod, "NodeNames": window})
            start = time.perf_counter()
            async with session.post(f"http://127.0.0.1:{port}/filter", data=body) as r:
                passed = _decode(await r.read())["NodeNames"]
            body = _json.encode({"Pod": pod, "NodeNames": passed})
            async with session.post(f"http://127.0.0.1:{port}/prioritize", data=body) as r:
                await r.read()
            if i >= 5:  # the first few warm the connection and the server's memo
                times.append(time.perf_counter() - start)
    return times


def summary(times: list[float]) -> str:
    ordered = sorted(times)
    p99 = ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]
    return (
        f"median {statistics.median(times) * 1e3:.2f} ms, p99 {p99 * 1e3:.2f} ms, "
        f"{1 / statistics.median(times):.0f}/s"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--nodes", type=int, nargs="+", default=[100, 1000, 5000])
    parser.add_argument("--decisions", type=int, default=300)
    parser.add_argument("--policy", help="node policy (default: the cluster's, binpack)")
    parser.add_argument("--no-http", action="store_true", help="in process only")
    args = parser.parse_args()
    heap.tune_for_a_large_heap()  # as the allocator service runs (services/allocator/heap.py)
    global POLICY
    POLICY = args.policy
    print(f"{platform.node()} python {platform.python_version()} {time.strftime('%Y-%m-%d')}")
    for nodes in args.nodes:
        state = cluster(nodes)
        print(f"{nodes} nodes x 8 GPUs, 50% fill:")
        print(f"  in process (decide + reserve): {summary(in_process(state, args.decisions))}")
        server = extender_server_time(state, max(50, args.decisions // 3))
        print(f"  extender without HTTP (decode, filter, prioritize, encode): {summary(server)}")
        if not args.no_http:
            http = over_http(state, max(50, args.decisions // 3))
            print(f"  extender HTTP (filter + prioritize), every node: {summary(http)}")
            sample = kube_scheduler_sample(nodes)
            http = over_http(state, max(50, args.decisions // 3), sample)
            print(f"  extender HTTP, {sample} nodes as kube-scheduler sends: {summary(http)}")


if __name__ == "__main__":
    main()
