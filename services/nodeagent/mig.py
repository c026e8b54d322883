"""MIG through NVML: a GPU's profile geometry, the instances on it, making one for a container
and taking one down (never while a process runs on it). ``nvml`` is pynvml, or anything with
its MIG calls (services/nodeagent/simmig.py); constants and structures come from pynvml."""

from __future__ import annotations

import ctypes
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pynvml

from shared.errors import InvalidRequest
from shared.schemas.inventory import PartitionProfile

log = logging.getLogger("hami.nodeagent.mig")
MAX_PLACEMENTS = 16
MAX_GPU_INSTANCE_ID = 32
MAX_COMPUTE_INSTANCE_ID = 8
SKIPPED_MARKS = ("+", "-me")
"""Media-extension variants (`1g.18gb+me`, `-me`): one per GPU, same slices; not offered."""


@dataclass(frozen=True, slots=True)
class MigProfile:
    gpu_instance_profile: int
    """NVML's id of the GPU instance profile (what creation and placements take)."""
    compute_slices: int
    partition: PartitionProfile

    @property
    def name(self) -> str:
        return self.partition.name


@dataclass(frozen=True, slots=True)
class MigInstance:
    gpu_uuid: str
    gpu_instance: int
    compute_instances: tuple[int, ...]
    profile: str
    start: int
    slices: int
    uuid: str
    """The MIG device's UUID (its first compute instance's), what containers are given."""
    in_use: bool
    """A process runs on it (or NVML could not say: assumed in use)."""

    @property
    def mask(self) -> int:
        return ((1 << self.slices) - 1) << self.start


def _profile_name(info: Any) -> str:
    raw = getattr(info, "name", b"")
    name = raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw)
    return name.removeprefix("MIG ").strip()


