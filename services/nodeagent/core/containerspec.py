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


def device_nodes(
    assignment: Assignment, readings: Mapping[str, DeviceReading], control: Sequence[str]
) -> tuple[DeviceNode, ...]:
    """The GPUs' device nodes (and the driver's control nodes that exist on the host);
    simulated devices get stand-ins at the same container paths."""
    nodes = []
    simulated = False
    for grant in assignment.grants:
        reading = readings.get(grant.uuid)
        if reading is None:
            raise InvalidRequest(f"device {grant.uuid} is not on this node any more")
        if not reading.healthy:
            raise InvalidRequest(f"device {grant.uuid} is unhealthy")
        minor = reading.minor_number if reading.minor_number is not None else reading.index
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
