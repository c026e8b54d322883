"""Node agent settings, decoded once: flags > environment > defaults."""

from __future__ import annotations

import argparse
import os
import socket

import msgspec

from shared.limitenv import CORE_POLICIES


class NodeAgentSettings(msgspec.Struct, frozen=True, kw_only=True):
    nats_url: str = "nats://127.0.0.1:4222"
    nats_credentials: str | None = None
    """A JSON file {user, password} (shared.natsauth); None: connect without."""
    node: str = ""
    """Node name; the host name when empty."""
    simulate: str | None = None
    """Simulated devices, e.g. ``2xH200,1xT4``; None: NVML (one simulated H200 without it)."""
    split_count: int = 10
    memory_scaling: float = 1.0
    core_scaling: float = 1.0
    heartbeat_interval_s: float = 5.0
    usage_interval_s: float = 10.0
    log_level: str = "INFO"
    device_plugin: bool = False
    """Serve the kubelet device plugin (Kubernetes nodes); local mode leaves it off."""
    kubeconfig: str | None = None
    """None: the in-cluster service account (or the KUBECONFIG default)."""
    resource_name: str = "nvidia.com/gpu"
    plugin_dir: str = "/var/lib/kubelet/device-plugins"
    pod_resources_socket: str = "/var/lib/kubelet/pod-resources/kubelet.sock"
    vgpu_root: str = "/usr/local/vgpu"
    """Host directory for the library, the preload file and the containers' regions."""
    libvgpu: str = ""
    """The isolation library on the host; empty: `<vgpu_root>/libvgpu.so`."""
    core_policy: str = "default"
    """GPU_CORE_UTILIZATION_POLICY for containers: default, force or disable."""
    region_grace_s: float = 60.0
    """A region whose container the kubelet does not list is removed after this long."""

    @property
    def node_name(self) -> str:
        return self.node or socket.gethostname()


def parse_settings(argv: list[str] | None = None) -> NodeAgentSettings:
    env = os.environ
    d = NodeAgentSettings()
    parser = argparse.ArgumentParser(prog="hami-nodeagent", description="HAMi node agent")
    parser.add_argument("--nats", dest="nats_url", default=env.get("HAMI_NATS_URL", d.nats_url))
    parser.add_argument(
        "--nats-credentials", default=os.environ.get("HAMI_NATS_CREDENTIALS") or None
    )
    parser.add_argument("--node", default=env.get("HAMI_NODE_NAME", d.node))
    parser.add_argument("--simulate", default=env.get("HAMI_SIMULATE") or None)
    parser.add_argument(
        "--split-count", type=int, default=int(env.get("HAMI_SPLIT_COUNT", d.split_count))
    )
    parser.add_argument("--memory-scaling", type=float, default=d.memory_scaling)
    parser.add_argument("--core-scaling", type=float, default=d.core_scaling)
    parser.add_argument(
        "--heartbeat-interval",
        dest="heartbeat_interval_s",
        type=float,
        default=float(env.get("HAMI_HEARTBEAT_INTERVAL", d.heartbeat_interval_s)),
    )
    parser.add_argument(
        "--usage-interval", dest="usage_interval_s", type=float, default=d.usage_interval_s
    )
    parser.add_argument("--log-level", default=env.get("HAMI_LOG_LEVEL", d.log_level))
    parser.add_argument(
        "--device-plugin",
        action="store_true",
        default=env.get("HAMI_DEVICE_PLUGIN", "") == "true",
        help="serve the kubelet device plugin and per-container usage (Kubernetes nodes)",
    )
    parser.add_argument("--kubeconfig", default=env.get("KUBECONFIG") or None)
    parser.add_argument("--resource-name", default=env.get("HAMI_RESOURCE_NAME", d.resource_name))
    parser.add_argument("--plugin-dir", default=env.get("HAMI_PLUGIN_DIR", d.plugin_dir))
    parser.add_argument(
        "--pod-resources-socket",
        default=env.get("HAMI_POD_RESOURCES_SOCKET", d.pod_resources_socket),
    )
    parser.add_argument("--vgpu-root", default=env.get("HAMI_VGPU_ROOT", d.vgpu_root))
    parser.add_argument("--libvgpu", default=env.get("HAMI_NODE_LIBVGPU", d.libvgpu))
    parser.add_argument(
        "--core-policy",
        choices=CORE_POLICIES,
        default=env.get("GPU_CORE_UTILIZATION_POLICY", d.core_policy),
    )
    parser.add_argument(
        "--region-grace", dest="region_grace_s", type=float, default=d.region_grace_s
    )
    args = parser.parse_args(argv)
    if args.core_policy not in CORE_POLICIES:
        parser.error(f"--core-policy {args.core_policy!r}: expected one of {CORE_POLICIES}")
    return NodeAgentSettings(**vars(args))
