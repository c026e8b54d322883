"""Device managers: where readings come from. NVML on real GPUs, a simulation elsewhere."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal, Protocol

from services.nodeagent.core.inventory import MIB
from services.nodeagent.core.readings import DeviceReading, DriverInfo, UsageReading
from services.nodeagent.mig import HeldSlices, MigDevices, MigInstance, every_instance_held
from shared.errors import Unavailable
from shared.schemas.inventory import MigInstanceInfo

log = logging.getLogger("hami.nodeagent.devices")


GpuMode = Literal["hami-core", "mig"]


def _info(instance: MigInstance) -> MigInstanceInfo:
    return MigInstanceInfo(
        gpu_uuid=instance.gpu_uuid,
        uuid=instance.uuid,
        profile=instance.profile,
        gpu_instance=instance.gpu_instance,
        compute_instance=instance.compute_instances[0] if instance.compute_instances else None,
        start=instance.start,
        slices=instance.slices,
    )


class DeviceManager(Protocol):
    mig: MigDevices | None
    """MIG on this node's GPUs, where some can do it."""
    held_slices: HeldSlices

    def driver(self) -> DriverInfo: ...

    def devices(self) -> list[DeviceReading]: ...

    def usage(self) -> list[UsageReading]: ...

    def close(self) -> None: ...


def mig_readings(
    reading: DeviceReading, handle: Any, mig: MigDevices, mode: GpuMode, held: HeldSlices
) -> list[DeviceReading]:
    """A GPU in MIG mode as the scheduler should see it: in `mig` mode its geometry (the
    slices nobody here owns held); in `hami-core` mode the instances on it, each whole."""
    profiles = mig.manager.profiles(handle)
    instances = mig.manager.instances(handle)
    told = {i.gpu_instance: _info(i) for i in instances}
    if mode == "mig":
        return [
            replace(
                reading,
                isolation="partition",
                profiles=tuple(p.partition for p in profiles),
                slices=max(
                    (s + p.partition.slices for p in profiles for s in p.partition.placements),
                    default=0,
                ),
                slices_held=held(reading.uuid, instances),
                mig_instances=tuple(told.values()),
            )
        ]
    memory = {p.name: p.partition.memory_mib for p in profiles}
    return [
        replace(
            reading,
            uuid=instance.uuid,
            index=1000 * (reading.index + 1) + instance.gpu_instance,
            model=f"{reading.model} MIG {instance.profile}",
            memory_total_bytes=memory.get(instance.profile, 0) * MIB,
            isolation="whole",
            parent_uuid=reading.uuid,
            mig_instances=(told[instance.gpu_instance],),
        )
        for instance in instances
        if instance.uuid
    ]


def sysfs_numa_node(bus_id: str, sysfs: Path = Path("/sys/bus/pci/devices")) -> int | None:
    """NVML's bus id has an 8-digit domain, sysfs a 4-digit one; a negative node means none."""
    path = sysfs / bus_id.lower()[4:] / "numa_node"
    try:
        node = int(path.read_text().strip())
    except (OSError, ValueError):
        return None
    return node if node >= 0 else None


class NvmlDeviceManager:
    """Reads devices through NVML. ``nvml`` is the ``pynvml`` module, or anything with the same
    functions and exceptions (the recorded fixture in tests)."""

    def __init__(self, nvml: Any = None, gpu_mode: GpuMode = "hami-core") -> None:
        if nvml is None:
            import pynvml

            nvml = pynvml
        self._nvml = nvml
        nvml.nvmlInit()
        self.gpu_mode = gpu_mode
        self.mig: MigDevices | None = MigDevices(nvml)
        self.held_slices: HeldSlices = every_instance_held
        self._warned: set[str] = set()

    def _try(self, fn: Any, *args: Any) -> Any:
        try:
            return fn(*args)
        except self._nvml.NVMLError:
            return None

    def driver(self) -> DriverInfo:
        return DriverInfo(
            driver_version=self._try(self._nvml.nvmlSystemGetDriverVersion) or "",
            cuda_driver_version=self._try(self._nvml.nvmlSystemGetCudaDriverVersion) or 0,
        )

    def devices(self) -> list[DeviceReading]:
        nvml = self._nvml
        readings = []
        for index in range(nvml.nvmlDeviceGetCount()):
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
            uuid = nvml.nvmlDeviceGetUUID(handle)
            try:
                memory = nvml.nvmlDeviceGetMemoryInfo(handle)
                healthy = True
                total = int(memory.total)
            except nvml.NVMLError as e:
                log.warning(
                    "device unhealthy: memory query failed", extra={"device": uuid, "error": str(e)}
                )
                healthy, total = False, 0
            pci = self._try(nvml.nvmlDeviceGetPciInfo, handle)
            bus_id = str(pci.busId) if pci is not None else ""
            numa = self._try(nvml.nvmlDeviceGetNumaNodeId, handle)
            if numa is None and bus_id:
                numa = sysfs_numa_node(bus_id)
            reading = DeviceReading(
                uuid=uuid,
                index=index,
                model=nvml.nvmlDeviceGetName(handle),
                memory_total_bytes=total,
                pci_bus_id=bus_id,
                numa_node=numa if numa is None or numa >= 0 else None,
                healthy=healthy,
                minor_number=self._try(nvml.nvmlDeviceGetMinorNumber, handle),
            )
            if self.mig is not None and healthy and self.mig.manager.enabled(handle):
                readings.extend(
                    mig_readings(reading, handle, self.mig, self.gpu_mode, self.held_slices)
                )
            else:
                if self.gpu_mode == "mig" and uuid not in self._warned:
                    self._warned.add(uuid)
                    log.warning(
                        "GPU not in MIG mode: shared by interception on this mig node",
                        extra={"device": uuid},
                    )
                readings.append(reading)
        return readings

    def usage(self) -> list[UsageReading]:
        nvml = self._nvml
        out = []
        for index in range(nvml.nvmlDeviceGetCount()):
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
            memory = self._try(nvml.nvmlDeviceGetMemoryInfo, handle)
            if memory is None:
                continue
            util = self._try(nvml.nvmlDeviceGetUtilizationRates, handle)
            out.append(
                UsageReading(
                    uuid=nvml.nvmlDeviceGetUUID(handle),
                    memory_used_bytes=int(memory.used),
                    memory_total_bytes=int(memory.total),
                    utilization_percent=None if util is None else float(util.gpu),
                )
            )
        return out

    def close(self) -> None:
        self._try(self._nvml.nvmlShutdown)


