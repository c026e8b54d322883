"""HAMi on a real node: a control plane of its own, containerd, the kubelet, and HAMi's services
as separate processes wired as in the deployment (webhook, kube-scheduler with our extender,
allocator, node agent as the device plugin on one simulated H200 split 10 ways). Used by
tests/kubelet and benchmarks/pod_start.py."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shared.embedded_nats import EmbeddedNats, start_nats
from shared.natsutil import connect
from shared.schemas.usage import USAGE, UsageSample, usage_codec
from tests.e2e.controlplane.cluster import ControlPlane, free_port, start_control_plane
from tests.e2e.kubelet.images import BUSYBOX, busybox_pod
from tests.e2e.kubelet.node import KubeletNode, unusable_reason
from tests.kube.manifests import WEBHOOK_RESOURCES, start_hami_scheduler, webhook_configurations

REPO = Path(__file__).resolve().parents[3]
LIBVGPU = REPO / "native" / "build" / "libvgpu.so"
SCHEDULER = "hami-scheduler"
RESOURCE = "nvidia.com/gpu"


async def usage_samples(
    hami: Hami, matches: Callable[[UsageSample], bool], timeout_s: float
) -> list[UsageSample]:
    """The usage samples the node publishes that ``matches`` accepts, until one reports memory
    in use or ``timeout_s`` passes."""
    nc = await connect(hami.nats.url, "kubelet-test")
    seen: list[UsageSample] = []
    try:
        subscription = await nc.subscribe(f"{USAGE}.>")
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                msg = await subscription.next_msg(timeout=1)
            except Exception:
                continue
            sample = usage_codec.decode(msg.data)
            if matches(sample):
                seen.append(sample)
                if sample.memory_used_bytes:
                    break
    finally:
        await nc.close()
    return seen


@dataclass
class Hami:
    plane: ControlPlane
    node: KubeletNode
    nats: EmbeddedNats
    run: Path
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    """More environment for HAMi's processes (the OTEL_* variables of a test's Jaeger)."""
    agent_devices: str = "1xH200"
    """The node agent's simulated devices."""
    agent_args: tuple[str, ...] = ()
    """More flags for the node agent (e.g. `--gpu-mode mig`)."""

    @property
    def vgpu_root(self) -> Path:
        return self.run / "vgpu"

    def start(self, name: str, argv: list[str]) -> None:
        log = (self.run / f"{name}.log").open("ab")
        env = {**os.environ, **self.env, "PYTHONPATH": str(REPO)}
        self.processes[name] = subprocess.Popen(
            [sys.executable, *argv], stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO
        )
        log.close()

    def log(self, name: str) -> str:
        return (self.run / f"{name}.log").read_text(errors="replace")

    def start_agent(self) -> None:
        """The node agent as device plugin, on ``agent_devices`` (``agent_args`` added)."""
        self.start(
            "nodeagent",
            [
                "-m",
                "services.nodeagent",
                "--nats",
                self.nats.url,
                "--node",
                self.node.name,
                "--simulate",
                self.agent_devices,
                "--split-count",
                "10",
                "--heartbeat-interval",
                "1",
                "--usage-interval",
                "1",
                *self.agent_args,
                "--device-plugin",
                "--kubeconfig",
                str(self.plane.kubeconfig),
                "--pod-resources-socket",
                str(self.node.pod_resources_socket),
                "--vgpu-root",
                str(self.vgpu_root),
                "--libvgpu",
                str(LIBVGPU),
                "--region-grace",
                "3",
            ],
        )

    def start_dra_agent(self) -> None:
        """The node agent as the kubelet's DRA plugin (no device plugin, no allocator)."""
        root = self.run / "kubelet" / "root"
        self.start(
            "nodeagent",
            [
                "-m",
                "services.nodeagent",
                "--nats",
                self.nats.url,
                "--node",
                self.node.name,
                "--simulate",
                "1xH200",
                "--split-count",
                "10",
                "--heartbeat-interval",
                "1",
                "--usage-interval",
                "1",
                "--dra",
                "--kubeconfig",
                str(self.plane.kubeconfig),
                "--vgpu-root",
                str(self.vgpu_root),
                "--libvgpu",
                str(LIBVGPU),
                "--dra-plugins-dir",
                str(root / "plugins"),
                "--dra-registry-dir",
                str(root / "plugins_registry"),
                "--cdi-dir",
                str(self.run / "cdi"),
            ],
        )

    def signal_agent(self, sig: signal.Signals) -> None:
        self.processes["nodeagent"].send_signal(sig)

    def kill_agent(self) -> None:
        process = self.processes.pop("nodeagent")
        process.kill()
        process.wait()

    def stop(self) -> None:
        for process in reversed(list(self.processes.values())):
            if process.poll() is None:
                process.send_signal(signal.SIGCONT)
                process.terminate()
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    # --- the API server, as a user sees it -----------------------------------------------
    def create_pod(
        self,
        name: str,
        limits: dict[str, str],
        command: str,
        annotations: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        manifest = busybox_pod(name, limits, command, host_network=True)
        if annotations:
            manifest["metadata"]["annotations"] = annotations  # type: ignore[index]
        return self.plane.request("POST", "/api/v1/namespaces/default/pods", manifest)

    def pod(self, name: str) -> dict[str, Any]:
        return self.plane.request("GET", f"/api/v1/namespaces/default/pods/{name}")

    def delete_pod(self, name: str) -> None:
        self.plane.request("DELETE", f"/api/v1/namespaces/default/pods/{name}?gracePeriodSeconds=0")

    def wait_pod(self, name: str, phases: tuple[str, ...], timeout_s: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while True:
            current = self.pod(name)
            if current["status"].get("phase") in phases:
                return current
            if time.monotonic() > deadline:
                raise AssertionError(f"{name} not {phases} in {timeout_s}s: {current['status']}")
            time.sleep(0.2)

    def logs(self, name: str) -> str:
        return self.plane.raw("GET", f"/api/v1/namespaces/default/pods/{name}/log").decode()

    def events(self, name: str) -> list[dict[str, Any]]:
        selector = f"involvedObject.name={name}"
        return self.plane.request(
            "GET", f"/api/v1/namespaces/default/events?fieldSelector={selector}"
        )["items"]

    def capacity(self) -> dict[str, str]:
        node = self.plane.request("GET", f"/api/v1/nodes/{self.node.name}")
        return node["status"].get("allocatable", {})

    def wait_capacity(self, count: str, timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        while self.capacity().get(RESOURCE) != count:
            if time.monotonic() > deadline:
                raise AssertionError(f"allocatable {RESOURCE} is {self.capacity().get(RESOURCE)}")
            time.sleep(0.2)


def _webhook(hami: Hami, *, dra: bool = False) -> list[dict[str, Any]]:
    pair = hami.plane.pki.leaf("webhook")
    port = free_port()
    config = hami.run / "webhook.json"
    # The tests' clients all use the admin token: the allocator, the node agent, the tamperer.
    config.write_text(json.dumps({"trusted_users": ["admin"], "dra": dra}))
    hami.start(
        "webhook",
        [
            "-m",
            "services.webhook",
            "--port",
            str(port),
            "--cert-file",
            str(pair.cert),
            "--key-file",
            str(pair.key),
            "--config",
            str(config),
            *(["--kubeconfig", str(hami.plane.kubeconfig)] if dra else []),
        ],
    )
    docs = webhook_configurations(port, hami.plane.pki.ca.cert.read_bytes())
    for doc in docs:
        if dra and doc["kind"] == "MutatingWebhookConfiguration":
            doc["webhooks"][0]["sideEffects"] = "NoneOnDryRun"  # as components/dra sets it
        hami.plane.request(
            "POST", f"/apis/admissionregistration.k8s.io/v1/{WEBHOOK_RESOURCES[doc['kind']]}", doc
        )
    return docs


def _dry_run_pod(hami: Hami, limits: dict[str, str]) -> dict[str, Any]:
    try:
        return hami.plane.request(
            "POST",
            "/api/v1/namespaces/default/pods?dryRun=All",
            busybox_pod(f"probe-{uuid.uuid4().hex[:6]}", limits, "true", host_network=True),
        )
    except urllib.error.HTTPError:  # the webhook is not serving yet (it fails closed)
        return {"spec": {}}


def _wait_for_webhook(hami: Hami) -> None:
    """The API server picks up webhook configurations asynchronously: wait until it mutates."""
    deadline = time.monotonic() + 30
    while True:
        name = f"probe-{uuid.uuid4().hex[:6]}"
        try:
            created = hami.plane.request(
                "POST",
                "/api/v1/namespaces/default/pods?dryRun=All",
                {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "metadata": {"name": name, "namespace": "default"},
                    "spec": {
                        "containers": [
                            {
                                "name": "c",
                                "image": BUSYBOX,
                                "resources": {"limits": {RESOURCE: "1"}},
                            }
                        ]
                    },
                },
            )
        except urllib.error.HTTPError:  # the webhook is not serving yet (it fails closed)
            created = {"spec": {}}
        if created["spec"].get("schedulerName") == SCHEDULER:
            return
        assert time.monotonic() < deadline, "the webhook never mutated a pod"
        time.sleep(0.3)


class Unusable(RuntimeError):
    """A kubelet cannot run on this machine (the message says why)."""


@contextmanager
def hami_on_a_node(
    run: Path,
    env: dict[str, str] | None = None,
    *,
    agent_devices: str = "1xH200",
    agent_args: tuple[str, ...] = (),
) -> Iterator[Hami]:
    reason = unusable_reason()
    if reason is not None:
        raise Unusable(reason)
    if not LIBVGPU.is_file():  # scripts/check.sh builds it: missing is a failure, not a skip
        raise RuntimeError(f"{LIBVGPU} is not built (make -C native): the pods mount it")
    started = time.monotonic()
    plane = start_control_plane(run / "cp")
    node = KubeletNode(run, plane)
    nats = start_nats(run / "nats", port=0)
    hami = Hami(
        plane,
        node,
        nats,
        run,
        env=dict(env or {}),
        agent_devices=agent_devices,
        agent_args=agent_args,
    )
    try:
        node.start()
        extender = free_port()
        hami.start(
            "allocator",
            [
                "-m",
                "services.allocator",
                "--nats",
                nats.url,
                "--extender-port",
                str(extender),
                "--kubeconfig",
                str(plane.kubeconfig),
            ],
        )
        _webhook(hami)
        start_hami_scheduler(plane, SCHEDULER, f"http://127.0.0.1:{extender}", run)
        hami.start_agent()
        _wait_for_webhook(hami)
        hami.wait_capacity("10")
        print(f"\nkubelet node ready in {time.monotonic() - started:.1f}s; logs in {run}")
        yield hami
    finally:
        node.delete_pods()
        hami.stop()
        node.stop()
        plane.stop()
        nats.stop()


@contextmanager
def dra_on_a_node(run: Path) -> Iterator[Hami]:
    """A real node where kube-scheduler alone allocates GPU shares through DRA: the control
    plane with kube-controller-manager (its resource-claim controller makes claims from
    templates and frees them after their pods), containerd with CDI, the kubelet, NATS, the
    webhook in DRA mode and the node agent as DRA plugin. No extender, no allocator."""
    reason = unusable_reason()
    if reason is not None:
        raise Unusable(reason)
    if not LIBVGPU.is_file():
        raise RuntimeError(f"{LIBVGPU} is not built (make -C native): the pods mount it")
    plane = start_control_plane(run / "cp", controllers=True)
    node = KubeletNode(run, plane)
    nats = start_nats(run / "nats", port=0)
    hami = Hami(plane, node, nats, run)
    try:
        node.start()
        _webhook(hami, dra=True)
        hami.start_dra_agent()
        deadline = time.monotonic() + 30
        while "resourceClaims" not in _dry_run_pod(hami, {"nvidia.com/gpumem": "1000"})["spec"]:
            assert time.monotonic() < deadline, (
                "the webhook never turned a pod's share into a claim"
            )
            time.sleep(0.3)
        deadline = time.monotonic() + 60
        while not hami.plane.request(
            "GET", "/apis/resource.k8s.io/v1/resourceslices?fieldSelector=spec.driver=gpu.hami.io"
        )["items"]:
            assert time.monotonic() < deadline, hami.log("nodeagent")[-3000:]
            time.sleep(0.3)
        yield hami
    finally:
        node.delete_pods()
        hami.stop()
        node.stop()
        plane.stop()
        nats.stop()
