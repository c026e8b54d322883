"""Pods per second through kube-scheduler, with our extender and without, side by side.

    python benchmarks/scheduling_throughput.py --nodes 1000 5000 --pods 2000 [--prioritize]
    python benchmarks/scheduling_throughput.py --nodes 100 --pods 200 --dra

One run: the test control plane (tests/e2e/controlplane) with N kwok nodes, each with 8
simulated H200s whose inventory is published into NATS as node agents would; the allocator
(its own process) with its extender; two kube-schedulers of the same binary and the same
settings except one thing: `bench-hami` has deploy/'s extender configuration, `bench-plain` has
none. Then, in turn, P pods asking for a plain extended resource (`example.com/gpu: 1`, which
every kwok node has 8 of) through `bench-plain`, and P HAMi pods (`nvidia.com/gpu: 1` with a
5-50% memory share) through `bench-hami`, each batch created as fast as the API server takes
them (8 client threads). Reported per batch: pods/s from the first creation to the last bind,
the median and p99 of each pod's creation-to-bound latency, and the ratio of the two rates.
The HAMi pods are bound by our extender (the allocator writes the annotations and the
Binding): afterwards every bound pod must hold exactly one allocation on the node it was bound
to, no allocation may lack a bound pod, and no device may be over-committed (memory, cores,
split count); the extender's bind time (median, p99) is read from the allocator's log.
With --dra, each node also gets the ResourceSlice its agent would publish in DRA mode, and a
third batch asks the same shares (in MiB) as ResourceClaims through `bench-plain`: kube-
scheduler alone allocates them (each pod's time counts from its claim's creation); afterwards no
device may be past its memory or its shares.
Both schedulers get clientConnection qps/burst 1000 (the default 50 would cap the plain one's
own Binding calls; our extender binds with its own client), and the allocator a node TTL of an
hour (nothing refreshes the published inventory during the run)."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from shared.embedded_nats import start_nats  # noqa: E402
from shared.natsutil import connect, nodes_bucket  # noqa: E402
from shared.schemas.base import node_token  # noqa: E402
from shared.schemas.inventory import DeviceInfo, NodeInventory, inventory_codec  # noqa: E402
from tests.e2e.controlplane.cluster import ControlPlane, free_port, start_control_plane  # noqa: E402
from tests.kube.manifests import scheduler_configuration  # noqa: E402

H200_MIB = 143771
QPS = {"qps": 1000, "burst": 1000}


def add_nodes(plane: ControlPlane, count: int) -> list[str]:
    names = [f"bench-{i:05d}" for i in range(count)]

    def one(name: str) -> None:
        capacity = {
            "cpu": "256",
            "memory": "2Ti",
            "pods": "1000",
            "nvidia.com/gpu": "80",
            "example.com/gpu": "8",
        }
        plane.request(
            "POST",
            "/api/v1/nodes",
            {
                "apiVersion": "v1",
                "kind": "Node",
                "metadata": {
                    "name": name,
                    "labels": {"hami.io/test-node": "true", "kubernetes.io/hostname": name},
                    "annotations": {"kwok.x-k8s.io/node": "fake"},
                },
                "status": {"capacity": capacity, "allocatable": capacity},
            },
        )

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(one, names))
    return names


async def publish_inventory(url: str, names: list[str]) -> None:
    nc = await connect(url, "bench-inventory")
    try:
        kv = await nodes_bucket(nc.jetstream())
        now = time.time()
        for name in names:
            devices = tuple(
                DeviceInfo(
                    uuid=f"GPU-{name}-{i}",
                    index=i,
                    model="NVIDIA H200",
                    memory_mib=H200_MIB,
                    physical_memory_mib=H200_MIB,
                    simulated=True,
                )
                for i in range(8)
            )
            inventory = NodeInventory(node=name, agent_id="bench", devices=devices, sent_at=now)
            await kv.put(node_token(name), inventory_codec.encode(inventory))
    finally:
        await nc.drain()


def start_scheduler(
    plane: ControlPlane, name: str, extender: str | None, run: Path, prioritize: bool = False
) -> None:
    if extender is None:
        config: dict[str, Any] = {
            "apiVersion": "kubescheduler.config.k8s.io/v1",
            "kind": "KubeSchedulerConfiguration",
            "leaderElection": {"leaderElect": False},
            "profiles": [{"schedulerName": name}],
        }
    else:
        config = yaml.safe_load(scheduler_configuration(plane.kubeconfig, name, extender))
        if prioritize:  # deploy/ has none: filter answers one node (HAMi's way)
            config["extenders"][0] |= {"prioritizeVerb": "prioritize", "weight": 1}
    config["clientConnection"] = {"kubeconfig": str(plane.kubeconfig), **QPS}
    path = run / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    plane.start(
        name,
        [
            str(plane.binaries / "kube-scheduler"),
            "--config",
            str(path),
            "--secure-port",
            "0",
            "--v",
            "1",
        ],
    )


class BindWatch:
    """Records when each pod of a namespace is first seen bound (a streaming watch)."""

    def __init__(self, plane: ControlPlane, namespace: str) -> None:
        self.bound: dict[str, float] = {}
        self._plane, self._namespace = plane, namespace
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        context = ssl.create_default_context(cafile=str(self._plane.pki.ca.cert))
        request = urllib.request.Request(
            f"{self._plane.api_url}/api/v1/namespaces/{self._namespace}/pods?watch=true",
            headers={"Authorization": f"Bearer {self._plane.token}"},
        )
        with urllib.request.urlopen(request, context=context, timeout=3600) as stream:
            for line in stream:
                pod = json.loads(line)["object"]
                name = pod["metadata"]["name"]
                if pod.get("spec", {}).get("nodeName") and name not in self.bound:
                    self.bound[name] = time.monotonic()


def publish_resource_slices(plane: ControlPlane, names: list[str]) -> None:
    """What each node's agent publishes in DRA mode (services/nodeagent/core/dra.py): 8
    shareable H200s per node, and the DeviceClass."""
    from services.nodeagent.core import dra
    from services.nodeagent.core.inventory import SharingPolicy
    from services.nodeagent.core.readings import DeviceReading, DriverInfo

    plane.request("POST", "/apis/resource.k8s.io/v1/deviceclasses", dra.device_class())
    policy = SharingPolicy(split_count=10, memory_scaling=1.0, core_scaling=1.0)

    def one(name: str) -> None:
        readings = [
            DeviceReading(
                uuid=f"GPU-{name}-{i}",
                index=i,
                model="NVIDIA H200",
                memory_total_bytes=H200_MIB << 20,
                simulated=True,
            )
            for i in range(8)
        ]
        body = dra.resource_slice(name, readings, policy, DriverInfo("bench"), 0)
        plane.request("POST", "/apis/resource.k8s.io/v1/resourceslices", body)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(one, names))


def share_claim(memory_mib: int) -> dict[str, Any]:
    return {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaim",
        "spec": {
            "devices": {
                "requests": [
                    {
                        "name": "gpu",
                        "exactly": {
                            "deviceClassName": "gpu.hami.io",
                            "capacity": {"requests": {"memory": f"{memory_mib}Mi", "cores": "0"}},
                        },
                    }
                ]
            }
        },
    }


def check_claims(plane: ControlPlane, namespace: str) -> str:
    """Every DRA pod's claim allocated once, no device past its memory or its shares."""
    from shared.quantity import parse_k8s_quantity

    claims = plane.request("GET", f"/apis/resource.k8s.io/v1/namespaces/{namespace}/resourceclaims")
    used: dict[tuple[str, str], list[int]] = {}
    allocated = 0
    for claim in claims["items"]:
        results = (claim.get("status", {}).get("allocation") or {}).get("devices", {})
        for result in results.get("results") or ():
            memory = parse_k8s_quantity(result["consumedCapacity"]["memory"]) / (1 << 20)
            used.setdefault((result["pool"], result["device"]), []).append(int(memory))
            allocated += 1
    over = [d for d, shares in used.items() if sum(shares) > H200_MIB or len(shares) > 10]
    return (
        f"check: {allocated} claims allocated, {len(used)} devices used, "
        f"{len(over)} over their memory or shares"
    )


