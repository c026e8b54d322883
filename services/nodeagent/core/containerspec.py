"""What a container gets at Allocate: its devices, its limits and the isolation library.

Host side (HAMi's layout, root configurable): the library at `<root>/libvgpu.so` (or where the
agent is told), `<root>/ld.so.preload` naming it, one region directory per container at
`<root>/containers/<podUID>_<container>`. Container side: the library at
`/usr/local/vgpu/libvgpu.so`, a read-only `/etc/ld.so.preload` that loads it into every
dynamically linked process, the region directory at `/usr/local/vgpu/region`, and the
container's limits file, read-only, at `/usr/local/vgpu/limits` (host: `<root>/limits/<key>`,
root's, 0444): the library holds every process of the container to it, whatever its
environment says."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from services.nodeagent.core.handshake import Assignment
from services.nodeagent.core.readings import DeviceReading
from shared.errors import InvalidRequest
from shared.limitenv import limit_environment, limits_file_text

CONTAINER_LIBRARY = "/usr/local/vgpu/libvgpu.so"
CONTAINER_PRELOAD = "/etc/ld.so.preload"
CONTAINER_REGION_DIR = "/usr/local/vgpu/region"
CONTAINER_LIMITS = "/usr/local/vgpu/limits"
REGION_FILE = "vgpu.cache"
CONTROL_NODES = ("/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools")
STAND_IN = "/dev/null"
"""Host node behind simulated devices: harmless to open, read and write."""


@dataclass(frozen=True, slots=True)
class Mount:
    container_path: str
    host_path: str
    read_only: bool


@dataclass(frozen=True, slots=True)
class DeviceNode:
    container_path: str
    host_path: str
    permissions: str = "rw"


@dataclass(frozen=True, slots=True)
class ContainerSpec:
    envs: Mapping[str, str]
    mounts: tuple[Mount, ...]
    devices: tuple[DeviceNode, ...]


@dataclass(frozen=True, slots=True)
class HostLayout:
    root: Path
    """Host directory of HAMi's per-node files (HAMi: /usr/local/vgpu)."""
    library: Path
    """The isolation library on the host."""
    core_policy: str = "default"
    oversubscribe: bool = False
    """Memory scaling above 1: allocations past the device may spill to host memory."""

    @property
    def preload(self) -> Path:
        return self.root / "ld.so.preload"

    def region_dir(self, key: str) -> Path:
        return self.root / "containers" / key

    def limits_file(self, key: str) -> Path:
        """The container's limits; outside the region directory, which its container can write."""
        return self.root / "limits" / key

    def owner_file(self, key: str) -> Path:
        """Who a region belongs to; outside the region, which its container can write."""
        return self.root / "owners" / f"{key}.json"


def preload_text() -> str:
    return f"{CONTAINER_LIBRARY}\n"


def granted_devices(
    assignment: Assignment, readings: Mapping[str, DeviceReading]
) -> list[tuple[DeviceReading, int]]:
    """Each granted device's reading and device-node minor; InvalidRequest for one that is
    gone or unhealthy (a container never gets a device that cannot serve it)."""
    out = []
    for grant in assignment.grants:
        reading = readings.get(grant.uuid)
        if reading is None:
            raise InvalidRequest(f"device {grant.uuid} is not on this node any more")
        if not reading.healthy:
            raise InvalidRequest(f"device {grant.uuid} is unhealthy")
        out.append(
            (reading, reading.minor_number if reading.minor_number is not None else reading.index)
        )
    return out


def device_nodes(
    assignment: Assignment, readings: Mapping[str, DeviceReading], control: Sequence[str]
) -> tuple[DeviceNode, ...]:
    """The GPUs' device nodes (and the driver's control nodes that exist on the host);
    simulated devices get stand-ins at the same container paths."""
    nodes = []
    simulated = False
    for reading, minor in granted_devices(assignment, readings):
        path = f"/dev/nvidia{minor}"
        simulated = simulated or reading.simulated
        nodes.append(DeviceNode(path, STAND_IN if reading.simulated else path))
    if simulated:
        nodes.append(DeviceNode(CONTROL_NODES[0], STAND_IN))
    else:
        nodes.extend(DeviceNode(path, path) for path in control)
    return tuple(nodes)


