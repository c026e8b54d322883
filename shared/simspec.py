"""The grammar of simulated devices (`2xH200,1xT4`), in one home for the node agent that
simulates them and `hami up`, which refuses a bad spec before it starts anything."""

from __future__ import annotations

import re
from dataclasses import dataclass

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

MIG_MODELS = ("H200", "H100", "A100")
"""Simulated models with a MIG geometry (shared/mig.py's table)."""
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


@dataclass(frozen=True, slots=True)
class SimulatedDevice:
    model: str
    memory_bytes: int
    kind: str
    mig: bool = False
    """An NVIDIA GPU in MIG mode (`mig:MODEL`): its MIG geometry is offered."""


def parse_spec(spec: str) -> list[SimulatedDevice]:
    """One device per simulated device, in order; a model another kind also has is the first
    registered kind's unless named `KIND:MODEL` (e.g. `1xmetax-sgpu:MXC500`); `mig:MODEL` is
    an NVIDIA GPU in MIG mode (A100, H100, H200). InvalidRequest naming the flag and the
    allowed values otherwise."""
    devices: list[SimulatedDevice] = []
    for item in spec.split(","):
        match = _ITEM.match(item)
        if not match:
            raise InvalidRequest(
                f"--simulate {spec!r}: expected COUNTxMODEL[,COUNTxMODEL...], e.g. 2xH200,1xT4"
            )
        count, kind, name = int(match.group(1)), match.group(2), match.group(3)
        found: tuple[str, int, str] | None = None
        mig = kind == "mig"
        if mig:
            if name.upper() not in MIG_MODELS:
                raise InvalidRequest(
                    f"--simulate: {name!r} has no MIG geometry here; MIG models: A100, H100, H200"
                )
            kind = "nvidia"
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
        devices.extend([SimulatedDevice(*found, mig=mig)] * count)
    return devices
