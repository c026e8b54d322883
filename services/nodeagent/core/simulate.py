"""Simulated devices for machines without a GPU: `2xH200,1xT4` (grammar: shared/simspec.py)."""

from __future__ import annotations

import uuid

from services.nodeagent.core.readings import DeviceReading
from shared.simspec import parse_spec


def parse_simulation(spec: str, node: str) -> list[DeviceReading]:
    """Devices for a spec like ``2xH200,1xT4``; UUIDs are stable for a node name and position."""
    return [
        DeviceReading(
            uuid=f"GPU-{uuid.uuid5(uuid.NAMESPACE_DNS, f'hami-sim/{node}/{index}')}",
            index=index,
            model=name,
            memory_total_bytes=memory,
            pci_bus_id=f"00000000:{index + 1:02x}:00.0",
            numa_node=0,
            simulated=True,
        )
        for index, (name, memory) in enumerate(parse_spec(spec))
    ]
