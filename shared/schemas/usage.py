"""Usage samples: what devices (and, with the native library, containers) really use."""

from __future__ import annotations

from shared.schemas.base import PREFIX, Codec, SubjectSpec, WireStruct


class UsageSample(WireStruct, frozen=True, kw_only=True):
    node: str
    device_uuid: str
    at: float
    memory_used_bytes: int
    memory_total_bytes: int
    utilization_percent: float | None = None
    allocation_id: str | None = None
    """Set for per-allocation samples read from the shared accounting region; None for the
    whole device."""
    memory_limit_bytes: int | None = None
    """The allocation's limit on this device (per-allocation samples)."""
    pod_namespace: str | None = None
    pod_name: str | None = None
    pod_uid: str | None = None
    container: str | None = None
    """Set for per-container samples of Kubernetes pods (the kubelet device plugin)."""
    processes: int | None = None
    """Processes of the allocation holding a slot in its region."""
    last_kernel_at: float | None = None
    """When the allocation last ran on this device, as the agent saw its GPU time grow (to
    within one usage interval); None: not seen running since the agent started."""


USAGE = f"{PREFIX}.usage"

usage_codec = Codec(UsageSample)

SUBJECTS = (
    SubjectSpec(
        subject=f"{USAGE}.<node-token>",
        pattern="pub/sub",
        publisher="nodeagent (every usage interval)",
        consumers="telemetry; allocator (device heat: docs/architecture.md, usage feedback)",
        message=UsageSample,
        doc="One sample per device (allocation_id empty) and per allocation on that device. "
        "On Kubernetes nodes the per-allocation samples name the pod and container, read from "
        "the container's region while the kubelet's PodResources API lists it.",
    ),
)
