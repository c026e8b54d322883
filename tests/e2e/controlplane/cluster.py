"""Start a real control plane for tests: etcd, kube-apiserver (TLS, service-account keys,
admission webhooks on), kube-scheduler with a given configuration, and kwok for nodes.
Everything on loopback, free ports, one directory; logs kept there."""

from __future__ import annotations

import base64
import json
import os
import secrets
import signal
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from shared.ports import free_port
from tests.e2e.controlplane.pki import Pki

BUILD = Path(__file__).with_name("build.sh")
KWOK_NODE_LABEL = "hami.io/test-node"


def build_binaries() -> Path:
    """Build (or find in the cache) the binaries; returns their directory."""
    result = subprocess.run(["bash", str(BUILD)], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"control plane build failed:\n{result.stderr[-4000:]}")
    return Path(result.stdout.strip().splitlines()[-1])


@dataclass
class ControlPlane:
    directory: Path
    binaries: Path
    pki: Pki
    api_url: str
    token: str
    kubeconfig: Path
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start(self, name: str, argv: list[str]) -> None:
        log = (self.directory / f"{name}.log").open("ab")
        self.processes[name] = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
        log.close()

    def check_alive(self) -> None:
        for name, process in self.processes.items():
            if process.poll() is not None:
                tail = (self.directory / f"{name}.log").read_text(errors="replace")[-3000:]
                raise RuntimeError(f"{name} exited with {process.returncode}:\n{tail}")

    def stop(self) -> None:
        """Newest first, each waited for: the API server stopped before etcd does not hang
        on a dead etcd until it is killed."""
        for process in reversed(list(self.processes.values())):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def raw(
        self,
        method: str,
        path: str,
        body: object | None = None,
        content_type: str = "application/json",
    ) -> bytes:
        context = ssl.create_default_context(cafile=str(self.pki.ca.cert))
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            f"{self.api_url}{path}",
            data=data,
            method=method,
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": content_type},
        )
        with urllib.request.urlopen(req, context=context, timeout=10) as response:
            return response.read()  # type: ignore[no-any-return]

    def request(  # type: ignore[type-arg]
        self,
        method: str,
        path: str,
        body: object | None = None,
        content_type: str = "application/json",
    ) -> dict:
        return json.loads(self.raw(method, path, body, content_type))  # type: ignore[no-any-return]

    def add_node(
        self,
        name: str,
        *,
        gpus: int,
        labels: dict[str, str] | None = None,
        annotations: dict[str, str] | None = None,
    ) -> None:
        capacity = {"cpu": "32", "memory": "256Gi", "pods": "110", "nvidia.com/gpu": str(gpus)}
        self.request(
            "POST",
            "/api/v1/nodes",
            {
                "apiVersion": "v1",
                "kind": "Node",
                "metadata": {
                    "name": name,
                    "labels": {
                        KWOK_NODE_LABEL: "true",
                        "kubernetes.io/hostname": name,
                        "type": "kwok",
                        **(labels or {}),
                    },
                    "annotations": {"kwok.x-k8s.io/node": "fake", **(annotations or {})},
                },
                "spec": {},
                "status": {"capacity": capacity, "allocatable": capacity},
            },
        )


def _wait(what: str, plane: ControlPlane, probe, timeout_s: float) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while True:
        plane.check_alive()
        try:
            if probe():
                return
        except (OSError, urllib.error.URLError, ValueError):
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} not ready in {timeout_s:.0f}s; logs in {plane.directory}")
        time.sleep(0.1)


