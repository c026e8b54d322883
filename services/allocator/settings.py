"""Allocator settings, decoded once: flags > environment > defaults."""

from __future__ import annotations

import argparse
import dataclasses
import math
import os

import msgspec

from services.allocator.core.kinds import DEFAULT_KINDS, NVIDIA, KindRegistry
from services.allocator.core.policies import policy_named
from shared.deviceconfig import load_device_config
from shared.errors import InvalidRequest
from shared.resources import ResourceNames


class AllocatorSettings(msgspec.Struct, frozen=True, kw_only=True):
    nats_url: str = "nats://127.0.0.1:4222"
    """NATS server to serve on."""
    nats_credentials: str | None = None
    """A JSON file {user, password} (shared.natsauth); None: connect without."""
    nats_replicas: int = 1
    """Copies of the buckets and streams this service creates (3 on a 3-server cluster)."""
    node_policy: str = "binpack"
    """Default node policy when a request names none (binpack | spread | best-fit |
    fragmentation)."""
    gpu_policy: str = "spread"
    """Default device policy when a request names none (binpack | spread | best-fit |
    fragmentation); a request whose node policy is best-fit or fragmentation and that names
    no device policy gets its node policy's device order."""
    node_ttl_s: float = 15.0
    """A node whose inventory is not refreshed for this long takes no new placements."""
    sweep_interval_s: float = 1.0
    """How often expired leases are looked for."""
    log_level: str = "INFO"
    extender_host: str = "127.0.0.1"
    extender_port: int | None = None
    """Serve kube-scheduler's extender API on this port (0: any free one); None: do not."""
    reconcile_interval_s: float = 30.0
    """How often allocations are checked against the pods that hold them (Kubernetes mode)."""
    kubeconfig: str | None = None
    """Kubeconfig for binding pods; None with the extender on: in-cluster configuration."""
    leader_ttl_s: float = 10.0
    """The leader lease: a standby takes over this long after the leader stopped renewing."""
    resources: ResourceNames = ResourceNames()
    """The resource names pods are read by: HAMi's, or the device configuration's
    (`--device-config`, shared.deviceconfig)."""

    @property
    def kinds(self) -> KindRegistry:
        if self.resources == NVIDIA.resources:
            return DEFAULT_KINDS
        return KindRegistry((dataclasses.replace(NVIDIA, resources=self.resources),))

    def __post_init__(self) -> None:
        policy_named(self.node_policy, field="--node-policy")
        policy_named(self.gpu_policy, field="--gpu-policy")
        for name, value in (
            ("--node-ttl", self.node_ttl_s),
            ("--sweep-interval", self.sweep_interval_s),
            ("--leader-ttl", self.leader_ttl_s),
        ):
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} {value} must be a finite positive number of seconds")


def parse_settings(argv: list[str] | None = None) -> AllocatorSettings:
    env = os.environ
    defaults = AllocatorSettings()
    parser = argparse.ArgumentParser(prog="hami-allocator", description="HAMi allocator")
    parser.add_argument(
        "--nats", dest="nats_url", default=env.get("HAMI_NATS_URL", defaults.nats_url)
    )
    parser.add_argument(
        "--nats-credentials", default=os.environ.get("HAMI_NATS_CREDENTIALS") or None
    )
    parser.add_argument("--node-policy", default=env.get("HAMI_NODE_POLICY", defaults.node_policy))
    parser.add_argument("--gpu-policy", default=env.get("HAMI_GPU_POLICY", defaults.gpu_policy))
    parser.add_argument(
        "--node-ttl",
        dest="node_ttl_s",
        type=float,
        default=float(env.get("HAMI_NODE_TTL", defaults.node_ttl_s)),
    )
    parser.add_argument(
        "--sweep-interval", dest="sweep_interval_s", type=float, default=defaults.sweep_interval_s
    )
    parser.add_argument("--log-level", default=env.get("HAMI_LOG_LEVEL", defaults.log_level))
    parser.add_argument("--extender-host", default=defaults.extender_host)
    parser.add_argument("--extender-port", type=int, default=None)
    parser.add_argument("--kubeconfig", default=env.get("KUBECONFIG"))
    parser.add_argument(
        "--leader-ttl", dest="leader_ttl_s", type=float, default=defaults.leader_ttl_s
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
    values = vars(args)
    device_config = values.pop("device_config")
    if device_config is not None:
        try:
            values["resources"] = load_device_config(device_config).nvidia.resources
        except InvalidRequest as e:  # one line naming the key; the old pods keep serving
            raise SystemExit(f"hami-allocator: {e}") from None
    try:
        return AllocatorSettings(**values)
    except Exception as e:
        parser.error(str(e))