def run_batch(
    plane: ControlPlane,
    namespace: str,
    scheduler: str,
    pods: int,
    limits: Any,
    claim: Any = None,
) -> dict[str, float]:
    """``claim(i)``: a ResourceClaim made for pod i just before it (DRA), or None."""
    plane.request(
        "POST",
        "/api/v1/namespaces",
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}},
    )
    watch = BindWatch(plane, namespace)
    time.sleep(0.5)
    created: dict[str, float] = {}

    def create(i: int) -> None:
        name = f"p-{i:05d}"
        begun = time.monotonic()
        spec: dict[str, Any] = {
            "schedulerName": scheduler,
            "tolerations": [{"operator": "Exists"}],
            "containers": [{"name": "c", "image": "busybox", "resources": {"limits": limits(i)}}],
        }
        if claim is not None:
            body = claim(i)
            body["metadata"] = {"name": name, "namespace": namespace}
            plane.request(
                "POST", f"/apis/resource.k8s.io/v1/namespaces/{namespace}/resourceclaims", body
            )
            spec["resourceClaims"] = [{"name": "gpu", "resourceClaimName": name}]
            spec["containers"][0]["resources"] = {"claims": [{"name": "gpu"}]}
        plane.request(
            "POST",
            f"/api/v1/namespaces/{namespace}/pods",
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": name, "namespace": namespace},
                "spec": spec,
            },
        )
        created[name] = begun  # from the claim's creation on: what a user waits for

    start = time.monotonic()
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(create, range(pods)))
    deadline = time.monotonic() + 600
    while len(watch.bound) < pods and time.monotonic() < deadline:
        time.sleep(0.2)
    latencies = [watch.bound[n] - created[n] for n in created if n in watch.bound]
    ordered = sorted(latencies)
    last = max(watch.bound.values(), default=start)
    return {
        "bound": len(watch.bound),
        "pods_per_s": len(watch.bound) / (last - start) if last > start else 0.0,
        "median_ms": statistics.median(latencies) * 1e3 if latencies else float("nan"),
        "p99_ms": ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))] * 1e3
        if ordered
        else float("nan"),
    }


