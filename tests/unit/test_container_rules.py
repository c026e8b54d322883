"""One set of container rules: for any container, the webhook refuses the pod exactly when
the allocator refuses to read it, with the same sentence (the allocator does not know the
cluster's largest device, so memory is bounded only by the webhook)."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from services.webhook.core.admission import validate_pod
from services.webhook.core.settings import WebhookSettings
from shared.containerrules import Limits, first_problem
from shared.errors import InvalidRequest
from shared.podspec import parse_pod
from shared.resources import ResourceNames

NAMES = ResourceNames()
quantities = st.one_of(
    st.integers(-5, 300).map(str),
    st.sampled_from(["1k", "2e3", "0.5", "abc", "", "1Mi", "-1"]),
    st.integers(-5, 300),
)
resources = st.dictionaries(
    st.sampled_from([*NAMES.managed, NAMES.priority]), quantities, max_size=5
)
# No memory bound in the webhook either, so both sides apply exactly the same rules.
UNBOUNDED = WebhookSettings(max_device_memory_mib=10**9)


def pod(limits: dict[str, Any]) -> dict[str, Any]:
    return {
        "metadata": {"uid": "u", "name": "p", "namespace": "d"},
        "spec": {"containers": [{"name": "main", "resources": {"limits": limits}}]},
    }


@given(resources)
def test_the_webhook_and_the_allocator_refuse_alike(limits: dict[str, Any]) -> None:
    webhook = validate_pod(pod(limits), UNBOUNDED)
    try:
        parse_pod(pod(limits))
        allocator = None
    except InvalidRequest as e:
        allocator = str(e)
    assert webhook == allocator


def test_problems_are_typed() -> None:
    container = {"resources": {"limits": {NAMES.cores: "130", NAMES.memory: "1x"}}}
    problem = first_problem(container, "container 'c'", NAMES, Limits())
    assert problem is not None and (problem.code, problem.resource) == ("not_whole", NAMES.memory)
    assert (
        str(problem)
        == "container 'c': nvidia.com/gpumem='1x' must be a whole number of MiB, e.g. 3000"
    )
    container = {"resources": {"limits": {NAMES.cores: "130"}}}
    problem = first_problem(container, "container 'c'", NAMES, Limits())
    assert problem is not None and problem.code == "cores_range" and problem.value == 130
