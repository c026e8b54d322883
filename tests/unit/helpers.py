"""Builders for core tests."""

from __future__ import annotations

from shared.schemas.inventory import DeviceInfo, NodeInventory
from shared.schemas.placement import ContainerRequest, PlaceRequest


def device(
    index: int,
    *,
    node: str = "n1",
    model: str = "NVIDIA H200",
    memory: int = 1000,
    cores: int = 100,
    split: int = 10,
    numa: int | None = 0,
    healthy: bool = True,
) -> DeviceInfo:
    return DeviceInfo(
        uuid=f"GPU-{node}-{index}",
        index=index,
        model=model,
        memory_mib=memory,
        physical_memory_mib=memory,
        cores=cores,
        split_count=split,
        numa_node=numa,
        healthy=healthy,
    )


def node(name: str, *devices: DeviceInfo) -> NodeInventory:
    return NodeInventory(node=name, agent_id="a", devices=devices)


def request(*containers: ContainerRequest, request_id: str = "r1", **kw: object) -> PlaceRequest:
    return PlaceRequest(request_id=request_id, containers=containers, **kw)  # type: ignore[arg-type]
