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

_ITEM = re.compile(r"^\s*(\d+)\s*[xX]\s*(?:([a-z0-9-]+):)?([A-Za-z0-9 -]+?)\s*$")
ALIASES = {"MLU370": "MLU370-X8", "S4000": "MTT S4000"}
"""Short names people type for the vendors' model names."""


def _vendor_model(name: str, kind: str | None) -> tuple[str, int, str] | None:
    from shared.vendorkinds import VENDOR_KINDS

    wanted = ALIASES.get(name.upper(), name).upper()
    for candidate in VENDOR_KINDS.kinds:
        if kind is not None and candidate.name != kind:
            continue
        model = candidate.model(wanted)
        if model is not None:
            return model.name, model.memory_mib << 20, candidate.name
    return None


def known_models() -> list[str]:
    from shared.vendorkinds import VENDOR_KINDS

    vendors = [f"{k.name}:{m.name}" for k in VENDOR_KINDS.kinds for m in k.models]
    return [*KNOWN_MODELS, *vendors]


def parse_spec(spec: str) -> list[tuple[str, int, str]]:
    """One (model name, memory bytes, device kind) per simulated device, in order; a model
    another kind also has is the first registered kind's unless named `KIND:MODEL` (e.g.
    `1xmetax-sgpu:MXC500`). InvalidRequest naming the flag and the allowed values otherwise."""
    devices: list[tuple[str, int, str]] = []
    for item in spec.split(","):
        match = _ITEM.match(item)
        if not match:
            raise InvalidRequest(
                f"--simulate {spec!r}: expected COUNTxMODEL[,COUNTxMODEL...], e.g. 2xH200,1xT4"
            )
        count, kind, name = int(match.group(1)), match.group(2), match.group(3)
        found: tuple[str, int, str] | None = None
        if kind in (None, "nvidia") and name.upper() in KNOWN_MODELS:
            model, memory = KNOWN_MODELS[name.upper()]
            found = (model, memory, "nvidia")
        else:
            found = _vendor_model(name, kind)
        if found is None:
            raise InvalidRequest(
                f"--simulate: unknown model {name!r}; known: {', '.join(known_models())}"
            )
        if not 1 <= count <= 16:
            raise InvalidRequest(f"--simulate: count {count} for {name} must be 1..16")
        devices.extend([found] * count)
    return devices
