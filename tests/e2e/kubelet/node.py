"""A real node for tests: containerd 2.x (built by build.sh), Debian's runc, and Kubernetes'
own kubelet, joined to a test control plane. Configuration and care points from
`../shared/notes/kubelet-e2e.md`: cgroup v1 with `failCgroupV1: false`, containerd's
`restrict_oom_score_adj` (root here lacks CAP_SYS_RESOURCE), no iptables chains, the not-ready
taint removed, images imported without a registry.

The kubelet has fixed host paths (`/var/lib/kubelet/device-plugins`, `/var/log/containers`),
so one runs per machine; `stop()` leaves the machine as it found it."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
from dataclasses import dataclass, field
from pathlib import Path

from tests.e2e.controlplane.cluster import ControlPlane, free_port
from tests.e2e.kubelet.images import PAUSE, build_images

DEVICE_PLUGINS = Path("/var/lib/kubelet/device-plugins")
BRIDGE = "hamitest0"
POD_SUBNET = "10.85.0.0/24"
GATEWAY = "10.85.0.1"
"""The host on the pods' bridge (the CNI bridge is the gateway): where pods without the
host's network reach services that listen on the host."""
# Host paths the kubelet, containerd or CNI create; removed at the end if they were not there.
HOST_PATHS = (
    Path("/var/lib/kubelet"),
    Path("/var/lib/cni"),
    Path("/run/containerd"),
    Path("/run/nri"),
    Path("/run/netns"),
    Path("/var/log/pods"),
    Path("/var/log/containers"),
    Path("/run/mount"),
)
CGROUP_ROOTS = ("kubepods", "k8s.io")


def unusable_reason() -> str | None:
    """Why a kubelet cannot run here, or None."""
    if os.geteuid() != 0:
        return "the kubelet tests need root (mounts, cgroups, /var/lib/kubelet)"
    if not Path("/sys/fs/cgroup/memory").is_dir():
        return "no cgroup v1 memory hierarchy (this harness configures a cgroup v1 kubelet)"
    if (DEVICE_PLUGINS / "kubelet.sock").exists():
        return f"another kubelet owns {DEVICE_PLUGINS} (one kubelet per machine)"
    for tool in ("/usr/sbin/runc", "/usr/lib/cni/bridge", "/bin/busybox", "gcc"):
        if shutil.which(tool) is None and not Path(tool).exists():
            return f"{tool} is missing (tests/e2e/controlplane/build.sh installs it)"
    return None


def _containerd_config(r: Path) -> str:
    return f"""version = 3
root = "{r}/containerd/root"
state = "{r}/containerd/state"
[grpc]
  address = "{r}/containerd/containerd.sock"
[ttrpc]
  address = "{r}/containerd/containerd.sock.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "{r}/containerd/opt"
[plugins."io.containerd.nri.v1.nri"]
  disable = true
[plugins."io.containerd.cri.v1.images"]
  snapshotter = "overlayfs"
  [plugins."io.containerd.cri.v1.images".pinned_images]
    sandbox = "{PAUSE}"
[plugins."io.containerd.cri.v1.runtime"]
  restrict_oom_score_adj = true
  enable_cdi = true
  cdi_spec_dirs = ["{r}/cdi"]
  [plugins."io.containerd.cri.v1.runtime".containerd]
    default_runtime_name = "runc"
    [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc.options]
        SystemdCgroup = false
        BinaryName = "/usr/sbin/runc"
  [plugins."io.containerd.cri.v1.runtime".cni]
    bin_dirs = ["/usr/lib/cni"]
    conf_dir = "{r}/cni"
"""


def _cni_config(r: Path) -> str:
    return (
        '{"cniVersion": "1.0.0", "name": "hami-test", "plugins": ['
        f'{{"type": "bridge", "bridge": "{BRIDGE}", "isGateway": true, "ipMasq": false, '
        f'"ipam": {{"type": "host-local", "ranges": [[{{"subnet": "{POD_SUBNET}"}}]], '
        f'"dataDir": "{r}/cni/ipam"}}}}, {{"type": "loopback"}}]}}'
    )


