"""The device configuration, in HAMi's names: one file (a ConfigMap on Kubernetes) read by the
node agents and the webhook, with per-node overrides.

HAMi splits it over two ConfigMaps (the scheduler's `device-config.yaml` with a `nvidia:` section,
the device plugin's `config.json` with `nodeconfig:`); here both sections live in one file, with
HAMi's keys, so a user's values carry over as they are:

    nvidia:
      resourceCountName: nvidia.com/gpu
      deviceSplitCount: 10
      deviceMemoryScaling: 1
      defaultMemory: 0
    nodeconfig:
      - name: gpu-node-7
        devicesplitcount: 4

Decoded once at start; a file with an unknown key or a value out of range is refused with one
line naming the key (the service does not start, so the running pods of the previous version
keep serving)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec

from shared.errors import InvalidRequest
from shared.resources import ResourceNames

CorePolicy = Literal["default", "force", "disable"]
SplitCount = Annotated[int, msgspec.Meta(ge=1, le=1024)]
Scaling = Annotated[float, msgspec.Meta(gt=0, le=100)]
Percent = Annotated[int, msgspec.Meta(ge=0, le=100)]


class NvidiaConfig(
    msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, rename="camel"
):
    """HAMi's `nvidia:` section (the keys HAMi reads for its scheduler and device plugin)."""

    resource_count_name: str = "nvidia.com/gpu"
    resource_memory_name: str = "nvidia.com/gpumem"
    resource_memory_percentage_name: str = "nvidia.com/gpumem-percentage"
    resource_core_name: str = "nvidia.com/gpucores"
    resource_priority_name: str = "nvidia.com/priority"
    default_memory: Annotated[int, msgspec.Meta(ge=0)] = 0
    """MiB per device when a pod gives only a count (0: the whole device)."""
    default_cores: Percent = 0
    default_gpu_num: Annotated[int, msgspec.Meta(ge=1, le=16)] = msgspec.field(
        default=1, name="defaultGPUNum"
    )
    device_split_count: SplitCount = 10
    device_memory_scaling: Scaling = 1.0
    device_core_scaling: Scaling = 1.0
    gpu_core_policy: CorePolicy = "default"
    # HAMi's other `nvidia:` keys: accepted so that HAMi's own file loads unchanged, checked
    # for type, not acted on yet (docs/deploy.md lists them; `ignored` names those set).
    overwrite_env: bool = False
    pre_configured_device_memory: Annotated[int, msgspec.Meta(ge=0)] = 0
    memory_factor: Annotated[int, msgspec.Meta(ge=1)] = 1
    enable_numa_topology: bool = False
    lib_cuda_log_level: int | str | None = None
    runtime_class_name: str = ""
    mig_profile_allowlist: tuple[dict[str, Any], ...] = ()

    @property
    def ignored(self) -> tuple[str, ...]:
        """HAMi keys set to something other than their default that this version ignores."""
        defaults = NvidiaConfig()
        names = (
            "overwrite_env",
            "pre_configured_device_memory",
            "memory_factor",
            "enable_numa_topology",
            "lib_cuda_log_level",
            "runtime_class_name",
        )
        return tuple(n for n in names if getattr(self, n) != getattr(defaults, n))

    @property
    def resources(self) -> ResourceNames:
        return ResourceNames(
            count=self.resource_count_name,
            memory=self.resource_memory_name,
            memory_percentage=self.resource_memory_percentage_name,
            cores=self.resource_core_name,
            priority=self.resource_priority_name,
        )


class NodeOverride(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One entry of HAMi's `nodeconfig` list (lower-case keys, as HAMi spells them)."""

    name: Annotated[str, msgspec.Meta(min_length=1)]
    devicesplitcount: SplitCount | None = None
    devicememoryscaling: Scaling | None = None
    devicecorescaling: Scaling | None = None
    gpucorepolicy: CorePolicy | None = None
    # HAMi's other per-node keys: accepted so that its config.json loads, not acted on yet.
    operatingmode: Literal["hami-core", "mig"] | None = None
    preconfigureddevicememory: Annotated[int, msgspec.Meta(ge=0)] | None = None
    enablenumatopology: bool | None = None
    migstrategy: Literal["none", "mixed"] | None = None
    filterdevices: dict[str, Any] | None = None
    enablegetpreferredallocation: bool | None = None


VendorSection = dict[str, Any] | tuple[dict[str, Any], ...] | None
"""Another vendor's section of HAMi's file: kept for when that vendor's kind arrives."""


class DeviceConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    nvidia: NvidiaConfig = NvidiaConfig()
    nodeconfig: tuple[NodeOverride, ...] = ()
    cambricon: VendorSection = None
    hygon: VendorSection = None
    metax: VendorSection = None
    enflame: VendorSection = None
    mthreads: VendorSection = None
    iluvatars: VendorSection = None
    kunlun: VendorSection = None
    awsneuron: VendorSection = None
    amd: VendorSection = None
    vastai: VendorSection = None
    biren: VendorSection = None
    vnpus: VendorSection = None

    def __post_init__(self) -> None:
        names = [n.name for n in self.nodeconfig]
        for name in names:
            if names.count(name) > 1:
                raise ValueError(f"node {name!r} appears twice - at `$.nodeconfig`")

    def operating_mode(self, node: str) -> Literal["hami-core", "mig"] | None:
        """This node's `operatingmode` (`nodeconfig`), if set."""
        return next((o.operatingmode for o in self.nodeconfig if o.name == node), None)

    def for_node(self, node: str) -> NvidiaConfig:
        """The `nvidia:` values with this node's overrides applied."""
        for override in self.nodeconfig:
            if override.name == node:
                changes = {
                    "device_split_count": override.devicesplitcount,
                    "device_memory_scaling": override.devicememoryscaling,
                    "device_core_scaling": override.devicecorescaling,
                    "gpu_core_policy": override.gpucorepolicy,
                }
                return msgspec.structs.replace(
                    self.nvidia, **{k: v for k, v in changes.items() if v is not None}
                )
        return self.nvidia


def decode_device_config(data: bytes, source: str) -> DeviceConfig:
    """YAML (JSON is YAML too); errors name the key: `... - at $.nvidia.deviceSplitCount`."""
    try:
        return msgspec.yaml.decode(data, type=DeviceConfig)
    except (msgspec.ValidationError, msgspec.DecodeError, ValueError) as e:
        one_line = " ".join(str(e).split())
        raise InvalidRequest(f"device configuration {source}: {one_line}") from None


def load_device_config(path: str | Path) -> DeviceConfig:
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise InvalidRequest(f"device configuration {path}: {e.strerror}") from None
    return decode_device_config(data, str(path))