async def check_allocations(plane: ControlPlane, nats_url: str, namespace: str) -> str:
    """Every bound pod holds one allocation, on its node; none without a bound pod; no device
    past its memory, cores or split count. Raises on a violation."""
    from shared import kvwatch
    from shared.schemas.placement import ALLOCATIONS_BUCKET, allocation_codec

    listed = plane.request("GET", f"/api/v1/namespaces/{namespace}/pods")
    bound = {
        p["metadata"]["uid"]: p["spec"]["nodeName"]
        for p in listed["items"]
        if p.get("spec", {}).get("nodeName")
    }
    nc = await connect(nats_url, "bench-check")
    try:  # the durable records, as a new leader would read them back
        stored = await kvwatch.snapshot(nc.jetstream(), ALLOCATIONS_BUCKET)
    finally:
        await nc.close()
    per_pod: dict[str, list[str]] = {}
    used: dict[str, list[int]] = {}
    for record in (allocation_codec.decode(value) for value in stored.values()):
        uid = record.request_id.removeprefix("pod/")
        per_pod.setdefault(uid, []).append(record.node)
        for grants in record.containers:
            for g in grants:
                memory, cores, count = used.setdefault(g.uuid, [0, 0, 0])
                used[g.uuid] = [memory + g.memory_mib, cores + g.cores, count + 1]
    twice = {u: n for u, n in per_pod.items() if len(n) > 1}
    wrong = {u: n for u, n in per_pod.items() if u in bound and n != [bound[u]]}
    orphans = set(per_pod) - set(bound)
    unheld = set(bound) - set(per_pod)
    over = {u: v for u, v in used.items() if v[0] > H200_MIB or v[1] > 100 or v[2] > 10}
    if twice or wrong or orphans or unheld or over:
        raise SystemExit(
            f"allocation check failed: {len(twice)} pods allocated twice, {len(wrong)} on "
            f"another node, {len(orphans)} allocations without a bound pod, {len(unheld)} bound "
            f"pods without one, {len(over)} devices over-committed"
        )
    return (
        f"check: {len(bound)} bound pods, one allocation each on their node, "
        f"{len(used)} devices used, none over-committed"
    )


def cpu_seconds(pids: dict[str, int]) -> dict[str, float]:
    """Each process's CPU time so far (user + system, /proc/PID/stat), by name."""
    tick = os.sysconf("SC_CLK_TCK")
    seconds = {}
    for name, pid in pids.items():
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        seconds[name] = (int(fields[11]) + int(fields[12])) / tick
    return seconds