def start_control_plane(
    directory: Path,
    *,
    scheduler_config: str | None = None,
    binaries: Path | None = None,
    controllers: bool = False,
    also_serve_on: tuple[str, ...] = (),
) -> ControlPlane:
    """``controllers``: also kube-controller-manager (Deployments, DaemonSets, StatefulSets,
    Jobs, EndpointSlices, service accounts and their CA ConfigMap), service-account tokens for
    pods, and the API server dialling webhook Services at their endpoints (there is no
    kube-proxy): what running HAMi itself as pods needs. ``also_serve_on``: addresses of this
    machine besides loopback the API server listens on and has in its certificate (pods on a
    bridge reach the host at its gateway address)."""
    binaries = binaries or build_binaries()
    directory.mkdir(parents=True, exist_ok=True)
    pki = Pki.create(directory / "pki")
    serving = pki.leaf(
        "apiserver",
        dns=("localhost", "kubernetes", "kubernetes.default.svc"),
        ips=("127.0.0.1", *also_serve_on),
    )
    sa = pki.service_account_keys()
    token = secrets.token_hex(16)
    (directory / "tokens.csv").write_text(f'{token},admin,admin-uid,"system:masters"\n')
    etcd_port, peer_port, api_port = free_port(), free_port(), free_port()
    api_url = f"https://127.0.0.1:{api_port}"
    kubeconfig = directory / "kubeconfig"
    ca_data = base64.b64encode(pki.ca.cert.read_bytes()).decode()
    kubeconfig.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "test",
                "clusters": [
                    {
                        "name": "test",
                        "cluster": {"server": api_url, "certificate-authority-data": ca_data},
                    }
                ],
                "users": [{"name": "admin", "user": {"token": token}}],
                "contexts": [{"name": "test", "context": {"cluster": "test", "user": "admin"}}],
            }
        )
    )
    plane = ControlPlane(directory, binaries, pki, api_url, token, kubeconfig)
    try:
        etcd_url = f"http://127.0.0.1:{etcd_port}"
        plane.start(
            "etcd",
            [
                str(binaries / "etcd"),
                "--name",
                "test",
                "--data-dir",
                str(directory / "etcd"),
                "--listen-client-urls",
                etcd_url,
                "--advertise-client-urls",
                etcd_url,
                "--listen-peer-urls",
                f"http://127.0.0.1:{peer_port}",
                "--initial-advertise-peer-urls",
                f"http://127.0.0.1:{peer_port}",
                "--initial-cluster",
                f"test=http://127.0.0.1:{peer_port}",
                "--unsafe-no-fsync",
                "--log-level",
                "warn",
            ],
        )
        _wait(
            "etcd",
            plane,
            lambda: urllib.request.urlopen(f"{etcd_url}/health", timeout=1).status == 200,
            30,
        )
        plane.start(
            "kube-apiserver",
            [
                str(binaries / "kube-apiserver"),
                "--etcd-servers",
                etcd_url,
                "--bind-address",
                "0.0.0.0" if also_serve_on else "127.0.0.1",
                "--advertise-address",
                "127.0.0.1",
                "--secure-port",
                str(api_port),
                "--tls-cert-file",
                str(serving.cert),
                "--tls-private-key-file",
                str(serving.key),
                "--client-ca-file",
                str(pki.ca.cert),
                "--token-auth-file",
                str(directory / "tokens.csv"),
                "--service-account-key-file",
                str(sa.cert),
                "--service-account-signing-key-file",
                str(sa.key),
                "--service-account-issuer",
                "https://kubernetes.default.svc",
                "--service-cluster-ip-range",
                "10.96.0.0/24",
                "--authorization-mode",
                "Node,RBAC",
                "--enable-admission-plugins",
                "MutatingAdmissionWebhook,ValidatingAdmissionWebhook",
                *(
                    ["--enable-aggregator-routing=true"]
                    if controllers
                    # Pods need no ServiceAccount object: no controller-manager makes them.
                    else ["--disable-admission-plugins", "ServiceAccount"]
                ),
                "--allow-privileged=true",
                # The kubernetes Service cannot point at loopback; nothing here needs it.
                "--endpoint-reconciler-type=none",
                "--cert-dir",
                str(directory / "apiserver-certs"),
                "--v",
                "1",
            ],
        )
        _wait("kube-apiserver", plane, lambda: plane.raw("GET", "/readyz") == b"ok", 90)
        config = scheduler_config or default_scheduler_config()
        (directory / "scheduler.yaml").write_text(config.replace("__KUBECONFIG__", str(kubeconfig)))
        plane.start(
            "kube-scheduler",
            [
                str(binaries / "kube-scheduler"),
                "--config",
                str(directory / "scheduler.yaml"),
                "--kubeconfig",
                str(kubeconfig),
                "--authentication-kubeconfig",
                str(kubeconfig),
                "--authorization-kubeconfig",
                str(kubeconfig),
                "--secure-port",
                "0",
                "--v",
                "1",
            ],
        )
        if controllers:
            plane.start(
                "kube-controller-manager",
                [
                    str(binaries / "kube-controller-manager"),
                    "--kubeconfig",
                    str(kubeconfig),
                    "--authentication-kubeconfig",
                    str(kubeconfig),
                    "--authorization-kubeconfig",
                    str(kubeconfig),
                    "--service-account-private-key-file",
                    str(sa.key),
                    "--root-ca-file",
                    str(pki.ca.cert),
                    "--leader-elect=false",
                    "--secure-port",
                    "0",
                    "--controllers",
                    "*,-nodeipam,-nodelifecycle,-cloud-node-lifecycle,-route,-service",
                    "--v",
                    "1",
                ],
            )
        plane.start(
            "kwok",
            [
                str(binaries / "kwok"),
                "--kubeconfig",
                str(kubeconfig),
                "--manage-all-nodes=false",
                f"--manage-nodes-with-label-selector={KWOK_NODE_LABEL}=true",
                "--cidr",
                "10.244.0.0/16",
                "--node-ip",
                "10.0.0.1",
                "--server-address",
                f"127.0.0.1:{free_port()}",
            ],
        )
        time.sleep(0.2)
        plane.check_alive()
        return plane
    except BaseException:
        plane.stop()
        raise


def default_scheduler_config() -> str:
    return """apiVersion: kubescheduler.config.k8s.io/v1
kind: KubeSchedulerConfiguration
clientConnection:
  kubeconfig: __KUBECONFIG__
leaderElection:
  leaderElect: false
"""


if __name__ == "__main__":  # a manual check: start, print the kubeconfig path, wait
    plane = start_control_plane(Path(os.environ.get("DIR", "/tmp/hami-cp")))
    print(plane.kubeconfig, flush=True)
    try:
        signal.pause()
    finally:
        plane.stop()
