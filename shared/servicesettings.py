"""The settings of the services `hami up` starts (allocator, node agent, telemetry): one Struct
each, the whole contract between a service and whoever starts it. The service derives its flags,
`HAMI_*` variables and help from it (shared/settings.py); the local supervisor builds them typed
and hands each child its own whole as a settings file. They live in `shared` because both sides
read them, like the wire schemas."""

from __future__ import annotations

import math
import socket
from typing import Annotated, Literal

import msgspec

from shared.resources import ResourceNames

Seconds = Annotated[float, msgspec.Meta(gt=0)]
Scaling = Annotated[float, msgspec.Meta(gt=0, le=100)]
Replicas = Annotated[int, msgspec.Meta(ge=1, le=5)]
Port = Annotated[int, msgspec.Meta(ge=0, le=65535)]
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]
PolicyName = Literal["binpack", "spread", "best-fit", "fragmentation"]
"""The allocator's policy table (services/allocator/core/policies.py); a test keeps them equal."""
NATS_URL = Annotated[str, msgspec.Meta(extra={"flag": "--nats"})]
KUBECONFIG = Annotated[str | None, msgspec.Meta(extra={"env": "KUBECONFIG"})]
NODE_TTL_S = 15.0
"""A node whose inventory is not refreshed for this long takes no new placements."""


class AllocatorSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    nats_url: NATS_URL = "nats://127.0.0.1:4222"
    """NATS server to serve on."""
    nats_credentials: str | None = None
    """A JSON file {user, password} (shared.natsauth); None: connect without."""
    nats_replicas: Replicas = 1
    """Copies of the buckets and streams this service creates (3 on a 3-server cluster)."""
    node_policy: PolicyName = "binpack"
    """Default node policy when a request names none."""
    gpu_policy: PolicyName = "spread"
    """Default device policy when a request names none; a request whose node policy is
    best-fit or fragmentation and that names no device policy gets its node policy's order."""
    node_ttl_s: Seconds = NODE_TTL_S
    """A node whose inventory is not refreshed for this long takes no new placements."""
    sweep_interval_s: Seconds = 1.0
    """How often expired leases are looked for."""
    log_level: LogLevel = "INFO"
    extender_host: str = "127.0.0.1"
    """Where the extender listens (loopback: kube-scheduler runs in the same pod)."""
    extender_port: Port | None = None
    """Serve kube-scheduler's extender API on this port (0: any free one); None: do not."""
    metrics_host: str = "127.0.0.1"
    """Where the allocator's own metrics listen."""
    metrics_port: Port | None = None
    """Serve the allocator's own Prometheus metrics (decisions, their latency, waiting
    requests) at `/metrics` on this port (0: any free one); None: do not."""
    extender_best_node_only: bool = True
    """The extender's filter answers only the node the policy prefers (HAMi's way; deploy/'s
    kube-scheduler has no `prioritizeVerb`): as cheap as one decision, one round trip less per
    pod. Off, filter answers every node that fits and kube-scheduler must call `prioritize`
    for the node policy to hold (docs/benchmarks.md)."""
    reconcile_interval_s: Seconds = 30.0
    """How often allocations are checked against the pods that hold them (Kubernetes mode)."""
    kubeconfig: KUBECONFIG = None
    """Kubeconfig for binding pods; None with the extender on: in-cluster configuration."""
    leader_ttl_s: Seconds = 10.0
    """The leader lease: a standby takes over this long after the leader stopped renewing."""
    device_config: str | None = None
    """HAMi's device configuration file (shared.deviceconfig): the resource names pods are
    read by."""
    resources: ResourceNames = ResourceNames()
    """The resource names pods are read by: HAMi's, or the device configuration's."""

    def __post_init__(self) -> None:
        for name, value in (
            ("node_ttl_s", self.node_ttl_s),
            ("sweep_interval_s", self.sweep_interval_s),
            ("leader_ttl_s", self.leader_ttl_s),
            ("reconcile_interval_s", self.reconcile_interval_s),
        ):
            if not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number of seconds, not {value}")


class NodeAgentSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    nats_url: NATS_URL = "nats://127.0.0.1:4222"
    nats_credentials: str | None = None
    """A JSON file {user, password} (shared.natsauth); None: connect without."""
    nats_replicas: Replicas = 1
    """Copies of the buckets and streams this service creates (3 on a 3-server cluster)."""
    node: Annotated[str, msgspec.Meta(extra={"env": "HAMI_NODE_NAME"})] = ""
    """Node name; the host name when empty."""
    simulate: str | None = None
    """Simulated devices, e.g. ``2xH200,1xT4``; None: NVML (one simulated H200 without it)."""
    require_nvml: bool = False
    """Without `simulate`: stop when NVML has no device, instead of simulating one H200."""
    device_backend: Literal["nvml", "npu-smi", "cnmon", "hy-smi", "ixsmi", "amd-smi"] = "nvml"
    """Where devices are read without `simulate`: NVML, or a vendor's tool (Ascend npu-smi,
    Cambricon cnmon, Hygon hy-smi, Iluvatar ixsmi, AMD amd-smi); a tool must answer at start."""
    split_count: Annotated[int, msgspec.Meta(ge=1, le=1024)] = 10
    """How many containers may share one device (HAMi's deviceSplitCount)."""
    memory_scaling: Scaling = 1.0
    """Allocatable memory = physical memory x this (HAMi's deviceMemoryScaling)."""
    core_scaling: Scaling = 1.0
    """Allocatable compute = 100 x this (HAMi's deviceCoreScaling)."""
    heartbeat_interval_s: Seconds = 5.0
    """How often the inventory is published."""
    usage_interval_s: Seconds = 10.0
    """How often device and container usage are published."""
    log_level: LogLevel = "INFO"
    device_plugin: bool = False
    """Serve the kubelet device plugin and per-container usage (Kubernetes nodes)."""
    kubeconfig: KUBECONFIG = None
    """None: the in-cluster service account (or the KUBECONFIG default)."""
    resource_name: str = "nvidia.com/gpu"
    """The extended resource the device plugin advertises."""
    plugin_dir: str = "/var/lib/kubelet/device-plugins"
    """The kubelet's device-plugin directory."""
    pod_resources_socket: str = "/var/lib/kubelet/pod-resources/kubelet.sock"
    """The kubelet's PodResources API."""
    vgpu_root: str = "/usr/local/vgpu"
    """Host directory for the library, the preload file and the containers' regions."""
    libvgpu: Annotated[str, msgspec.Meta(extra={"env": "HAMI_NODE_LIBVGPU"})] = ""
    """The isolation library on the host; empty: `<vgpu_root>/libvgpu.so`."""
    core_policy: Annotated[
        Literal["default", "force", "disable"],
        msgspec.Meta(extra={"env": "GPU_CORE_UTILIZATION_POLICY"}),
    ] = "default"
    """GPU_CORE_UTILIZATION_POLICY for containers: default, force or disable."""
    dra: bool = False
    """Be the kubelet's DRA plugin (driver gpu.hami.io): publish this node's ResourceSlice
    (its GPUs as devices with consumable memory, cores and shares) and prepare the claims
    kube-scheduler allocates from it as CDI devices (docs/dra.md)."""
    dra_plugins_dir: str = "/var/lib/kubelet/plugins"
    """Where the DRA service's socket goes (`<dir>/gpu.hami.io/dra.sock`)."""
    dra_registry_dir: str = "/var/lib/kubelet/plugins_registry"
    """The kubelet's plugin registry (the registration socket)."""
    cdi_dir: str = "/var/run/cdi"
    """Where the container runtime reads CDI specs (containerd's `cdi_spec_dirs`)."""
    local_jobs_dir: str | None = None
    """Local mode: where `hami run` jobs keep their regions (`<state>/containers`); each job's
    usage on this node is read from there and published. None: no local jobs."""
    region_grace_s: Seconds = 60.0
    """A region whose container the kubelet does not list is removed after this long."""
    device_config: str | None = None
    """HAMi's device configuration file (shared.deviceconfig): split count, scaling, core
    policy and resource name for this node, below flags and environment."""
    gpu_mode: Literal["hami-core", "mig"] = "hami-core"
    """How this node's NVIDIA GPUs in MIG mode are shared (HAMi's `operatingmode`): in
    `hami-core` the MIG instances already on them are offered whole, by profile (the other
    GPUs are shared by interception); in `mig` each offers its MIG geometry and the agent
    makes an instance of the profile the allocator picked for each container, and takes it
    down when the allocation ends (docs/devices.md)."""

    def __post_init__(self) -> None:
        if self.dra and self.device_plugin:
            # Both would offer the same GPUs to two allocators that do not see each other.
            raise ValueError("--dra and --device-plugin are exclusive on a node: choose one")

    @property
    def node_name(self) -> str:
        return self.node or socket.gethostname()


class TelemetrySettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    nats_url: NATS_URL = "nats://127.0.0.1:4222"
    metrics_host: str = "127.0.0.1"
    """Loopback by default: metrics name pods and nodes."""
    metrics_port: Port = 9395
    """Prometheus metrics at `/metrics`, and the web page at `/` (who shares which GPU)."""
    trace_link: str | None = None
    """The web page links each allocation to its trace at this URL, `{trace_id}` replaced
    (e.g. `http://jaeger:16686/trace/{trace_id}`); None: no links."""
    status_interval_s: Seconds = 2.0
    """How often the allocator is asked for the waiting requests the page shows."""
    log_level: LogLevel = "INFO"
    nats_credentials: str | None = None
    """A JSON file {user, password} (shared.natsauth); None: connect without."""


class CliSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """What `hami` (the local-mode CLI) takes from its environment, read once by the loader;
    a subcommand's own flags (`--state-dir`, `--nats`) override them."""

    state_dir: Annotated[str, msgspec.Meta(extra={"env": "HAMI_STATE_DIR"})] = ""
    """Local state (the running `hami up`'s record, credentials, regions); empty:
    `$XDG_STATE_HOME/hami`, else `~/.local/state/hami`."""
    xdg_state_home: Annotated[str, msgspec.Meta(extra={"env": "XDG_STATE_HOME"})] = ""
    """The freedesktop base directory for state."""
    nats_url: Annotated[str, msgspec.Meta(extra={"env": "HAMI_NATS_URL"})] = ""
    """Join this NATS server instead of the one the local `hami up` runs."""
    nats_credentials: Annotated[str, msgspec.Meta(extra={"env": "HAMI_NATS_CREDENTIALS"})] = ""
    """A JSON file {user, password}; empty: the client credentials `hami up` made."""
    libvgpu: Annotated[str, msgspec.Meta(extra={"env": "HAMI_LIBVGPU"})] = "auto"
    """The isolation library jobs are preloaded with: `auto` (the one built with the install),
    a path, or empty for none (limits are then not enforced, and `hami run` says so)."""
