"""Placement messages out of their documented ranges are malformed requests, never defaults."""

from __future__ import annotations

import json

import pytest

from services.allocator.core.placement import validate
from services.local.cli import build_run_options, parser
from shared.errors import InvalidRequest
from shared.schemas.placement import (
    COMMIT,
    PLACE,
    RELEASE,
    ContainerRequest,
    PlaceRequest,
)


def place(**fields: object) -> bytes:
    return json.dumps({"request_id": "r", "containers": [{"count": 1}], **fields}).encode()


@pytest.mark.parametrize(
    "fields",
    [
        {"lease_ttl_s": 1e400},
        {"lease_ttl_s": -1},
        {"lease_ttl_s": 0},
        {"lease_ttl_s": 10**9},
        {"priority": 7},
        {"priority": -3},
        {"request_id": ""},
        {"request_id": "x" * 300},
        {"containers": [{"count": 17}]},
        {"containers": [{"cores": 101}]},
        {"containers": [{"memory_percent": 0}]},
    ],
)
def test_out_of_range_fields_are_refused_at_decode(fields: dict[str, object]) -> None:
    with pytest.raises(InvalidRequest):
        PLACE.requests.decode(place(**fields))


def test_nan_and_inf_never_mean_never_expires() -> None:
    for ttl in (float("nan"), float("inf")):
        request = PlaceRequest(request_id="r", containers=(ContainerRequest(),), lease_ttl_s=ttl)
        with pytest.raises(InvalidRequest, match="finite"):
            validate(request)
    with pytest.raises(InvalidRequest):
        COMMIT.requests.decode(b'{"allocation_id": "a", "lease_ttl_s": 1e999}')
    with pytest.raises(InvalidRequest):
        RELEASE.requests.decode(b'{"allocation_id": "a", "reason": "' + b"x" * 2000 + b'"}')


@pytest.mark.parametrize("ttl", ["nan", "inf", "-inf", "0", "-5", "0.5"])
def test_the_cli_refuses_lease_ttls_that_are_not_finite_seconds(ttl: str) -> None:
    args = parser().parse_args(["run", f"--lease-ttl={ttl}", "--", "true"])
    with pytest.raises(InvalidRequest, match="--lease-ttl"):
        build_run_options(args)


def test_a_request_id_used_again_for_another_shape_is_an_error() -> None:
    import msgspec

    from services.allocator.core import ledger
    from services.allocator.core.fit import NodeFit
    from services.allocator.core.state import ClusterState
    from shared.schemas.placement import DeviceGrant

    first = PlaceRequest(request_id="r", containers=(ContainerRequest(cores=10),))
    grant = DeviceGrant(uuid="g", index=0, model="m", memory_mib=1, cores=10)
    record = ledger.record_for(first, NodeFit(node="n", containers=((grant,),)), "a1", 0.0)
    state, _ = ledger.commit(ClusterState(), record, 0.0)
    assert ledger.retried(state, first) == record
    assert ledger.retried(state, msgspec.structs.replace(first, candidate_nodes=("n",))) == record
    other = PlaceRequest(request_id="r", containers=(ContainerRequest(cores=90),))
    with pytest.raises(InvalidRequest, match="different request"):
        ledger.retried(state, other)
    with pytest.raises(InvalidRequest, match="different request"):
        ledger.retried(state, PlaceRequest(request_id="r", containers=first.containers, priority=0))


def test_a_decision_among_candidates_looks_only_at_them() -> None:
    from immutables import Map

    from services.allocator.core import ledger
    from services.allocator.core.placement import Placed, SchedulingSettings, decide
    from services.allocator.core.state import ClusterState
    from shared.schemas.inventory import DeviceInfo, NodeInventory

    state = ClusterState()
    for i in range(3):
        device = DeviceInfo(
            uuid=f"GPU-{i}", index=0, model="m", memory_mib=1000, physical_memory_mib=1000
        )
        inventory = NodeInventory(node=f"n{i}", agent_id="a", devices=(device,))
        state = ledger.observe_inventory(state, inventory, 0.0)

    class Guarded:
        """Answers lookups by name; walking every node fails the test."""

        def __init__(self, nodes: Map) -> None:  # type: ignore[type-arg]
            self._nodes = nodes

        def get(self, name: str, default: object = None) -> object:
            return self._nodes.get(name, default)

        def __getitem__(self, name: str) -> object:
            return self._nodes[name]

        def values(self) -> object:
            raise AssertionError("walked every node of the cluster")

    from dataclasses import replace

    state = replace(state, nodes=Guarded(state.nodes))
    request = PlaceRequest(
        request_id="r", containers=(ContainerRequest(),), candidate_nodes=("n2", "n2", "gone")
    )
    decision = decide(state, request, SchedulingSettings(), 1.0)
    assert isinstance(decision, Placed) and decision.fit.node == "n2"


def test_the_load_index_keeps_every_bucket_in_name_order() -> None:
    import random

    from services.allocator.core.index import LoadIndex

    rng = random.Random(7)
    index, loads = LoadIndex(), {}
    names = [f"node-{i:05d}" for i in range(600)]
    for _ in range(5000):
        name = rng.choice(names)
        if rng.random() < 0.15 and name in loads:
            index, _ = index.without(name), loads.pop(name)
        else:
            load = rng.choice([0.0, 0.0, 0.0, 0.5, 0.9])
            index, loads[name] = index.with_load(name, load), load
    expected = sorted(loads, key=lambda n: (int(loads[n] * 100), n))
    assert list(index.ordered(most_loaded_first=False)) == expected
    by_bucket_desc = sorted(loads, key=lambda n: (-int(loads[n] * 100), n))
    assert list(index.ordered(most_loaded_first=True)) == by_bucket_desc
