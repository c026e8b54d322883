"""Every HTTP interface answers any JSON shape with a 4xx or a real answer, never a 5xx, and
the next valid request still works (the extender and the webhook, served by aiohttp)."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.allocator.allocator import Allocator
from services.allocator.extender import Extender
from services.allocator.extenderhttp import local_application as extender_app
from services.allocator.settings import AllocatorSettings
from services.webhook.core.settings import WebhookSettings
from services.webhook.service import application as webhook_app

scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=12)
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=30,
)
KEYS = [
    "Pod",
    "NodeNames",
    "Nodes",
    "PodName",
    "PodNamespace",
    "PodUID",
    "Node",
    "metadata",
    "spec",
    "containers",
    "resources",
    "limits",
    "nvidia.com/gpu",
    "request",
    "uid",
    "object",
    "kind",
    "operation",
    "apiVersion",
    "annotations",
    "userInfo",
    "oldObject",
]
shaped = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(KEYS), inner, max_size=5)
    ),
    max_leaves=40,
)
bodies = st.one_of(
    json_values.map(lambda v: json.dumps(v).encode()),
    shaped.map(lambda v: json.dumps(v).encode()),
    st.binary(max_size=64),
    st.integers(1, 20_000).map(lambda n: b"[" * n + b"]" * n),
    st.integers(1, 20_000).map(lambda n: b'{"Pod":' * n + b"1" + b"}" * n),
)


def extender_application() -> web.Application:
    allocator = Allocator(AllocatorSettings(), None, None)  # type: ignore[arg-type]
    return extender_app(Extender(allocator, None))


VALID_FILTER = json.dumps(
    {
        "Pod": {
            "metadata": {"uid": "u", "name": "p", "namespace": "d"},
            "spec": {"containers": []},
        },
        "NodeNames": ["n1"],
    }
).encode()
VALID_REVIEW = json.dumps(
    {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "u1",
            "kind": {"kind": "Pod"},
            "operation": "CREATE",
            "object": {"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c"}]}},
        },
    }
).encode()


@pytest.fixture
async def clients() -> AsyncIterator[dict[str, TestClient]]:
    made = {
        "extender": TestClient(TestServer(extender_application())),
        "webhook": TestClient(TestServer(webhook_app(WebhookSettings()))),
    }
    for client in made.values():
        await client.start_server()
    yield made
    for client in made.values():
        await client.close()


PATHS: dict[str, tuple[list[str], str, bytes, Callable[[Any], bool]]] = {
    "extender": (
        ["/filter", "/prioritize", "/bind"],
        "/filter",
        VALID_FILTER,
        lambda r: r["NodeNames"] == ["n1"],
    ),
    "webhook": (
        ["/mutate", "/validate"],
        "/mutate",
        VALID_REVIEW,
        lambda r: r["response"]["allowed"] is True,
    ),
}


@pytest.mark.parametrize("service", sorted(PATHS))
async def test_any_body_gets_a_4xx_or_an_answer_and_the_service_keeps_serving(
    clients: dict[str, TestClient], service: str
) -> None:
    client = clients[service]
    paths, valid_path, valid_body, valid = PATHS[service]
    loop = asyncio.get_running_loop()
    seen: list[bytes] = []

    @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
    @given(body=bodies, path=st.sampled_from(paths))
    def probe(body: bytes, path: str) -> None:
        seen.append(body)

        async def call() -> int:
            response = await client.post(path, data=body)
            await response.read()
            return response.status

        status = asyncio.run_coroutine_threadsafe(call(), loop).result(30)
        assert status < 500, (path, body[:200], status)

    await loop.run_in_executor(None, probe)
    assert len(seen) >= 100
    response = await client.post(valid_path, data=valid_body)
    assert response.status == 200 and valid(await response.json())


async def test_a_body_past_the_limit_is_refused_with_413(clients: dict[str, TestClient]) -> None:
    for service, (paths, *_rest) in PATHS.items():
        response = await clients[service].post(paths[0], data=io.BytesIO(b" " * (20 * 1024 * 1024)))
        assert response.status == 413, service