class MigManager:
    def __init__(self, nvml: Any) -> None:
        self._nvml = nvml
        self._profiles: dict[str, tuple[MigProfile, ...]] = {}
        """A GPU's profiles by its UUID: fixed while it is in MIG mode, read once (every
        heartbeat asks for them)."""

    def enabled(self, handle: Any) -> bool:
        try:
            current, _pending = self._nvml.nvmlDeviceGetMigMode(handle)
        except pynvml.NVMLError:
            return False  # no MIG on this GPU
        return bool(current == pynvml.NVML_DEVICE_MIG_ENABLE)

    def profiles(self, handle: Any) -> tuple[MigProfile, ...]:
        """The GPU's profiles, smallest first (memory, then compute), with their placements;
        compute in percent of the GPU's largest profile."""
        uuid = str(self._nvml.nvmlDeviceGetUUID(handle))
        known = self._profiles.get(uuid)
        if known is None:
            known = self._read_profiles(handle)
            if known:  # none: MIG mode off or not ready yet; asked again next time
                self._profiles[uuid] = known
        return known

    def _read_profiles(self, handle: Any) -> tuple[MigProfile, ...]:
        found = []
        for index in range(pynvml.NVML_GPU_INSTANCE_PROFILE_COUNT):
            try:
                info = self._nvml.nvmlDeviceGetGpuInstanceProfileInfo(handle, index)
            except pynvml.NVMLError:
                continue  # not on this GPU
            name = _profile_name(info)
            if not name or not info.instanceCount or any(m in name for m in SKIPPED_MARKS):
                continue
            starts, size = self._placements(handle, int(info.id))
            if starts:
                found.append((info, name, starts, size))
        if not found:
            return ()
        full = max(int(info.sliceCount) for info, *_ in found)
        profiles = [
            MigProfile(
                gpu_instance_profile=int(info.id),
                compute_slices=int(info.sliceCount),
                partition=PartitionProfile(
                    name=name,
                    memory_mib=int(info.memorySizeMB),
                    cores=100 if info.sliceCount == full else 100 * int(info.sliceCount) // full,
                    slices=size,
                    placements=starts,
                ),
            )
            for info, name, starts, size in found
        ]
        profiles.sort(key=lambda p: (p.partition.memory_mib, p.partition.cores, p.name))
        return tuple(profiles)

    def _placements(self, handle: Any, profile_id: int) -> tuple[tuple[int, ...], int]:
        placements = (pynvml.c_nvmlGpuInstancePlacement_t * MAX_PLACEMENTS)()
        count = ctypes.c_uint(MAX_PLACEMENTS)
        try:
            self._nvml.nvmlDeviceGetGpuInstancePossiblePlacements(
                handle, profile_id, placements, ctypes.byref(count)
            )
        except pynvml.NVMLError:
            return (), 0
        n = min(int(count.value), MAX_PLACEMENTS)
        return tuple(int(placements[i].start) for i in range(n)), int(
            placements[0].size
        ) if n else 0

    def instances(self, handle: Any) -> list[MigInstance]:
        """Every GPU instance on the GPU, with or without compute instances."""
        nvml = self._nvml
        gpu_uuid = str(nvml.nvmlDeviceGetUUID(handle))
        names = {p.gpu_instance_profile: p.name for p in self.profiles(handle)}
        devices: dict[tuple[int, int], tuple[str, bool]] = {}
        for index in range(nvml.nvmlDeviceGetMaxMigDeviceCount(handle)):
            try:
                mig = nvml.nvmlDeviceGetMigDeviceHandleByIndex(handle, index)
            except pynvml.NVMLError:
                continue
            key = (
                int(nvml.nvmlDeviceGetGpuInstanceId(mig)),
                int(nvml.nvmlDeviceGetComputeInstanceId(mig)),
            )
            try:
                busy = bool(nvml.nvmlDeviceGetComputeRunningProcesses(mig))
            except pynvml.NVMLError:
                busy = True  # cannot tell: never taken down on a guess
            devices[key] = (str(nvml.nvmlDeviceGetUUID(mig)), busy)
        found = []
        for gi_id in range(MAX_GPU_INSTANCE_ID):
            try:
                gi = nvml.nvmlDeviceGetGpuInstanceById(handle, gi_id)
                info = nvml.nvmlGpuInstanceGetInfo(gi)
            except pynvml.NVMLError:
                continue
            cis = tuple(ci for ci in range(MAX_COMPUTE_INSTANCE_ID) if self._has_ci(gi, ci))
            migs = [devices[(gi_id, ci)] for ci in cis if (gi_id, ci) in devices]
            found.append(
                MigInstance(
                    gpu_uuid=gpu_uuid,
                    gpu_instance=gi_id,
                    compute_instances=cis,
                    profile=names.get(int(info.profileId), f"profile-{info.profileId}"),
                    start=int(info.placement.start),
                    slices=int(info.placement.size),
                    uuid=migs[0][0] if migs else "",
                    in_use=any(busy for _, busy in migs),
                )
            )
        return found

    def _has_ci(self, gi: Any, ci: int) -> bool:
        try:
            self._nvml.nvmlGpuInstanceGetComputeInstanceById(gi, ci)
        except pynvml.NVMLError:
            return False
        return True

    def create(self, handle: Any, profile: MigProfile, start: int) -> MigInstance:
        """A GPU instance of ``profile`` at ``start`` and one compute instance over all of it.
        NVMLError when NVML refuses (the slices are taken, the profile does not place there);
        nothing is left behind then."""
        nvml = self._nvml
        placement = pynvml.c_nvmlGpuInstancePlacement_t()
        placement.start, placement.size = start, profile.partition.slices
        gi = nvml.nvmlDeviceCreateGpuInstanceWithPlacement(
            handle, profile.gpu_instance_profile, placement
        )
        try:
            whole = getattr(pynvml, f"NVML_COMPUTE_INSTANCE_PROFILE_{profile.compute_slices}_SLICE")
            ci_info = nvml.nvmlGpuInstanceGetComputeInstanceProfileInfo(
                gi, whole, pynvml.NVML_COMPUTE_INSTANCE_ENGINE_PROFILE_SHARED
            )
            ci = nvml.nvmlGpuInstanceCreateComputeInstance(gi, ci_info.id)
        except (pynvml.NVMLError, AttributeError):
            try:
                nvml.nvmlGpuInstanceDestroy(gi)
            except pynvml.NVMLError as e:
                log.error("could not take back a half-made MIG instance", extra={"error": str(e)})
            raise
        gi_id = int(nvml.nvmlGpuInstanceGetInfo(gi).id)
        ci_id = int(nvml.nvmlComputeInstanceGetInfo(ci).id)
        made = next((i for i in self.instances(handle) if i.gpu_instance == gi_id), None)
        if made is None or not made.uuid:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_UNKNOWN)
        log.info(
            "MIG instance made",
            extra={
                "gpu": made.gpu_uuid,
                "gi": gi_id,
                "ci": ci_id,
                "profile": profile.name,
                "start": start,
                "uuid": made.uuid,
            },
        )
        return made

    def destroy(self, handle: Any, gpu_instance: int) -> bool:
        """Take the GPU instance (and its compute instances) down; False, touching nothing,
        while a process runs on it. True when it is gone (or was already)."""
        nvml = self._nvml
        current = next((i for i in self.instances(handle) if i.gpu_instance == gpu_instance), None)
        if current is None:
            return True
        if current.in_use:
            return False
        try:
            gi = nvml.nvmlDeviceGetGpuInstanceById(handle, gpu_instance)
            for ci_id in current.compute_instances:
                nvml.nvmlComputeInstanceDestroy(
                    nvml.nvmlGpuInstanceGetComputeInstanceById(gi, ci_id)
                )
            nvml.nvmlGpuInstanceDestroy(gi)
        except pynvml.NVMLError as e:
            if getattr(e, "value", None) == pynvml.NVML_ERROR_IN_USE:
                return False
            raise
        log.info("MIG instance taken down", extra={"gpu": current.gpu_uuid, "gi": gpu_instance})
        return True


