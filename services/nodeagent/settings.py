"""Node agent settings, decoded once: flags > environment > defaults."""

from __future__ import annotations

import argparse
import os
import socket

import msgspec


class NodeAgentSettings(msgspec.Struct, frozen=True, kw_only=True):
    nats_url: str = "nats://127.0.0.1:4222"
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

    @property
    def node_name(self) -> str:
        return self.node or socket.gethostname()


def parse_settings(argv: list[str] | None = None) -> NodeAgentSettings:
    env = os.environ
    d = NodeAgentSettings()
    parser = argparse.ArgumentParser(prog="hami-nodeagent", description="HAMi node agent")
    parser.add_argument("--nats", dest="nats_url", default=env.get("HAMI_NATS_URL", d.nats_url))
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
    return NodeAgentSettings(**vars(parser.parse_args(argv)))
