"""Device managers: where readings come from. NVML on real GPUs, a simulation elsewhere."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Protocol

from services.nodeagent.core.readings import DeviceReading, DriverInfo, UsageReading
from shared.errors import Unavailable

log = logging.getLogger("hami.nodeagent.devices")


class DeviceManager(Protocol):
    def driver(self) -> DriverInfo: ...

    def devices(self) -> list[DeviceReading]: ...

    def usage(self) -> list[UsageReading]: ...

    def close(self) -> None: ...


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

    def __init__(self, nvml: Any = None) -> None:
        if nvml is None:
            import pynvml

            nvml = pynvml
        self._nvml = nvml
        nvml.nvmlInit()

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
            readings.append(
                DeviceReading(
                    uuid=uuid,
                    index=index,
                    model=nvml.nvmlDeviceGetName(handle),
                    memory_total_bytes=total,
                    pci_bus_id=bus_id,
                    numa_node=numa if numa is None or numa >= 0 else None,
                    healthy=healthy,
                    minor_number=self._try(nvml.nvmlDeviceGetMinorNumber, handle),
                )
            )
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
    """Fixed simulated devices; usage is what allocations would use, which nobody runs here."""

    def __init__(self, readings: list[DeviceReading]) -> None:
        self._readings = readings

    def driver(self) -> DriverInfo:
        return DriverInfo(driver_version="simulated")

    def devices(self) -> list[DeviceReading]:
        return list(self._readings)

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
    simulate: str | None, node: str, *, require_nvml: bool = False
) -> DeviceManager:
    """NVML when asked for nothing else and it answers; simulated devices otherwise, unless
    ``require_nvml`` (a cluster's GPU node must not advertise devices it does not have)."""
    from services.nodeagent.core.simulate import parse_simulation

    if simulate:
        return SimulatedDeviceManager(parse_simulation(simulate, node))
    import pynvml

    try:
        manager = NvmlDeviceManager(pynvml)
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
