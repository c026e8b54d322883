"""What a container of another vendor's devices gets at Allocate: each vendor's runtime
conventions as HAMi's device plugins for them hand them out (sources in docs/devices.md).

- **Huawei Ascend** (partition): `ASCEND_VISIBLE_DEVICES` (the chips' logic ids) and, for a
  vNPU template, `ASCEND_VNPU_SPECS` (its name): the Ascend container runtime makes the vNPU
  when the container starts; the chips' `/dev/davinci<N>` and the driver's shared nodes.
- **Cambricon** (sMLU, the vendor's split): `CAMBRICON_SPLIT_ENABLE=1`,
  `CAMBRICON_SPLIT_VISIBLE_DEVICES` (the card) and `CAMBRICON_SPLIT_MEMS` (its memory in the
  kind's units, 256 MiB); `/dev/cambricon_dev<N>`, the control and split nodes. A shared MLU
  is one card per container (the split is per card).
- **AMD** (interception by HAMi's `libamvgpu.so`): `LD_AUDIT` naming the library, mounted
  read-only from the host, and `HIP_DEVICE_MEMORY_LIMIT_<i>` per device; a compute share is a
  CU mask of the container's own on each GPU (`HSA_CU_MASK`, core/cumask.py); `/dev/kfd` and
  each GPU's render node. A whole GPU (all its memory and compute) gets no library.
- **Whole devices** (Metax GPU, Enflame GCU, Kunlunxin XPU): their device nodes and the
  vendor's visible-devices variable.

Any other kind (Hygon, Iluvatar, Moore Threads, Metax sGPU: shared by vendor components whose
container contract is not published) is left to its vendor's device plugin, which reads the
kind's HAMi annotations the allocator writes (`serves`); asked anyway, it is refused with the
reason: a container never starts with a share nobody enforces."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from services.nodeagent.core.containerspec import (
    STAND_IN,
    ContainerSpec,
    DeviceNode,
    Mount,
    granted_devices,
)
from services.nodeagent.core.cumask import hsa_cu_mask
from services.nodeagent.core.handshake import Assignment
from services.nodeagent.core.readings import DeviceReading
from shared.devicekinds import DeviceKind
from shared.errors import InvalidRequest
from shared.schemas.placement import DeviceGrant

AMD_LIBRARY = "/usr/local/vgpu/libamvgpu.so"
"""Where AMD containers find HAMi's library (the path HAMi's AMD plugin uses)."""


@dataclass(frozen=True, slots=True)
class VendorHost:
    """What the host offers the vendor conventions: which device nodes and files exist, and
    where the AMD library goes (looked for at each Allocate: HAMi's AMD plugin may install it
    after the agent started)."""

    exists: Callable[[str], bool]
    amd_library: str | None = None


def _nodes(
    devices: list[tuple[DeviceReading, int]],
    per_device: Callable[[int], str],
    shared: tuple[str, ...],
    host: VendorHost,
) -> tuple[DeviceNode, ...]:
    """Each device's node and the driver's shared nodes the host has; simulated devices get
    stand-ins at the same container paths (every shared node, as a real host would have)."""
    simulated = any(r.simulated for r, _ in devices)
    nodes = [
        DeviceNode(per_device(minor), STAND_IN if r.simulated else per_device(minor))
        for r, minor in devices
    ]
    for path in shared:
        if simulated:
            nodes.append(DeviceNode(path, STAND_IN))
        elif host.exists(path):
            nodes.append(DeviceNode(path, path))
    return tuple(dict.fromkeys(nodes))


def _ascend(
    kind: DeviceKind,
    a: Assignment,
    devices: list[tuple[DeviceReading, int]],
    host: VendorHost,
    cu_masks: Sequence[tuple[int, ...] | None],
) -> ContainerSpec:
    envs = {"ASCEND_VISIBLE_DEVICES": ",".join(str(m) for _, m in devices)}
    templates = {g.profile for g in a.grants if g.profile}
    if templates:
        if len(a.grants) > 1:
            raise InvalidRequest("a vNPU template is one chip's: one Ascend device per container")
        envs["ASCEND_VNPU_SPECS"] = templates.pop()
    shared = ("/dev/davinci_manager", "/dev/devmm_svm", "/dev/hisi_hdc")
    return ContainerSpec(envs, (), _nodes(devices, lambda m: f"/dev/davinci{m}", shared, host))


def _cambricon(
    kind: DeviceKind,
    a: Assignment,
    devices: list[tuple[DeviceReading, int]],
    host: VendorHost,
    cu_masks: Sequence[tuple[int, ...] | None],
) -> ContainerSpec:
    if len(a.grants) > 1:
        raise InvalidRequest("a shared MLU is split per card: one Cambricon device per container")
    [grant] = a.grants
    [(reading, _)] = devices
    envs = {
        "CAMBRICON_SPLIT_ENABLE": "1",
        "CAMBRICON_SPLIT_VISIBLE_DEVICES": str(reading.index),
        "CAMBRICON_SPLIT_MEMS": str(grant.memory_mib // kind.memory_unit_mib),
    }
    shared = ("/dev/cambricon_ctl", "/dev/cambricon-split")
    return ContainerSpec(
        envs, (), _nodes(devices, lambda m: f"/dev/cambricon_dev{m}", shared, host)
    )


def needs_cu_mask(grant: DeviceGrant) -> bool:
    """A compute share of the GPU (0, HAMi's "not asked", is no compute limit, as on NVIDIA)."""
    return 0 < grant.cores < 100


def _amd(
    kind: DeviceKind,
    a: Assignment,
    devices: list[tuple[DeviceReading, int]],
    host: VendorHost,
    cu_masks: Sequence[tuple[int, ...] | None],
) -> ContainerSpec:
    nodes = _nodes(devices, lambda m: f"/dev/dri/renderD{128 + m}", ("/dev/kfd",), host)
    whole = all(
        not needs_cu_mask(g) and g.memory_mib * (1 << 20) >= r.memory_total_bytes
        for g, (r, _) in zip(a.grants, devices, strict=True)
    )
    if whole:
        return ContainerSpec({}, (), nodes)
    masks = list(cu_masks) or [None] * len(a.grants)
    for grant, mask in zip(a.grants, masks, strict=True):
        if needs_cu_mask(grant) and not mask:
            raise InvalidRequest(
                f"device {grant.uuid}: its compute units are not known here, so a "
                f"{grant.cores}% compute share cannot be a CU mask of its own"
            )
    if host.amd_library is None or not host.exists(host.amd_library):
        raise InvalidRequest(
            f"HAMi's AMD library is not on this node ({AMD_LIBRARY} on the host): an AMD "
            "memory share cannot be enforced"
        )
    envs = {f"HIP_DEVICE_MEMORY_LIMIT_{i}": f"{g.memory_mib}m" for i, g in enumerate(a.grants)}
    envs["LD_AUDIT"] = AMD_LIBRARY
    if any(m is not None for m in masks):
        envs["HSA_CU_MASK"] = hsa_cu_mask(masks)
    return ContainerSpec(envs, (Mount(AMD_LIBRARY, host.amd_library, True),), nodes)


WHOLE = {
    "MetaX": ("METAX_VISIBLE_DEVICES", "/dev/dri/renderD{}", ("/dev/mxcd",), 128),
    "Enflame": ("ENFLAME_VISIBLE_DEVICES", "/dev/gcu{}", ("/dev/gcuctl",), 0),
    "Kunlunxin": ("XPU_VISIBLE_DEVICES", "/dev/xpu{}", ("/dev/xpuctrl",), 0),
}
"""Vendor: (visible-devices variable, device node, shared nodes, minor offset)."""


def _whole(
    kind: DeviceKind,
    a: Assignment,
    devices: list[tuple[DeviceReading, int]],
    host: VendorHost,
    cu_masks: Sequence[tuple[int, ...] | None],
) -> ContainerSpec:
    variable, node, shared, offset = WHOLE[kind.vendor]
    return ContainerSpec(
        {variable: ",".join(str(r.index) for r, _ in devices)},
        (),
        _nodes(devices, lambda m: node.format(m + offset), shared, host),
    )


Convention = Callable[
    [
        DeviceKind,
        Assignment,
        list[tuple[DeviceReading, int]],
        VendorHost,
        Sequence[tuple[int, ...] | None],
    ],
    ContainerSpec,
]
CONVENTIONS: Mapping[str, Convention] = {"Huawei": _ascend, "Cambricon": _cambricon, "AMD": _amd}
"""Vendor: how its containers are handed out (whole devices: WHOLE)."""


def convention(kind: DeviceKind) -> Convention | None:
    """How this agent hands out ``kind``'s containers; None: its vendor's plugin does."""
    if kind.vendor in CONVENTIONS:
        return CONVENTIONS[kind.vendor]
    return _whole if kind.isolation == "whole" and kind.vendor in WHOLE else None


def serves(kind: DeviceKind) -> bool:
    """Whether this agent hands out ``kind``'s containers (else its vendor's device plugin,
    reading the kind's HAMi annotations, does: this agent must not register its resource)."""
    return convention(kind) is not None


def vendor_container_spec(
    kind: DeviceKind,
    assignment: Assignment,
    readings: Mapping[str, DeviceReading],
    host: VendorHost,
    cu_masks: Sequence[tuple[int, ...] | None] = (),
) -> ContainerSpec:
    """The container's devices and environment by its kind's conventions; InvalidRequest
    saying why for a kind or request this node cannot serve with its limits enforced.
    ``cu_masks``: an AMD container's CUs per grant (None: the whole GPU's), from the node's
    CU ledger."""
    devices = granted_devices(assignment, readings)
    hand_out = convention(kind)
    if hand_out is None:
        raise InvalidRequest(
            f"{kind.name} devices are shared by {kind.vendor}'s own components, whose container "
            "contract this node agent does not know: not served (nothing would enforce the share)"
        )
    spec = hand_out(kind, assignment, devices, host, cu_masks)
    envs = {**spec.envs, "HAMI_ALLOCATION_ID": assignment.allocation_id}
    return ContainerSpec(envs, spec.mounts, spec.devices)