def container_spec(
    assignment: Assignment,
    readings: Mapping[str, DeviceReading],
    layout: HostLayout,
    control: Sequence[str] = (),
) -> ContainerSpec:
    grants = assignment.grants
    envs = {"NVIDIA_VISIBLE_DEVICES": ",".join(g.uuid for g in grants)}
    envs.update(
        limit_environment(
            grants,
            priority=assignment.priority,
            cache_path=f"{CONTAINER_REGION_DIR}/{REGION_FILE}",
            oversubscribe=layout.oversubscribe,
            core_policy=layout.core_policy,
        )
    )
    envs["HAMI_ALLOCATION_ID"] = assignment.allocation_id
    envs["HAMI_LIMITS_FILE"] = CONTAINER_LIMITS
    mounts = (
        Mount(CONTAINER_LIBRARY, str(layout.library), True),
        Mount(CONTAINER_PRELOAD, str(layout.preload), True),
        Mount(CONTAINER_REGION_DIR, str(layout.region_dir(assignment.key)), False),
        Mount(CONTAINER_LIMITS, str(layout.limits_file(assignment.key)), True),
    )
    return ContainerSpec(envs, mounts, device_nodes(assignment, readings, control))


def limits_text(spec: ContainerSpec) -> str:
    """What the node agent writes to the container's limits file."""
    return limits_file_text(dict(spec.envs))


MIG_MINORS = "/proc/driver/nvidia-caps/mig-minors"
"""Where the driver says which capability device grants access to each MIG instance."""


def hardware_isolated(assignment: Assignment, readings: Mapping[str, DeviceReading]) -> bool:
    """Whether the container's devices are MIG instances (the hardware isolates them: no
    library). InvalidRequest when some are and some are not: one container, one kind of
    isolation."""
    kinds = set()
    for grant in assignment.grants:
        reading = readings.get(grant.uuid)
        kinds.add(
            grant.placement is not None or (reading is not None and bool(reading.parent_uuid))
        )
    if len(kinds) > 1:
        raise InvalidRequest("a container cannot mix MIG instances and shared GPUs")
    return kinds == {True}


def mig_capability_nodes(minors: str, gpu_minor: int, gpu_instance: int, compute: int) -> list[str]:
    """The capability device nodes of a MIG instance (`/dev/nvidia-caps/nvidia-cap<N>`), from
    the driver's `mig-minors` table (lines like `gpu0/gi3/ci0/access 32`)."""
    wanted = {
        f"gpu{gpu_minor}/gi{gpu_instance}/access",
        f"gpu{gpu_minor}/gi{gpu_instance}/ci{compute}/access",
    }
    nodes = []
    for line in minors.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] in wanted and parts[1].isdigit():
            nodes.append(f"/dev/nvidia-caps/nvidia-cap{parts[1]}")
    return nodes


def mig_container_spec(
    assignment: Assignment,
    readings: Mapping[str, DeviceReading],
    instances: Sequence[tuple[str, int, int]],
    control: Sequence[str] = (),
    minors: str = "",
) -> ContainerSpec:
    """A container of MIG instances: each instance by its MIG UUID (what the NVIDIA runtime
    and CUDA take), its GPU's device node and capability nodes; no library, no limits (the
    hardware partitions memory and compute). ``instances``: (MIG UUID, GPU instance, compute
    instance) per grant, in order."""
    nodes = list(device_nodes(assignment, _parents(assignment, readings), control))
    for (_, gpu_instance, compute), grant in zip(instances, assignment.grants, strict=True):
        reading = readings[grant.uuid]
        if reading.simulated:
            continue
        minor = reading.minor_number if reading.minor_number is not None else reading.index
        for path in mig_capability_nodes(minors, minor, gpu_instance, compute):
            nodes.append(DeviceNode(path, path))
    envs = {
        "NVIDIA_VISIBLE_DEVICES": ",".join(uuid for uuid, _, _ in instances),
        "HAMI_ALLOCATION_ID": assignment.allocation_id,
    }
    return ContainerSpec(envs, (), tuple(dict.fromkeys(nodes)))


def _parents(
    assignment: Assignment, readings: Mapping[str, DeviceReading]
) -> Mapping[str, DeviceReading]:
    """Readings by the grants' UUIDs, as device_nodes wants them (a whole instance's reading
    carries its GPU's minor)."""
    return {g.uuid: readings[g.uuid] for g in assignment.grants if g.uuid in readings}
