"""Identifiers that say what they are."""

from typing import NewType

NodeName = NewType("NodeName", str)
DeviceUUID = NewType("DeviceUUID", str)
AllocationId = NewType("AllocationId", str)
RequestId = NewType("RequestId", str)
PodUID = NewType("PodUID", str)
