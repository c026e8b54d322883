"""Back from placements to HAMi's pod annotation encoding (`hami.io/<kind>-devices-*`). The
pod parser is shared/podspec.py."""

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


def device_annotations(
    containers: Sequence[Sequence[DeviceGrant]], kinds: KindRegistry = DEFAULT_KINDS
) -> dict[str, str]:
    """Each kind's pair of HAMi's annotations (`hami.io/<word>-devices-to-allocate` and
    `-allocated`) with that kind's devices per container (the pod's other containers empty),
    as HAMi writes them: a kind's device plugin, ours or its vendor's, reads its own."""
    out: dict[str, str] = {}
    for name in dict.fromkeys(g.kind for grants in containers for g in grants):
        kind = kinds.named(name)
        text = encode_devices(
            [[g for g in grants if g.kind == name] for grants in containers], kinds
        )
        out[kind.to_allocate_annotation] = text
        out[kind.allocated_annotation] = text
    return out