HeldSlices = Callable[[str, list[MigInstance]], int]
"""A GPU's UUID and the MIG instances on it to the slices no live allocation owns."""


def every_instance_held(gpu_uuid: str, instances: list[MigInstance]) -> int:
    """Until the agent knows which instances are its own: all of them (fails closed)."""
    mask = 0
    for instance in instances:
        mask |= instance.mask
    return mask


class MigDevices:
    """MIG work on a node's GPUs by UUID: what the device managers offer the rest of the agent."""

    def __init__(self, nvml: Any) -> None:
        self.nvml = nvml
        self.manager = MigManager(nvml)

    def handle(self, gpu_uuid: str) -> Any:
        for index in range(self.nvml.nvmlDeviceGetCount()):
            handle = self.nvml.nvmlDeviceGetHandleByIndex(index)
            if str(self.nvml.nvmlDeviceGetUUID(handle)) == gpu_uuid:
                return handle
        raise InvalidRequest(f"GPU {gpu_uuid} is not on this node")

    def profile(self, gpu_uuid: str, name: str) -> MigProfile:
        handle = self.handle(gpu_uuid)
        for profile in self.manager.profiles(handle):
            if profile.name == name:
                return profile
        raise InvalidRequest(f"GPU {gpu_uuid} has no MIG profile {name!r} (is MIG mode on?)")

    def instances(self, gpu_uuid: str) -> list[MigInstance]:
        return self.manager.instances(self.handle(gpu_uuid))

    def create(self, gpu_uuid: str, profile: str, start: int) -> MigInstance:
        return self.manager.create(self.handle(gpu_uuid), self.profile(gpu_uuid, profile), start)

    def destroy(self, gpu_uuid: str, gpu_instance: int) -> bool:
        return self.manager.destroy(self.handle(gpu_uuid), gpu_instance)