def cpu_during(pids: dict[str, int], batch: Any) -> tuple[dict[str, float], str]:
    """Run ``batch()``; its result and where the machine's CPU went meanwhile (seconds per
    process, the busiest first), which says what bounds the rate on a small machine."""
    before, wall = cpu_seconds(pids), time.monotonic()
    result = batch()
    after, wall = cpu_seconds(pids), time.monotonic() - wall
    used = sorted(((after[n] - before.get(n, 0.0), n) for n in after), reverse=True)
    return result, f"CPU over {wall:.1f} s: " + ", ".join(f"{n} {s:.1f} s" for s, n in used)


Calls = dict[str, dict[str, float]]
"""Per verb: "count", "sum" and each histogram bucket's cumulative count by its bound."""


def extender_seconds(metrics_port: int) -> Calls:
    """The allocator's ``hami_allocator_extender_call_seconds``, by verb."""
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as r:
        text = r.read().decode()
    found: Calls = {}
    name = "hami_allocator_extender_call_seconds"
    for line in text.splitlines():
        if not line.startswith(name):
            continue
        series, value = line.rsplit(" ", 1)
        labels = dict(
            part.split("=", 1) for part in series[series.index("{") + 1 : -1].split(",") if part
        )
        verb = labels.get("verb", "").strip('"')
        kind = series[len(name) : series.index("{")]
        if kind not in ("_count", "_sum", "_bucket"):
            continue
        key = {"_count": "count", "_sum": "sum"}.get(kind) or f"le {labels['le'].strip(chr(34))}"
        found.setdefault(verb, {})[key] = float(value)
    return found


def extender_share(before: Calls, after: Calls, wall: float) -> str:
    """Per verb: the calls of the batch, their mean time, the histogram bucket its 99th
    percentile falls in, and the share of the batch's wall time the allocator spent answering
    (filter and prioritize are in kube-scheduler's one-pod-at-a-time scheduling cycle; bind
    runs beside it)."""
    parts = []
    for verb, now in sorted(after.items()):
        was = before.get(verb, {})
        delta = {k: v - was.get(k, 0.0) for k, v in now.items()}
        calls = delta.get("count", 0.0)
        if not calls:
            continue
        bounds = sorted((float(k[3:]), v) for k, v in delta.items() if k.startswith("le "))
        p99 = next((b for b, n in bounds if n >= 0.99 * calls), float("inf"))
        parts.append(
            f"{verb} {calls:.0f} calls, mean {delta['sum'] / calls * 1e3:.2f} ms, "
            f"p99 <= {p99 * 1e3:g} ms, {delta['sum'] / wall:.0%} of the time"
        )
    return "extender: " + ("; ".join(parts) or "no calls")


def _field(lines: list[str], name: str) -> list[float]:
    prefix = f"{name}="
    return sorted(
        float(word[len(prefix) :])
        for line in lines
        for word in line.split()
        if word.startswith(prefix)
    )


def bind_times(log: Path) -> str:
    """The extender's bind time per pod (the allocator's `bound` lines), and within it the
    placement's wait for the allocator's lock, its time holding it, and the durable write
    (`placed` lines)."""
    lines = log.read_text(errors="replace").splitlines()
    parts = []
    for label, name in (
        ("bind", "bind_ms"),
        ("lock wait", "wait_ms"),
        ("lock held", "held_ms"),
        ("durable write", "write_ms"),
    ):
        times = _field(lines, name)
        if times:
            p99 = times[min(len(times) - 1, int(0.99 * len(times)))]
            parts.append(f"{label} median {statistics.median(times):.1f} / p99 {p99:.1f} ms")
    return "; ".join(parts) or "no timings in the allocator's log"


