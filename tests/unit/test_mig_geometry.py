"""MIG as a hardware partition with a geometry: a request gets the smallest profile that holds
it and has a free placement, placed where the rest of the GPU stays most useful; slices held
by instances the scheduler did not make are never placed over; `nvidia.com/vgpu-mode` keeps a
pod on the sharing it asked for."""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.allocator.core.fit import NodeFit, Reason, fit_node, fullest_first, partition_for
from services.allocator.core.state import NO_USAGE, DeviceUsage, slice_mask
from shared.mig import H200_MIB, H200_PROFILES
from shared.schemas.inventory import DeviceInfo, PartitionProfile
from shared.schemas.placement import ContainerRequest
from tests.unit.helpers import device

GIB = 1024


def mig_gpu(index: int = 0, held: int = 0) -> DeviceInfo:
    return msgspec.structs.replace(
        device(index, memory=143771),
        isolation="partition",
        profiles=H200_PROFILES,
        slices=8,
        slices_held=held,
        split_count=7,
    )


def place(gpu: DeviceInfo, usage: DeviceUsage, memory_gib: int) -> tuple[str, int, DeviceUsage]:
    request = ContainerRequest(memory_mib=memory_gib * GIB)
    fit = fit_node("n", (gpu,), {gpu.uuid: usage}, (request,), fullest_first)
    assert isinstance(fit, NodeFit), fit
    (grant,) = fit.containers[0]
    assert grant.placement is not None
    return grant.profile, grant.placement, usage.plus(grant)


def test_the_smallest_profile_that_holds_it() -> None:
    gpu = mig_gpu()
    assert place(gpu, NO_USAGE, 10)[0] == "1g.18gb"
    assert place(gpu, NO_USAGE, 20)[0] == "1g.35gb"
    assert place(gpu, NO_USAGE, 40)[0] == "3g.71gb"
    assert place(gpu, NO_USAGE, 100)[0] == "7g.141gb"
    refused = fit_node("n", (gpu,), {}, (ContainerRequest(memory_mib=150 * GIB),), fullest_first)
    assert isinstance(refused, Reason) and refused.code == "profile"


def test_small_partitions_keep_the_large_ones_placeable() -> None:
    """Three 1g.18gb go where they leave the 4g.71gb's only placement (slices 0-3) free: a
    request for 50 GiB and half the compute still gets one; first-free placements (0, 1, 2)
    would have refused it."""
    gpu, usage = mig_gpu(), NO_USAGE
    starts = []
    for _ in range(3):
        profile, start, usage = place(gpu, usage, 10)
        assert profile == "1g.18gb"
        starts.append(start)
    assert sorted(starts) == [4, 5, 6]
    request = ContainerRequest(memory_mib=50 * GIB, cores=50)
    fit = fit_node("n", (gpu,), {gpu.uuid: usage}, (request,), fullest_first)
    assert isinstance(fit, NodeFit)
    (grant,) = fit.containers[0]
    assert (grant.profile, grant.placement, grant.slices) == ("4g.71gb", 0, 4)


def test_slices_held_by_hand_made_instances_are_never_placed_over() -> None:
    gpu = mig_gpu(held=slice_mask(0, 4))  # a 4g.71gb made by hand at 0
    profile, start, usage = place(gpu, NO_USAGE, 40)
    assert (profile, start) == ("3g.71gb", 4)
    refused = fit_node(
        "n", (gpu,), {gpu.uuid: usage}, (ContainerRequest(memory_mib=10 * GIB),), fullest_first
    )
    assert isinstance(refused, Reason) and refused.code == "geometry"


def test_the_gpu_fills_exactly() -> None:
    """Seven 1g.18gb take seven of the eight slices (none may start at the last); an eighth
    is refused for the geometry, and so is anything else then."""
    gpu, usage = mig_gpu(), NO_USAGE
    for _ in range(7):
        usage = place(gpu, usage, 10)[2]
    assert usage.slices == 0x7F and usage.cores == 98
    for memory in (10, 20):
        refused = partition_for(ContainerRequest(memory_mib=memory * GIB), gpu, usage)
        assert refused == "geometry"


def test_the_vgpu_mode_keeps_a_pod_on_its_sharing() -> None:
    shared, mig = device(0, memory=143771), mig_gpu(1)
    for mode, expected in (("hami-core", shared.uuid), ("mig", mig.uuid)):
        request = ContainerRequest(memory_mib=10 * GIB, device_mode=mode)  # type: ignore[arg-type]
        fit = fit_node("n", (shared, mig), {}, (request,), fullest_first)
        assert isinstance(fit, NodeFit)
        assert fit.containers[0][0].uuid == expected
    only_shared = fit_node(
        "n", (shared,), {}, (ContainerRequest(memory_mib=GIB, device_mode="mig"),), fullest_first
    )
    assert isinstance(only_shared, Reason) and only_shared.code == "mode"


def test_whole_instances_go_smallest_first() -> None:
    small, large = (
        msgspec.structs.replace(device(i, memory=m), isolation="whole", model=f"H200 MIG {n}")
        for i, m, n in ((0, 71 * GIB, "3g.71gb"), (1, 18 * GIB, "1g.18gb"))
    )
    fit = fit_node("n", (small, large), {}, (ContainerRequest(memory_mib=10 * GIB),), fullest_first)
    assert isinstance(fit, NodeFit) and fit.containers[0][0].uuid == large.uuid


