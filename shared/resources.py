"""HAMi's resource names and annotations: the contract users' pod YAML relies on."""

from __future__ import annotations

import msgspec

from shared.errors import InvalidRequest


class ResourceNames(msgspec.Struct, frozen=True, kw_only=True):
    """Extended resource names, configurable as in HAMi (resourceName, resourceMem, ...)."""

    count: str = "nvidia.com/gpu"
    memory: str = "nvidia.com/gpumem"
    memory_percentage: str = "nvidia.com/gpumem-percentage"
    cores: str = "nvidia.com/gpucores"
    priority: str = "nvidia.com/priority"

    @property
    def managed(self) -> tuple[str, ...]:
        """The names a container asks devices by (a kind without one leaves it empty)."""
        return tuple(n for n in (self.count, self.memory, self.memory_percentage, self.cores) if n)


NVIDIA_ANNOTATION_TYPE = "NVIDIA"
"""The device type HAMi writes for NVIDIA GPUs in `hami.io/vgpu-devices-*`."""
USE_TYPE = "nvidia.com/use-gputype"
NOUSE_TYPE = "nvidia.com/nouse-gputype"
USE_UUID = "nvidia.com/use-gpuuuid"
NOUSE_UUID = "nvidia.com/nouse-gpuuuid"
NUMA_BIND = "nvidia.com/numa-bind"
VGPU_MODE = "nvidia.com/vgpu-mode"
"""HAMi's per-pod choice of sharing for NVIDIA GPUs: `hami-core` (interception) or `mig`."""
VGPU_MODES = ("hami-core", "mig")
NODE_POLICY = "hami.io/node-scheduler-policy"
GPU_POLICY = "hami.io/gpu-scheduler-policy"
SCHEDULER_POLICIES = ("binpack", "spread", "best-fit", "fragmentation")


def unknown_policy(field: str, name: str) -> InvalidRequest:
    """The one refusal of a policy name, wherever it is read (allocator, webhook, pod parser)."""
    return InvalidRequest(f"{field} {name!r} is unknown; allowed: {', '.join(SCHEDULER_POLICIES)}")


"""Values of the two policy annotations: HAMi's two, then ours (the allocator's policy table)."""
DEVICES_TO_ALLOCATE = "hami.io/vgpu-devices-to-allocate"
DEVICES_ALLOCATED = "hami.io/vgpu-devices-allocated"
ASSIGNED_NODE = "hami.io/vgpu-node"
ASSIGNED_TIME = "hami.io/vgpu-time"
BIND_PHASE = "hami.io/bind-phase"
BIND_TIME = "hami.io/bind-time"
ALLOCATE_FAILURE = "hami.io/allocate-failure"
TRACE_ANNOTATION = "hami.io/trace-context"
"""The pod's admission span context (shared/tracing.py): ``traceparent=...`` (and
``|tracestate=...``), written by the webhook so scheduling and the node join its trace."""
"""Why the node agent refused a container at Allocate (set with bind-phase `failed`)."""
NODE_RELEASED = "hami.io/vgpu-released"
"""Set on a node by the allocator when a pod's devices there are released: an update of the
node is the cluster event that makes kube-scheduler retry pods our extender turned away."""
