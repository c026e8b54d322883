"""Usage feedback: how busy each device really is, from the node agents' usage samples.

Allocations reserve memory and cores; they say nothing of a device that is busy in practice (a
process outside HAMi, a job at its limit all day). Samples of device utilisation are smoothed
per device and quantised into a few *heat* levels (core/signals.py, beside the ledger); a level
change is the only thing that moves the node's generation, so a steady device leaves every
remembered fit and score valid. Placement
uses heat last: among devices that a policy ranks equal the cooler is taken, and among nodes
that score equal the one whose chosen devices are cooler wins. Heat never overrides a policy.
"""

from __future__ import annotations

import math
from dataclasses import replace

from immutables import Map

from services.allocator.core.signals import Signals
from services.allocator.core.state import NO_HEAT
from shared.schemas.inventory import DeviceInfo
from shared.schemas.usage import UsageSample

TAU_S = 30.0
"""Smoothing time constant: a step in utilisation shows two-thirds of the way after 30 s."""
LEVEL_PERCENT = 25.0
"""Width of a heat level: 0 below 25% utilisation, 1 below 50%, 2 below 75%, 3 above."""
MAX_LEVEL = 3


def level_of(utilization_percent: float) -> int:
    return max(0, min(MAX_LEVEL, int(utilization_percent // LEVEL_PERCENT)))


def observe_usage(signals: Signals, sample: UsageSample, now: float) -> Signals:
    """Fold one device sample in (per-allocation samples and samples without a utilisation
    reading carry no heat)."""
    if sample.allocation_id is not None or sample.utilization_percent is None:
        return signals
    value = min(100.0, max(0.0, sample.utilization_percent))
    smoothed = signals.utilization.get(sample.device_uuid)
    if smoothed is None:
        current = value
    else:
        before, at = smoothed
        weight = 1 - math.exp(-max(0.0, now - at) / TAU_S)
        current = before + weight * (value - before)
    utilization = signals.utilization.set(sample.device_uuid, (current, now))
    signals = replace(signals, utilization=utilization)
    node_heat = signals.heat.get(sample.node, NO_HEAT)
    level = level_of(current)
    if node_heat.get(sample.device_uuid, 0) == level:
        return signals
    node_heat = (
        node_heat.set(sample.device_uuid, level) if level else node_heat.delete(sample.device_uuid)
    )
    heat = (
        signals.heat.set(sample.node, node_heat) if node_heat else signals.heat.delete(sample.node)
    )
    return replace(signals, heat=heat).touched(sample.node)


def forget_heat(signals: Signals, node: str, devices: tuple[DeviceInfo, ...]) -> Signals:
    """The node left: its devices' readings go with it (``devices``: its last inventory's)."""
    uuids = set(signals.heat.get(node, NO_HEAT)) | {d.uuid for d in devices}
    if not uuids & set(signals.utilization):
        return signals
    utilization = Map({u: v for u, v in signals.utilization.items() if u not in uuids})
    heat = signals.heat.delete(node) if node in signals.heat else signals.heat
    return replace(signals, heat=heat, utilization=utilization).touched(node)
