"""Node agent settings: `NodeAgentSettings` (shared/servicesettings.py) is the whole contract;
flags, `HAMI_*` environment, a settings file and the help derive from it (shared/settings.py),
and HAMi's device configuration fills what none of those set, with this node's `nodeconfig`
entry applied."""

from __future__ import annotations

import socket
from collections.abc import Mapping, Sequence
from typing import Any

from shared import settings
from shared.deviceconfig import load_device_config
from shared.servicesettings import NodeAgentSettings as NodeAgentSettings


def _from_device_config(values: Mapping[str, Any]) -> dict[str, Any]:
    path = values.get("device_config")
    if not path:
        return {}
    config = load_device_config(path)
    node = values.get("node") or socket.gethostname()
    nvidia = config.for_node(node)
    mode = config.operating_mode(node)
    return {
        "split_count": nvidia.device_split_count,
        "memory_scaling": nvidia.device_memory_scaling,
        "core_scaling": nvidia.device_core_scaling,
        "core_policy": nvidia.gpu_core_policy,
        "resource_name": nvidia.resource_count_name,
        **({"gpu_mode": mode} if mode is not None else {}),
    }


def parse_settings(argv: Sequence[str] | None = None) -> NodeAgentSettings:
    return settings.load(
        NodeAgentSettings,
        argv,
        prog="hami-nodeagent",
        description="HAMi node agent",
        fallback=_from_device_config,
    )