@settings(max_examples=200, deadline=None)
@given(
    asks=st.lists(st.sampled_from([5, 10, 20, 30, 40, 60, 100, 140]), min_size=1, max_size=12),
    held=st.sampled_from([0, slice_mask(0, 1), slice_mask(6, 2), slice_mask(4, 4)]),
)
def test_no_two_partitions_ever_share_a_slice(asks: list[int], held: int) -> None:
    """Whatever arrives, granted partitions never overlap each other or the held slices, stay
    on legal placements, and never take more than the GPU's compute."""
    gpu, usage = mig_gpu(held=held), NO_USAGE
    legal = {p.name: (p.placements, p.slices) for p in gpu.profiles}
    taken = held
    for memory in asks:
        chosen = partition_for(ContainerRequest(memory_mib=memory * GIB), gpu, usage)
        if isinstance(chosen, str):
            continue
        profile, start = chosen
        assert start in legal[profile.name][0]
        bits = slice_mask(start, profile.slices)
        assert not bits & taken
        taken |= bits
        _, _, usage = place(gpu, usage, memory)
        assert usage.slices == taken & ~held
        assert usage.cores <= 100 and usage.count <= gpu.split_count


@pytest.mark.parametrize("profile", H200_PROFILES, ids=lambda p: p.name)
def test_the_h200_table_is_self_consistent(profile: PartitionProfile) -> None:
    assert all(start + profile.slices <= 8 for start in profile.placements)
    assert profile.memory_mib <= H200_MIB * profile.slices // 8


async def test_status_shows_how_each_device_is_shared_and_its_partitions() -> None:
    from services.allocator.allocator import Allocator
    from services.allocator.core import ledger
    from services.allocator.core.placement import Placed, SchedulingSettings, decide
    from services.allocator.settings import AllocatorSettings
    from services.local.status import render
    from shared.schemas.inventory import NodeInventory
    from shared.schemas.placement import PlaceRequest, StatusRequest

    held = Allocator(AllocatorSettings(), None, None)  # type: ignore[arg-type]
    inventory = NodeInventory(node="n", agent_id="a", devices=(mig_gpu(0), device(1, memory=80000)))
    held.state = ledger.observe_inventory(held.state, inventory, 0.0)
    request = PlaceRequest(
        request_id="r",
        containers=(ContainerRequest(memory_mib=10 * GIB, device_mode="mig"),),
    )
    decision = decide(held.state, request, SchedulingSettings(node_ttl_s=1e12), 0.0)
    assert isinstance(decision, Placed)
    record = ledger.record_for(request, decision.fit, "a1", 0.0)
    held.state, _ = ledger.commit(held.state, record, 0.0)
    text = render(await held.status(StatusRequest()), "nats://x", None)
    assert "mig: 1g.18gb@6" in text and "hami-core" in text


def test_a_malformed_geometry_is_never_granted() -> None:
    """A profile that takes no slice (every placement would look free forever) or that runs
    past the device is left out: an agent's bad inventory cannot over-grant a GPU."""
    bad = (
        PartitionProfile(name="free-lunch", memory_mib=1000, cores=1, slices=0, placements=(0,)),
        PartitionProfile(name="overrun", memory_mib=2000, cores=1, slices=4, placements=(6,)),
    )
    gpu = msgspec.structs.replace(mig_gpu(), profiles=bad)
    assert partition_for(ContainerRequest(memory_mib=500), gpu, NO_USAGE) == "profile"


def test_a_never_says_why_when_no_node_of_the_kind_or_sharing_is_there() -> None:
    from services.allocator.core import ledger
    from services.allocator.core.placement import Never, SchedulingSettings, decide
    from services.allocator.core.state import ClusterState
    from shared.schemas.inventory import NodeInventory
    from shared.schemas.placement import PlaceRequest

    state = ledger.observe_inventory(
        ClusterState(), NodeInventory(node="n", agent_id="a", devices=(device(0),)), 0.0
    )
    live, expired = SchedulingSettings(node_ttl_s=1e9), SchedulingSettings(node_ttl_s=1.0)
    for container, settings_, said in (
        (ContainerRequest(memory_mib=10, device_mode="mig"), live, "vgpu-mode"),
        (ContainerRequest(kind="cambricon-mlu", memory_mib=10), live, "no device of this kind"),
        (ContainerRequest(memory_mib=10), expired, "no live node"),
    ):
        decision = decide(
            state, PlaceRequest(request_id="r", containers=(container,)), settings_, 10.0
        )
        assert isinstance(decision, Never) and said in decision.reason, decision


def test_kube_scheduler_hears_when_a_node_can_take_more() -> None:
    """Held MIG slices freed (an ended allocation's instance taken down), a device healthy
    again or added: the allocator marks the node so kube-scheduler retries its pending pods;
    a plain heartbeat or less room says nothing."""
    from services.allocator.allocator import capacity_grew
    from shared.schemas.inventory import NodeInventory

    def inventory(*devices: DeviceInfo) -> NodeInventory:
        return NodeInventory(node="n", agent_id="a", devices=devices)

    held, free = mig_gpu(held=0xFF), mig_gpu(held=0x40)
    assert capacity_grew(inventory(held), inventory(free))
    assert not capacity_grew(inventory(free), inventory(held))
    assert not capacity_grew(inventory(free), inventory(free))
    sick = msgspec.structs.replace(device(1), healthy=False)
    assert capacity_grew(inventory(free, sick), inventory(free, device(1)))
    assert capacity_grew(inventory(free), inventory(free, device(1)))
