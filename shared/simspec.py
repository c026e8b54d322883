"""The grammar of simulated devices (`2xH200,1xT4`), in one home for the node agent that
simulates them and `hami up`, which refuses a bad spec before it starts anything."""

from __future__ import annotations

import re

from shared.errors import InvalidRequest

# Memory as NVML reports it for the common models (bytes), so simulated inventories look real.
KNOWN_MODELS: dict[str, tuple[str, int]] = {
    "H200": ("NVIDIA H200", 150754820096),
    "H100": ("NVIDIA H100 80GB HBM3", 85520809984),
    "A100": ("NVIDIA A100-SXM4-80GB", 85899345920),
    "A100-40G": ("NVIDIA A100-SXM4-40GB", 42949672960),
    "L40S": ("NVIDIA L40S", 48305799168),
    "L4": ("NVIDIA L4", 24152899584),
    "A10": ("NVIDIA A10", 24146608128),
    "V100": ("Tesla V100-SXM2-32GB", 34359738368),
    "T4": ("Tesla T4", 16106127360),
    "RTX4090": ("NVIDIA GeForce RTX 4090", 25757220864),
}

_ITEM = re.compile(r"^\s*(\d+)\s*[xX]\s*([A-Za-z0-9-]+)\s*$")


def parse_spec(spec: str) -> list[tuple[str, int]]:
    """One (model name, memory bytes) per simulated device, in order; InvalidRequest naming
    the flag and the allowed values otherwise."""
    devices: list[tuple[str, int]] = []
    for item in spec.split(","):
        match = _ITEM.match(item)
        if not match:
            raise InvalidRequest(
                f"--simulate {spec!r}: expected COUNTxMODEL[,COUNTxMODEL...], e.g. 2xH200,1xT4"
            )
        count, model = int(match.group(1)), match.group(2).upper()
        if model not in KNOWN_MODELS:
            raise InvalidRequest(
                f"--simulate: unknown model {match.group(2)!r}; known: {', '.join(KNOWN_MODELS)}"
            )
        if not 1 <= count <= 16:
            raise InvalidRequest(f"--simulate: count {count} for {model} must be 1..16")
        devices.extend([KNOWN_MODELS[model]] * count)
    return devices
