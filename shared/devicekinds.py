"""The device-kind registry: what a vendor family contributes, as data: its resource names and
their units, its selector annotations, its name in HAMi's annotations, and how it is shared
(interception, hardware partitions with their profiles per model, or whole devices). Fit,
policies and the ledger see only a kind's name and its devices' isolation and profiles, so a
vendor plugs in by registering a kind (shared/vendorkinds.py has HAMi's), not by code."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from shared.errors import InvalidRequest
from shared.resources import (
    NOUSE_TYPE,
    NOUSE_UUID,
    NVIDIA_ANNOTATION_TYPE,
    USE_TYPE,
    USE_UUID,
    ResourceNames,
)
from shared.schemas.inventory import Isolation, PartitionProfile


@dataclass(frozen=True, slots=True)
class Selectors:
    """The pod annotations that keep a kind's devices to some models or UUIDs."""

    use_type: str = ""
    nouse_type: str = ""
    use_uuid: str = ""
    nouse_uuid: str = ""


NVIDIA_SELECTORS = Selectors(USE_TYPE, NOUSE_TYPE, USE_UUID, NOUSE_UUID)


@dataclass(frozen=True, slots=True)
class Model:
    """A model of the kind, as simulated devices and partition profiles know it."""

    name: str
    """As the vendor's tool reports it (matched by type selectors)."""
    memory_mib: int
    profiles: tuple[PartitionProfile, ...] = ()
    """Hardware partitions (partition kinds), smallest first."""


@dataclass(frozen=True, slots=True)
class DeviceKind:
    name: str
    """Matches DeviceInfo.kind from the node agents and ContainerRequest.kind."""
    annotation_type: str
    """The device type written in the pod's device annotations (HAMi writes NVIDIA for GPUs)."""
    resources: ResourceNames
    annotation_word: str = "vgpu"
    """The kind's word in HAMi's pod annotations: `hami.io/<word>-devices-to-allocate` and
    `-allocated` (NVIDIA `vgpu`, Cambricon `cambricon-mlu`, Hygon `dcu`, Ascend its chip, ...):
    each kind's devices in its own pair, as HAMi writes them for its vendors' plugins."""
    vendor: str = "NVIDIA"
    isolation: Isolation = "interception"
    memory_unit_mib: int = 1
    """One unit of the memory resource in MiB (Cambricon and Iluvatar 256, Moore Threads 512,
    Metax sGPU 1024)."""
    memory_sizes: tuple[int, ...] = ()
    """The only memory amounts (in units) allowed; empty: any."""
    cores_per_device: int = 100
    """The cores resource's value for a whole device (Moore Threads: 16)."""
    selectors: Selectors = NVIDIA_SELECTORS
    models: tuple[Model, ...] = ()
    """Known models (simulation, partition profiles); the first is the simulated default."""
    _by_model: Mapping[str, Model] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_model", {m.name.upper(): m for m in self.models})

    def memory_mib(self, value: int, where: str) -> int:
        """The memory resource's value in MiB; InvalidRequest for an amount the kind forbids."""
        if self.memory_sizes and value not in self.memory_sizes:
            sizes = ", ".join(str(s) for s in self.memory_sizes)
            raise InvalidRequest(
                f"{where}: {self.resources.memory} {value} is not one of {sizes} "
                f"(units of {self.memory_unit_mib} MiB)"
            )
        return value * self.memory_unit_mib

    def cores_percent(self, value: int, where: str) -> int:
        """The cores resource's value as percent of a device (rounded up)."""
        if not 0 <= value <= self.cores_per_device:
            raise InvalidRequest(
                f"{where}: {self.resources.cores} {value} must be 0..{self.cores_per_device}"
            )
        return math.ceil(value * 100 / self.cores_per_device)

    @property
    def to_allocate_annotation(self) -> str:
        return f"hami.io/{self.annotation_word}-devices-to-allocate"

    @property
    def allocated_annotation(self) -> str:
        return f"hami.io/{self.annotation_word}-devices-allocated"

    def model(self, name: str) -> Model | None:
        return self._by_model.get(name.upper())

    def profiles_of(self, model: str) -> tuple[PartitionProfile, ...]:
        found = self.model(model)
        return found.profiles if found is not None else ()


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

    def asked_by(self, values: Mapping[str, object], where: str) -> DeviceKind | None:
        """The kind whose resources a container names; one per container."""
        asked = [k for k in self.kinds if any(n in values for n in k.resources.managed)]
        if len(asked) > 1:
            raise InvalidRequest(
                f"{where}: asks for devices of several kinds ({', '.join(k.name for k in asked)});"
                " put each kind in its own container"
            )
        return asked[0] if asked else None

    def to_allocate_annotations(self) -> tuple[str, ...]:
        """Every kind's to-allocate annotation: a pod is served once all are empty."""
        return tuple(dict.fromkeys(k.to_allocate_annotation for k in self.kinds))

    def managed(self) -> tuple[str, ...]:
        """Every resource name of every kind."""
        return tuple(n for k in self.kinds for n in k.resources.managed)


DEFAULT_KINDS = KindRegistry()