class SimulatedDeviceManager:
    """Fixed simulated devices; usage is what allocations would use, which nobody runs here.
    Simulated MIG GPUs (`mig:` in the spec) run the MIG code on a simulated NVML."""

    def __init__(
        self,
        readings: list[DeviceReading],
        mig_gpus: frozenset[str] = frozenset(),
        mig_state: Path | None = None,
        gpu_mode: GpuMode = "hami-core",
    ) -> None:
        """``mig_state``: where the simulated GPUs keep their MIG instances (as real ones
        keep them across an agent's restart)."""
        from services.nodeagent.simmig import SimulatedMigNvml, SimulatedNvml

        self._readings = readings
        self._mig_gpus = mig_gpus
        self.gpu_mode = gpu_mode
        self.held_slices: HeldSlices = every_instance_held
        self.mig: MigDevices | None = None
        if mig_gpus:
            base = SimulatedNvml(readings)
            enabled = {i for i, r in enumerate(readings) if r.uuid in mig_gpus}
            self.mig = MigDevices(SimulatedMigNvml(base, enabled=enabled, state=mig_state))

    def driver(self) -> DriverInfo:
        return DriverInfo(driver_version="simulated")

    def devices(self) -> list[DeviceReading]:
        if self.mig is None:
            return list(self._readings)
        out: list[DeviceReading] = []
        for i, reading in enumerate(self._readings):
            if reading.uuid in self._mig_gpus:
                out.extend(mig_readings(reading, i, self.mig, self.gpu_mode, self.held_slices))
            else:
                out.append(reading)
        return out

    def usage(self) -> list[UsageReading]:
        return [
            UsageReading(
                uuid=r.uuid,
                memory_used_bytes=0,
                memory_total_bytes=r.memory_total_bytes,
                utilization_percent=0.0,
            )
            for r in self._readings
        ]

    def close(self) -> None:
        pass


def open_device_manager(
    simulate: str | None,
    node: str,
    *,
    require_nvml: bool = False,
    gpu_mode: GpuMode = "hami-core",
    mig_state: Path | None = None,
    backend: str = "nvml",
) -> DeviceManager:
    """NVML when asked for nothing else and it answers; simulated devices otherwise, unless
    ``require_nvml`` (a cluster's GPU node must not advertise devices it does not have). A
    vendor tool ``backend`` must answer: Unavailable otherwise (never a simulation)."""
    from services.nodeagent.core.simulate import parse_simulation, simulated_devices

    if simulate:
        readings, mig_gpus = simulated_devices(simulate, node)
        return SimulatedDeviceManager(readings, mig_gpus, mig_state, gpu_mode)
    if backend != "nvml":
        from services.nodeagent.toolbackends import TOOL_BACKENDS, ToolDeviceManager
        from shared.vendorkinds import VENDOR_KINDS

        if backend not in TOOL_BACKENDS:
            known = ", ".join(TOOL_BACKENDS)
            raise Unavailable(f"unknown device backend {backend!r}; known: nvml, {known}")
        return ToolDeviceManager(TOOL_BACKENDS[backend], node, VENDOR_KINDS)
    import pynvml

    try:
        manager = NvmlDeviceManager(pynvml, gpu_mode)
    except pynvml.NVMLError as e:
        if require_nvml:
            raise Unavailable(f"NVML unavailable on {node}: {e}; is the NVIDIA runtime set?") from e
        log.warning("NVML unavailable, simulating one H200", extra={"error": str(e)})
        return SimulatedDeviceManager(parse_simulation("1xH200", node))
    if not manager.devices():
        manager.close()
        if require_nvml:
            raise Unavailable(f"NVML found no device on {node}")
        log.warning("NVML found no device, simulating one H200")
        return SimulatedDeviceManager(parse_simulation("1xH200", node))
    return manager
