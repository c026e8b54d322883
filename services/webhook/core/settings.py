"""Webhook settings, in HAMi's configuration names where HAMi has one."""

from __future__ import annotations

import msgspec

from shared.resources import SCHEDULER_POLICIES, ResourceNames
from shared.vendorkinds import VENDOR_KINDS


class WebhookSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    resources: ResourceNames = ResourceNames()
    """Resource names (HAMi's resourceName, resourceMem, ... configuration)."""
    scheduler_name: str = "hami-scheduler"
    """Set on pods that ask for a managed resource."""
    integrated_schedulers: tuple[str, ...] = ("volcano",)
    """Pods that name one of these keep their scheduler."""
    default_mem: int = 0
    """MiB per device when a pod gives only a count (HAMi's defaultMem; 0: the whole device)."""
    default_cores: int = 0
    """Percent per device when a pod gives only a count (HAMi's defaultCores)."""
    default_gpu_num: int = 1
    """Devices added when a pod gives memory or cores but no count (HAMi's defaultGPUNum)."""
    max_devices_per_container: int = 16
    """The most devices one container may ask for (the allocator's limit)."""
    max_device_memory_mib: int = 143771
    """The largest device memory known to the cluster; asking for more is refused."""
    trusted_users: tuple[str, ...] = (
        "system:serviceaccount:hami-system:hami-allocator",
        "system:serviceaccount:hami-system:hami-nodeagent",
    )
    """Users that may change the internal annotations on UPDATE."""
    policies: tuple[str, ...] = SCHEDULER_POLICIES
    dra: bool = False
    """DRA mode: a pod asking for HAMi's resources gets a ResourceClaim of the same shape
    instead (kube-scheduler allocates it; docs/dra.md); the webhook makes the claim templates."""


INTERNAL_ANNOTATIONS = tuple(
    dict.fromkeys(
        (
            *(
                key
                for kind in VENDOR_KINDS.kinds
                for key in (kind.to_allocate_annotation, kind.allocated_annotation)
            ),
            "hami.io/vgpu-node",
            "hami.io/vgpu-time",
            "hami.io/bind-phase",
            "hami.io/bind-time",
            "hami.io/allocate-failure",
        )
    )
)
"""What only HAMi writes (every kind's device annotations among them): removed from a new pod,
and changed only by the trusted users."""
POLICY_ANNOTATIONS = ("hami.io/node-scheduler-policy", "hami.io/gpu-scheduler-policy")