def _kubelet_config(r: Path, port: int, healthz: int) -> str:
    return f"""apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
failCgroupV1: false
cgroupDriver: cgroupfs
failSwapOn: false
makeIPTablesUtilChains: false
address: 127.0.0.1
port: {port}
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: {healthz}
authentication: {{anonymous: {{enabled: true}}, webhook: {{enabled: false}}}}
authorization: {{mode: AlwaysAllow}}
containerRuntimeEndpoint: unix://{r}/containerd/containerd.sock
imageServiceEndpoint: unix://{r}/containerd/containerd.sock
resolvConf: /etc/resolv.conf
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {{memory.available: "100Mi", nodefs.available: "1%", imagefs.available: "1%"}}
nodeStatusUpdateFrequency: 2s
podLogsDir: {r}/kubelet/logs
"""


@dataclass
class KubeletNode:
    run: Path
    plane: ControlPlane
    name: str = field(default_factory=socket.gethostname)
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    existed: dict[Path, bool] = field(default_factory=dict)
    kubelet_port: int = 10250

    @property
    def containerd_bin(self) -> Path:
        return self.plane.binaries / "containerd"

    @property
    def socket(self) -> Path:
        return self.run / "containerd" / "containerd.sock"

    @property
    def pod_resources_socket(self) -> Path:
        return self.run / "kubelet" / "root" / "pod-resources" / "kubelet.sock"

    def _start(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> None:
        log = (self.run / f"{name}.log").open("ab")
        self.processes[name] = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env
        )
        log.close()

    def _ctr(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.containerd_bin / "ctr"), "-a", str(self.socket), "-n", "k8s.io", *args],
            capture_output=True,
            text=True,
            check=check,
            timeout=60,
        )

    def start(self) -> None:
        self.existed = {p: p.exists() for p in HOST_PATHS}
        r = self.run
        for d in ("containerd", "cni/ipam", "cdi", "kubelet/root", "kubelet/pki", "kubelet/logs"):
            (r / d).mkdir(parents=True, exist_ok=True)
        (r / "containerd" / "config.toml").write_text(_containerd_config(r))
        (r / "cni" / "10-hami-test.conflist").write_text(_cni_config(r))
        env = {**os.environ, "PATH": f"{self.containerd_bin}:{os.environ['PATH']}"}
        self._start(
            "containerd",
            [
                str(self.containerd_bin / "containerd"),
                "--config",
                str(r / "containerd/config.toml"),
            ],
            env,
        )
        self._wait("containerd", lambda: self.socket.exists(), 30)
        for image in build_images(r / "images"):
            self._ctr("images", "import", str(image))
        self.start_kubelet()
        self.wait_ready()

    def start_kubelet(self) -> None:
        r = self.run
        config = r / "kubelet" / "config.yaml"
        config.write_text(_kubelet_config(r, self.kubelet_port, free_port()))
        env = {**os.environ, "PATH": f"{self.containerd_bin}:{os.environ['PATH']}"}
        self._start(
            "kubelet",
            [
                str(self.plane.binaries / "kubelet"),
                f"--config={config}",
                f"--kubeconfig={self.plane.kubeconfig}",
                f"--root-dir={r}/kubelet/root",
                f"--cert-dir={r}/kubelet/pki",
                "--v=2",
            ],
            env,
        )

    def stop_kubelet(self) -> None:
        self._terminate("kubelet", 20)

    def wait_ready(self, timeout_s: float = 90) -> None:
        def ready() -> bool:
            node = self.plane.request("GET", f"/api/v1/nodes/{self.name}")
            conditions = node.get("status", {}).get("conditions", [])
            return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)

        self._wait("node Ready", ready, timeout_s)
        # No controller-manager runs to lift the not-ready taint the API server put on.
        self.plane.request(
            "PATCH",
            f"/api/v1/nodes/{self.name}",
            {"spec": {"taints": None}},
            content_type="application/merge-patch+json",
        )

    def _wait(self, what: str, probe, timeout_s: float) -> None:  # type: ignore[no-untyped-def]
        deadline = time.monotonic() + timeout_s
        while True:
            for name, process in self.processes.items():
                if process.poll() is not None:
                    tail = (self.run / f"{name}.log").read_text(errors="replace")[-3000:]
                    raise RuntimeError(f"{name} exited with {process.returncode}:\n{tail}")
            with contextlib.suppress(OSError, urllib.error.URLError, ValueError, KeyError):
                if probe():
                    return
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what} not in {timeout_s:.0f}s; logs in {self.run}")
            time.sleep(0.2)

    def _terminate(self, name: str, timeout_s: float) -> None:
        process = self.processes.pop(name, None)
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def import_image(self, archive: Path) -> None:
        self._ctr("images", "import", str(archive))

    def delete_pods(
        self, timeout_s: float = 60, namespaces: tuple[str, ...] = ("default",)
    ) -> None:
        for namespace in namespaces:
            with contextlib.suppress(OSError, urllib.error.URLError):
                self.plane.request(
                    "DELETE", f"/api/v1/namespaces/{namespace}/pods?gracePeriodSeconds=0"
                )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                pods = [
                    pod
                    for namespace in namespaces
                    for pod in self.plane.request("GET", f"/api/v1/namespaces/{namespace}/pods")[
                        "items"
                    ]
                ]
            except (OSError, urllib.error.URLError):
                return
            if not pods:
                return
            time.sleep(0.5)

    def stop(self) -> None:
        """Pods, kubelet, containers, containerd and its shims, mounts, then host state."""
        if "kubelet" in self.processes:
            self.delete_pods()
        self._terminate("kubelet", 20)
        if "containerd" in self.processes:
            for kind in ("tasks", "containers"):
                listed = self._ctr(kind, "ls", "-q", check=False).stdout.split()
                for item in listed:
                    verb = ["kill", "-s", "KILL", item] if kind == "tasks" else ["rm", item]
                    self._ctr(kind, *verb, check=False)
        self._terminate("containerd", 10)
        self._kill_shims()
        self._unmount()
        self._clean_host()

    def _kill_shims(self) -> None:
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                argv = (proc / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if (
                argv
                and argv[0].endswith(b"containerd-shim-runc-v2")
                and str(self.run).encode() in b" ".join(argv)
            ):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(proc.name), signal.SIGKILL)

    def _unmount(self) -> None:
        mounts = subprocess.run(
            ["findmnt", "-rn", "-o", "TARGET"], capture_output=True, text=True, check=False
        ).stdout.split()
        prefix = f"{self.run}/"
        for target in sorted((m for m in mounts if m.startswith(prefix)), reverse=True):
            if subprocess.run(["umount", target], capture_output=True, check=False).returncode:
                subprocess.run(["umount", "-l", target], capture_output=True, check=False)

    def _clean_host(self) -> None:
        containers = Path("/var/log/containers")
        if containers.is_dir():
            for link in containers.iterdir():
                with contextlib.suppress(OSError):
                    if link.is_symlink() and os.readlink(link).startswith(str(self.run)):
                        link.unlink()
        subprocess.run(["ip", "link", "del", BRIDGE], capture_output=True, check=False)
        for path in HOST_PATHS:
            if not self.existed.get(path, True):
                shutil.rmtree(path, ignore_errors=True)
        for hierarchy in Path("/sys/fs/cgroup").iterdir():
            for root in CGROUP_ROOTS:
                top = hierarchy / root
                if top.is_dir():
                    for cgroup in sorted(top.rglob("*"), key=lambda p: len(p.parts), reverse=True):
                        if cgroup.is_dir():
                            with contextlib.suppress(OSError):
                                cgroup.rmdir()
                    with contextlib.suppress(OSError):
                        top.rmdir()