def measure(nodes: int, pods: int, run: Path, prioritize: bool, dra: bool = False) -> None:
    plane = start_control_plane(run / "cp")
    nats = start_nats(run / "nats", port=0)
    allocator: subprocess.Popen[bytes] | None = None
    try:
        started = time.monotonic()
        names = add_nodes(plane, nodes)
        asyncio.run(publish_inventory(nats.url, names))
        if dra:
            publish_resource_slices(plane, names)
        port, metrics_port = free_port(), free_port()
        with (run / "allocator.log").open("ab") as log:
            allocator = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "services.allocator",
                    "--nats",
                    nats.url,
                    "--extender-port",
                    str(port),
                    "--kubeconfig",
                    str(plane.kubeconfig),
                    "--node-ttl",
                    "3600",
                    "--metrics-port",
                    str(metrics_port),
                    *(["--no-extender-best-node-only"] if prioritize else []),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=REPO,
                env={**os.environ, "PYTHONPATH": str(REPO)},
            )
        start_scheduler(plane, "bench-plain", None, run)
        start_scheduler(plane, "bench-hami", f"http://127.0.0.1:{port}", run, prioritize)
        for _ in range(600):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1):
                    break
            except OSError:
                time.sleep(0.1)
        time.sleep(3)  # the schedulers' informers list the nodes
        print(f"{nodes} nodes ready in {time.monotonic() - started:.0f}s", flush=True)
        rng = random.Random(7)
        shares = [rng.randint(5, 50) for _ in range(pods)]
        pids = {name: p.pid for name, p in plane.processes.items()}
        pids |= {"allocator": allocator.pid, "benchmark client": os.getpid()}
        # What runs with no pod coming (kwok's node heartbeats, the API server's upkeep): the
        # part of each batch's CPU that is not the pods'.
        _, idle_cpu = cpu_during(pids, lambda: time.sleep(5))
        print(f"  idle, {idle_cpu}", flush=True)
        plain, plain_cpu = cpu_during(
            pids,
            lambda: run_batch(
                plane, "bench-plain", "bench-plain", pods, lambda i: {"example.com/gpu": "1"}
            ),
        )
        calls_before, hami_started = extender_seconds(metrics_port), time.monotonic()
        hami, hami_cpu = cpu_during(
            pids,
            lambda: run_batch(
                plane,
                "bench-hami",
                "bench-hami",
                pods,
                lambda i: {"nvidia.com/gpu": "1", "nvidia.com/gpumem-percentage": str(shares[i])},
            ),
        )
        share = extender_share(
            calls_before, extender_seconds(metrics_port), time.monotonic() - hami_started
        )
        results = [("kube-scheduler alone", plain), ("with our extender", hami)]
        cpu = {"kube-scheduler alone": plain_cpu, "with our extender": f"{hami_cpu}\n    {share}"}
        if dra:
            # The same shares in MiB, as claims kube-scheduler allocates itself (no extender).
            mib = [H200_MIB * p // 100 for p in shares]
            results.append(
                (
                    "through DRA, kube-scheduler alone",
                    run_batch(
                        plane,
                        "bench-dra",
                        "bench-plain",
                        pods,
                        lambda i: {},
                        claim=lambda i: share_claim(mib[i]),
                    ),
                )
            )
        for label, result in results:
            print(
                f"  {label}: {result['bound']:.0f}/{pods} bound, "
                f"{result['pods_per_s']:.0f} pods/s, "
                f"latency median {result['median_ms']:.0f} ms, p99 {result['p99_ms']:.0f} ms",
                flush=True,
            )
            if label in cpu:
                print(f"    {cpu[label]}", flush=True)
        if plain["pods_per_s"]:
            print(f"  ratio {hami['pods_per_s'] / plain['pods_per_s']:.2f}", flush=True)
        print(f"  {asyncio.run(check_allocations(plane, nats.url, 'bench-hami'))}", flush=True)
        if dra:
            print(f"  DRA {check_claims(plane, 'bench-dra')}", flush=True)
        print(f"  {bind_times(run / 'allocator.log')}", flush=True)
    finally:
        if allocator is not None:
            allocator.terminate()
            allocator.wait(30)
        plane.stop()
        nats.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nodes", type=int, nargs="+", default=[1000])
    parser.add_argument("--pods", type=int, default=2000)
    parser.add_argument(
        "--prioritize",
        action="store_true",
        help="filter answers every node that fits and kube-scheduler calls prioritize "
        "(deploy/: filter answers the one node the policy picks, no prioritize)",
    )
    parser.add_argument(
        "--dra",
        action="store_true",
        help="also the same shares as ResourceClaims through DRA (slices published per node)",
    )
    args = parser.parse_args()
    print(f"{platform.node()} python {platform.python_version()} {time.strftime('%Y-%m-%d')}")
    for nodes in args.nodes:
        with tempfile.TemporaryDirectory(prefix="hami-throughput-") as run:
            measure(nodes, args.pods, Path(run), args.prioritize, args.dra)


if __name__ == "__main__":
    main()
