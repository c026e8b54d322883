"""The device-kind registry: what a vendor family contributes (its resource names and its name
in HAMi's annotations). Fit, policies and the ledger only see a kind's name on devices and
requests, so another vendor plugs in by registering a kind, with no change to the core."""

from __future__ import annotations

from dataclasses import dataclass

from shared.errors import InvalidRequest
from shared.resources import NVIDIA_ANNOTATION_TYPE, ResourceNames


@dataclass(frozen=True, slots=True)
class DeviceKind:
    name: str
    """Matches DeviceInfo.kind from the node agents and ContainerRequest.kind."""
    annotation_type: str
    """The device type written in `hami.io/vgpu-devices-*` (HAMi writes NVIDIA for GPUs)."""
    resources: ResourceNames


NVIDIA = DeviceKind(
    name="nvidia", annotation_type=NVIDIA_ANNOTATION_TYPE, resources=ResourceNames()
)


@dataclass(frozen=True, slots=True)
class KindRegistry:
    kinds: tuple[DeviceKind, ...] = (NVIDIA,)

    def with_kind(self, kind: DeviceKind) -> KindRegistry:
        if any(k.name == kind.name for k in self.kinds):
            raise ValueError(f"device kind {kind.name!r} is registered already")
        return KindRegistry((*self.kinds, kind))

    def named(self, name: str) -> DeviceKind:
        for kind in self.kinds:
            if kind.name == name:
                return kind
        known = ", ".join(k.name for k in self.kinds)
        raise InvalidRequest(f"unknown device kind {name!r}; known: {known}")

    def asked_by(self, values: dict[str, object], where: str) -> DeviceKind | None:
        """The kind whose resources a container names; one per container."""
        asked = [k for k in self.kinds if any(n in values for n in k.resources.managed)]
        if len(asked) > 1:
            raise InvalidRequest(
                f"{where}: asks for devices of several kinds ({', '.join(k.name for k in asked)});"
                " put each kind in its own container"
            )
        return asked[0] if asked else None


DEFAULT_KINDS = KindRegistry()
