"""Simulated devices for machines without a GPU: `2xH200,1xT4`, other vendors' models too
(`2xAscend910B3,1xMLU370`; grammar: shared/simspec.py)."""

from __future__ import annotations

import uuid

from services.nodeagent.core.readings import DeviceReading
from shared.simspec import parse_spec

COMPUTE_UNITS = {"MI300X": 304}
"""Simulated AMD GPUs' compute units (as amd-smi reports them), for their CU masks."""
PREFIXES = {"nvidia": "GPU", "amd": "GPU", "hygon-dcu": "DCU", "cambricon-mlu": "MLU"}
"""How simulated UUIDs start per kind (NVML's GPU-...; the others their vendor's word)."""


def _uuid(kind: str, node: str, index: int) -> str:
    stable = uuid.uuid5(uuid.NAMESPACE_DNS, f"hami-sim/{node}/{index}")
    return f"{PREFIXES.get(kind, 'DEV')}-{stable}"


def parse_simulation(spec: str, node: str) -> list[DeviceReading]:
    """Devices for a spec like ``2xH200,1xT4``; UUIDs are stable for a node name and position."""
    return simulated_devices(spec, node)[0]


def simulated_devices(spec: str, node: str) -> tuple[list[DeviceReading], frozenset[str]]:
    """The devices, and the UUIDs of those simulated in MIG mode (``1xmig:H200``)."""
    readings, mig = [], set()
    for index, device in enumerate(parse_spec(spec)):
        reading = DeviceReading(
            uuid=_uuid(device.kind, node, index),
            index=index,
            model=device.model,
            memory_total_bytes=device.memory_bytes,
            pci_bus_id=f"00000000:{index + 1:02x}:00.0",
            numa_node=0,
            kind=device.kind,
            simulated=True,
            compute_units=COMPUTE_UNITS.get(device.model, 0) if device.kind == "amd" else 0,
        )
        readings.append(reading)
        if device.mig:
            mig.add(reading.uuid)
    return readings, frozenset(mig)
