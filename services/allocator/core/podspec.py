"""Back from placements to HAMi's pod annotation encoding (`hami.io/vgpu-devices-*`). The pod
parser is shared/podspec.py."""

from __future__ import annotations

from collections.abc import Sequence

from shared import deviceannotation
from shared.deviceannotation import AnnotatedDevice
from shared.devicekinds import DEFAULT_KINDS, KindRegistry
from shared.schemas.placement import DeviceGrant


def encode_devices(
    containers: Sequence[Sequence[DeviceGrant]], kinds: KindRegistry = DEFAULT_KINDS
) -> str:
    """HAMi's `hami.io/vgpu-devices-to-allocate` encoding (shared.deviceannotation)."""
    return deviceannotation.encode(
        [
            [
                AnnotatedDevice(g.uuid, kinds.named(g.kind).annotation_type, g.memory_mib, g.cores)
                for g in grants
            ]
            for grants in containers
        ]
    )


decode_devices = deviceannotation.decode
