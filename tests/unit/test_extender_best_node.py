"""With `--extender-best-node-only`, filter answers exactly the node prioritize would rank first
(so kube-scheduler can skip prioritize and still follow the node policy)."""

from __future__ import annotations

import time

import pytest

from services.allocator.allocator import Allocator
from services.allocator.extender import Extender
from services.allocator.settings import AllocatorSettings
from shared.schemas.inventory import DeviceInfo, NodeInventory, inventory_codec

NODES = [f"n{i}" for i in range(6)]


def allocator(policy: str) -> Allocator:
    held = Allocator(AllocatorSettings(node_policy=policy), None, None)  # type: ignore[arg-type]
    for i, node in enumerate(NODES):
        devices = tuple(
            DeviceInfo(
                uuid=f"GPU-{node}-{d}",
                index=d,
                model="NVIDIA H200",
                memory_mib=10_000 * (i + 1),  # every node a different size: no ties
                physical_memory_mib=10_000 * (i + 1),
            )
            for d in range(2)
        )
        inventory = NodeInventory(node=node, agent_id="t", devices=devices, sent_at=time.time())
        held.observe_node(node, inventory_codec.encode(inventory))
    return held


def args(memory: str) -> dict[str, object]:
    limits = {"nvidia.com/gpu": "1", "nvidia.com/gpumem": memory}
    pod = {
        "metadata": {"uid": "u1", "name": "p", "namespace": "d"},
        "spec": {"containers": [{"name": "c", "resources": {"limits": limits}}]},
    }
    return {"Pod": pod, "NodeNames": NODES}


@pytest.mark.parametrize("policy", ["binpack", "spread", "best-fit", "fragmentation"])
def test_filter_answers_the_node_prioritize_ranks_first(policy: str) -> None:
    held = allocator(policy)
    ranked = Extender(held, None).prioritize(args("15000"))
    top = max(ranked, key=lambda r: r["Score"])["Host"]
    answer = Extender(held, None, best_node_only=True).filter(args("15000"))
    assert answer["NodeNames"] == [top]
    refused = {**answer["FailedNodes"], **answer["FailedAndUnresolvableNodes"]}
    # Reasons only for nodes looked at: a bounded search (binpack, spread) or a score index
    # (best-fit, fragmentation) need not look at every node to know the best one.
    assert set(refused) <= set(NODES) - {top}
    assert Extender(held, None).filter(args("15000"))["NodeNames"] == NODES[1:]


@pytest.mark.parametrize("policy", ["binpack", "spread", "best-fit", "fragmentation"])
def test_when_no_node_fits_every_node_says_why(policy: str) -> None:
    held = allocator(policy)
    answer = Extender(held, None, best_node_only=True).filter(args("70000"))
    assert answer["NodeNames"] == []
    refused = {**answer["FailedNodes"], **answer["FailedAndUnresolvableNodes"]}
    assert set(refused) == set(NODES)  # kube-scheduler's diagnosis names each node's reason
    assert all("memory" in reason for reason in refused.values())
