"""NVML's MIG calls, simulated: a state machine that follows the rules NVML documents, over
another NVML (the recorded H200, or simulated GPUs). Simulated MIG GPUs (`--simulate
1xmig:H200`) and the tests run the node agent's MIG code (services/nodeagent/mig.py) on it
unchanged; a real GPU runs it on pynvml.

The rules: MIG calls on a GPU without MIG mode are not supported; a GPU instance needs a
supported profile, one of its placements, memory slices no other instance holds and compute
slices to spare (the profile's instance count bounds it too); a compute instance needs its GPU
instance's compute slices; destroying a compute instance that runs a process, or a GPU
instance that still has compute instances, is refused as in use; a missing id is not found.
"""

from __future__ import annotations

import json
import os
import uuid as uuidlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pynvml

from services.nodeagent.core.readings import DeviceReading
from shared.mig import COMPUTE_SLICES, MARKETED_GB, SHAPES, MigShape, profile_name

MAX_MIG_DEVICES = 7


@dataclass(eq=False)
class ComputeInstance:
    gpu_instance: GpuInstance
    id: int
    slices: int
    profile_id: int
    uuid: str
    processes: dict[int, int] = field(default_factory=dict)
    """pid -> used memory in bytes."""


@dataclass(eq=False)
class GpuInstance:
    device: int
    id: int
    shape: MigShape
    profile_id: int
    start: int
    compute: dict[int, ComputeInstance] = field(default_factory=dict)


@dataclass
class MigGpu:
    """One GPU's MIG state."""

    uuid: str
    model: str
    memory_mib: int
    enabled: bool = True
    instances: dict[int, GpuInstance] = field(default_factory=dict)

    def marketed(self) -> tuple[int, ...]:
        for product, sizes in MARKETED_GB.items():
            if product in self.model.upper():
                return sizes
        raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)


def _error(code: int) -> pynvml.NVMLError:
    return pynvml.NVMLError(code)


GI_PROFILE_IDS = {0: 19, 9: 15, 1: 14, 2: 9, 3: 5, 4: 0}
"""A profile index (NVML_GPU_INSTANCE_PROFILE_*) to the id NVML gives it on an A100/H100/H200
(`nvidia-smi mig -lgip`): calls after the profile info take the id, not the index."""
CI_PROFILE_FOR_SLICES = {1: 0, 2: 1, 3: 2, 4: 3, 7: 4, 8: 5, 6: 6}
"""NVML_COMPUTE_INSTANCE_PROFILE_<n>_SLICE for n compute slices."""


