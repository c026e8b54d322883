"""Node agent settings, decoded once: flags > environment > defaults."""

from __future__ import annotations

import argparse
import os
import socket

import msgspec

from shared.deviceconfig import load_device_config
from shared.errors import InvalidRequest
from shared.limitenv import CORE_POLICIES


class NodeAgentSettings(msgspec.Struct, frozen=True, kw_only=True):
    nats_url: str = "nats://127.0.0.1:4222"
    nats_credentials: str | None = None
    """A JSON file {user, password} (shared.natsauth); None: connect without."""
    nats_replicas: int = 1
    """Copies of the buckets and streams this service creates (3 on a 3-server cluster)."""
    node: str = ""
    """Node name; the host name when empty."""
    simulate: str | None = None
    """Simulated devices, e.g. ``2xH200,1xT4``; None: NVML (one simulated H200 without it)."""
    require_nvml: bool = False
    """Without `simulate`: stop when NVML has no device, instead of simulating one H200."""
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
    device_config: str | None = None
    """HAMi's device configuration file (shared.deviceconfig): split count, scaling, core
    policy and resource name for this node, below flags and environment."""

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
        "--require-nvml",
        action="store_true",
        default=env.get("HAMI_REQUIRE_NVML", "") == "true",
        help="stop when NVML has no device instead of simulating one (Kubernetes GPU nodes)",
    )
    parser.add_argument("--split-count", type=int, default=None)
    parser.add_argument("--memory-scaling", type=float, default=None)
    parser.add_argument("--core-scaling", type=float, default=None)
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
    parser.add_argument("--resource-name", default=env.get("HAMI_RESOURCE_NAME"))
    parser.add_argument("--plugin-dir", default=env.get("HAMI_PLUGIN_DIR", d.plugin_dir))
    parser.add_argument(
        "--pod-resources-socket",
        default=env.get("HAMI_POD_RESOURCES_SOCKET", d.pod_resources_socket),
    )
    parser.add_argument("--vgpu-root", default=env.get("HAMI_VGPU_ROOT", d.vgpu_root))
    parser.add_argument("--libvgpu", default=env.get("HAMI_NODE_LIBVGPU", d.libvgpu))
    parser.add_argument(
        "--core-policy", choices=CORE_POLICIES, default=env.get("GPU_CORE_UTILIZATION_POLICY")
    )
    parser.add_argument(
        "--region-grace", dest="region_grace_s", type=float, default=d.region_grace_s
    )
    parser.add_argument(
        "--device-config", default=env.get("HAMI_DEVICE_CONFIG") or None, metavar="FILE"
    )
    parser.add_argument(
        "--nats-replicas", type=int, default=int(env.get("HAMI_NATS_REPLICAS", "1"))
    )
    args = parser.parse_args(argv)
    if not 1 <= args.nats_replicas <= 5:
        parser.error(f"--nats-replicas {args.nats_replicas}: NATS keeps 1 to 5 copies")
    try:
        _fill_from_device_config(args, d, env)
    except InvalidRequest as e:  # one line naming the key; the old pods keep serving
        raise SystemExit(f"hami-nodeagent: {e}") from None
    if args.core_policy not in CORE_POLICIES:
        parser.error(f"--core-policy {args.core_policy!r}: expected one of {CORE_POLICIES}")
    if args.split_count < 1:
        parser.error(f"--split-count {args.split_count} must be at least 1")
    scaling = (("--memory-scaling", args.memory_scaling), ("--core-scaling", args.core_scaling))
    for flag, value in scaling:
        if not value > 0:
            parser.error(f"{flag} {value} must be positive")
    return NodeAgentSettings(**vars(args))


def _fill_from_device_config(
    args: argparse.Namespace, d: NodeAgentSettings, env: os._Environ[str]
) -> None:
    """Flags > environment > the device configuration (this node's entry) > defaults."""
    config = None
    if args.device_config:
        node = args.node or socket.gethostname()
        config = load_device_config(args.device_config).for_node(node)
    from_env = {"split_count": env.get("HAMI_SPLIT_COUNT")}
    from_config = {
        "split_count": config.device_split_count if config else None,
        "memory_scaling": config.device_memory_scaling if config else None,
        "core_scaling": config.device_core_scaling if config else None,
        "core_policy": config.gpu_core_policy if config else None,
        "resource_name": config.resource_count_name if config else None,
    }
    for name, value in from_config.items():
        if getattr(args, name) is not None:
            continue
        chosen = from_env.get(name) or value
        default = getattr(d, name)
        setattr(args, name, default if chosen is None else type(default)(chosen))