class SimulatedNvml:
    """The NVML of simulated GPUs (what the MIG simulation needs of it): handles are their
    positions."""

    def __init__(self, readings: Sequence[DeviceReading]) -> None:
        self._readings = list(readings)

    def nvmlInit(self) -> None:
        pass

    def nvmlShutdown(self) -> None:
        pass

    def nvmlDeviceGetCount(self) -> int:
        return len(self._readings)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:
        if not 0 <= index < len(self._readings):
            raise _error(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        return index

    def nvmlDeviceGetUUID(self, handle: int) -> str:
        return self._readings[handle].uuid

    def nvmlDeviceGetName(self, handle: int) -> str:
        return self._readings[handle].model

    def nvmlDeviceGetMemoryInfo(self, handle: int, version: int | None = None) -> SimpleNamespace:
        total = self._readings[handle].memory_total_bytes
        return SimpleNamespace(total=total, used=0, free=total)


class SimulatedMigNvml:
    """Delegates everything else to ``base`` (device handles are its handles). ``state``: a
    file the instances are kept in, as a GPU keeps them across a restart of the agent."""

    def __init__(
        self, base: Any, enabled: set[int] | None = None, state: Path | None = None
    ) -> None:
        self._base = base
        self._gpus: dict[int, MigGpu] = {}
        self._enabled = enabled
        self._state = state
        self.NVMLError = pynvml.NVMLError
        if state is not None and state.is_file():
            self._load(json.loads(state.read_text()))

    def _load(self, saved: dict[str, Any]) -> None:
        for handle_text, instances in saved.items():
            gpu = self._gpu(int(handle_text))
            for raw in instances:
                shape = self._shape(raw["profile_id"])
                gi = GpuInstance(
                    int(handle_text), raw["id"], shape, raw["profile_id"], raw["start"]
                )
                for c in raw["compute"]:
                    gi.compute[c["id"]] = ComputeInstance(
                        gi, c["id"], c["slices"], c["profile_id"], c["uuid"]
                    )
                gpu.instances[gi.id] = gi

    def _save(self) -> None:
        if self._state is None:
            return
        saved = {
            str(handle): [
                {
                    "id": gi.id,
                    "profile_id": gi.profile_id,
                    "start": gi.start,
                    "compute": [
                        {"id": c.id, "slices": c.slices, "profile_id": c.profile_id, "uuid": c.uuid}
                        for c in gi.compute.values()
                    ],
                }
                for gi in gpu.instances.values()
            ]
            for handle, gpu in self._gpus.items()
        }
        self._state.parent.mkdir(parents=True, exist_ok=True)
        tmp = self._state.with_suffix(".tmp")
        tmp.write_text(json.dumps(saved))
        os.replace(tmp, self._state)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._base, name)

    # --- the GPU's MIG state ---
    def _gpu(self, handle: Any) -> MigGpu:
        if not isinstance(handle, int):
            raise _error(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        gpu = self._gpus.get(handle)
        if gpu is None:
            memory = int(self._base.nvmlDeviceGetMemoryInfo(handle).total) >> 20
            gpu = MigGpu(
                uuid=self._base.nvmlDeviceGetUUID(handle),
                model=self._base.nvmlDeviceGetName(handle),
                memory_mib=memory,
                enabled=self._enabled is None or handle in self._enabled,
            )
            self._gpus[handle] = gpu
        return gpu

    def _mig_gpu(self, handle: Any) -> MigGpu:
        gpu = self._gpu(handle)
        if not gpu.enabled:
            raise _error(pynvml.NVML_ERROR_NOT_SUPPORTED)
        return gpu

    def _shape(self, profile_id: int) -> MigShape:
        for shape in SHAPES:
            if GI_PROFILE_IDS[shape.nvml_profile] == profile_id:
                return shape
        raise _error(pynvml.NVML_ERROR_INVALID_ARGUMENT)

    def nvmlDeviceGetMigMode(self, handle: Any) -> list[int]:
        if isinstance(handle, ComputeInstance):
            raise _error(pynvml.NVML_ERROR_NOT_SUPPORTED)
        mode = int(self._gpu(handle).enabled)
        return [mode, mode]

    def nvmlDeviceGetGpuInstanceProfileInfo(
        self, handle: Any, profile: int, version: int = 2
    ) -> SimpleNamespace:
        gpu = self._mig_gpu(handle)
        shape = next((s for s in SHAPES if s.nvml_profile == profile), None)
        if shape is None:  # an index this GPU has no profile for (e.g. media extensions)
            raise _error(pynvml.NVML_ERROR_NOT_SUPPORTED)
        gb = gpu.marketed()[SHAPES.index(shape)]
        return SimpleNamespace(
            id=GI_PROFILE_IDS[profile],
            sliceCount=shape.compute,
            instanceCount=len(shape.placements) if shape.compute < COMPUTE_SLICES else 1,
            multiprocessorCount=shape.compute * 18,
            memorySizeMB=gpu.memory_mib * shape.memory // 8,
            name=f"MIG {profile_name(shape.compute, gb)}".encode(),
        )

    def nvmlDeviceGetGpuInstancePossiblePlacements(
        self, handle: Any, profile_id: int, placements: Any, count: Any
    ) -> int:
        self._mig_gpu(handle)
        shape = self._shape(profile_id)
        for i, start in enumerate(shape.placements):
            placements[i].start, placements[i].size = start, shape.memory
        count._obj.value = len(shape.placements)
        return 0  # NVML_SUCCESS

    def nvmlDeviceCreateGpuInstanceWithPlacement(
        self, handle: Any, profile_id: int, placement: Any
    ) -> GpuInstance:
        gpu = self._mig_gpu(handle)
        shape = self._shape(profile_id)
        if placement.start not in shape.placements or placement.size != shape.memory:
            raise _error(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        wanted = ((1 << shape.memory) - 1) << placement.start
        held = 0
        compute = 0
        for other in gpu.instances.values():
            held |= ((1 << other.shape.memory) - 1) << other.start
            compute += other.shape.compute
        same = sum(1 for o in gpu.instances.values() if o.shape is shape)
        limit = len(shape.placements) if shape.compute < COMPUTE_SLICES else 1
        if held & wanted or compute + shape.compute > COMPUTE_SLICES or same >= limit:
            raise _error(pynvml.NVML_ERROR_INSUFFICIENT_RESOURCES)
        gi_id = next(i for i in range(1, 64) if i not in gpu.instances)
        instance = GpuInstance(handle, gi_id, shape, profile_id, placement.start)
        gpu.instances[gi_id] = instance
        self._save()
        return instance

    def nvmlDeviceGetGpuInstanceById(self, handle: Any, gi_id: int) -> GpuInstance:
        instance = self._mig_gpu(handle).instances.get(gi_id)
        if instance is None:
            raise _error(pynvml.NVML_ERROR_NOT_FOUND)
        return instance

    def nvmlGpuInstanceGetInfo(self, gi: GpuInstance) -> SimpleNamespace:
        self._live(gi)
        return SimpleNamespace(
            device=gi.device,
            id=gi.id,
            profileId=gi.profile_id,
            placement=SimpleNamespace(start=gi.start, size=gi.shape.memory),
        )

    def _live(self, gi: GpuInstance) -> None:
        if self._mig_gpu(gi.device).instances.get(gi.id) is not gi:
            raise _error(pynvml.NVML_ERROR_NOT_FOUND)

    def nvmlGpuInstanceGetComputeInstanceProfileInfo(
        self, gi: GpuInstance, profile: int, engine: int, version: int = 2
    ) -> SimpleNamespace:
        self._live(gi)
        slices = next((n for n, p in CI_PROFILE_FOR_SLICES.items() if p == profile), None)
        if slices is None or slices > gi.shape.compute:
            raise _error(pynvml.NVML_ERROR_NOT_SUPPORTED)
        return SimpleNamespace(
            id=profile, sliceCount=slices, instanceCount=gi.shape.compute // slices
        )

    def nvmlGpuInstanceCreateComputeInstance(
        self, gi: GpuInstance, profile_id: int
    ) -> ComputeInstance:
        self._live(gi)
        slices = next((n for n, p in CI_PROFILE_FOR_SLICES.items() if p == profile_id), None)
        if slices is None or slices > gi.shape.compute:
            raise _error(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        if sum(c.slices for c in gi.compute.values()) + slices > gi.shape.compute:
            raise _error(pynvml.NVML_ERROR_INSUFFICIENT_RESOURCES)
        ci_id = next(i for i in range(64) if i not in gi.compute)
        name = uuidlib.uuid4()  # each instance made is a new MIG device, as on a GPU
        ci = ComputeInstance(gi, ci_id, slices, profile_id, f"MIG-{name}")
        gi.compute[ci_id] = ci
        self._save()
        return ci

    def nvmlGpuInstanceGetComputeInstanceById(self, gi: GpuInstance, ci_id: int) -> ComputeInstance:
        self._live(gi)
        ci = gi.compute.get(ci_id)
        if ci is None:
            raise _error(pynvml.NVML_ERROR_NOT_FOUND)
        return ci

    def nvmlComputeInstanceGetInfo(self, ci: ComputeInstance) -> SimpleNamespace:
        self._live(ci.gpu_instance)
        return SimpleNamespace(id=ci.id, profileId=ci.profile_id, gpuInstance=ci.gpu_instance)

    def nvmlComputeInstanceDestroy(self, ci: ComputeInstance) -> None:
        gi = ci.gpu_instance
        self._live(gi)
        if gi.compute.get(ci.id) is not ci:
            raise _error(pynvml.NVML_ERROR_NOT_FOUND)
        if ci.processes:
            raise _error(pynvml.NVML_ERROR_IN_USE)
        del gi.compute[ci.id]
        self._save()

    def nvmlGpuInstanceDestroy(self, gi: GpuInstance) -> None:
        self._live(gi)
        if gi.compute:
            raise _error(pynvml.NVML_ERROR_IN_USE)
        del self._mig_gpu(gi.device).instances[gi.id]
        self._save()

    # --- MIG devices (one per compute instance) ---
    def _mig_devices(self, handle: int) -> list[ComputeInstance]:
        gpu = self._mig_gpu(handle)
        return [
            ci
            for gi in sorted(gpu.instances.values(), key=lambda g: g.id)
            for ci in gi.compute.values()
        ]

    def nvmlDeviceGetMaxMigDeviceCount(self, handle: Any) -> int:
        gpu = self._gpu(handle)
        return MAX_MIG_DEVICES if gpu.enabled else 0

    def nvmlDeviceGetMigDeviceHandleByIndex(self, handle: Any, index: int) -> ComputeInstance:
        devices = self._mig_devices(handle)
        if not 0 <= index < len(devices):
            raise _error(pynvml.NVML_ERROR_NOT_FOUND)
        return devices[index]

    def nvmlDeviceGetGpuInstanceId(self, mig: ComputeInstance) -> int:
        return mig.gpu_instance.id

    def nvmlDeviceGetComputeInstanceId(self, mig: ComputeInstance) -> int:
        return mig.id

    def nvmlDeviceGetUUID(self, handle: Any) -> str:
        if isinstance(handle, ComputeInstance):
            return handle.uuid
        return str(self._base.nvmlDeviceGetUUID(handle))

    def nvmlDeviceGetName(self, handle: Any) -> str:
        if isinstance(handle, ComputeInstance):
            gpu = self._mig_gpu(handle.gpu_instance.device)
            shape = handle.gpu_instance.shape
            gb = gpu.marketed()[SHAPES.index(shape)]
            return f"{gpu.model} MIG {profile_name(shape.compute, gb)}"
        return str(self._base.nvmlDeviceGetName(handle))

    def nvmlDeviceGetMemoryInfo(self, handle: Any, version: int | None = None) -> Any:
        if isinstance(handle, ComputeInstance):
            gpu = self._mig_gpu(handle.gpu_instance.device)
            total = (gpu.memory_mib * handle.gpu_instance.shape.memory // 8) << 20
            used = sum(handle.processes.values())
            return SimpleNamespace(total=total, used=used, free=total - used)
        return self._base.nvmlDeviceGetMemoryInfo(handle)

    def nvmlDeviceGetComputeRunningProcesses(self, handle: Any) -> list[SimpleNamespace]:
        if isinstance(handle, ComputeInstance):
            return [SimpleNamespace(pid=p, usedGpuMemory=m) for p, m in handle.processes.items()]
        getter = getattr(self._base, "nvmlDeviceGetComputeRunningProcesses", None)
        return list(getter(handle)) if getter is not None else []

    # --- for tests and simulations: a process on a MIG device ---
    def run_process(self, mig_uuid: str, pid: int, memory_bytes: int = 1 << 30) -> None:
        for handle in list(self._gpus):
            for ci in self._mig_devices(handle):
                if ci.uuid == mig_uuid:
                    ci.processes[pid] = memory_bytes
                    return
        raise KeyError(mig_uuid)

    def end_process(self, mig_uuid: str, pid: int) -> None:
        for handle in list(self._gpus):
            for ci in self._mig_devices(handle):
                if ci.uuid == mig_uuid:
                    ci.processes.pop(pid, None)
