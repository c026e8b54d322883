"""One real node with HAMi on it for the whole module (tests/e2e/kubelet/stack.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.e2e.kubelet.stack import Hami, Unusable, hami_on_a_node
from tests.e2e.observability.jaeger import Jaeger, start_jaeger


@pytest.fixture(scope="module")
def jaeger(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Jaeger]:
    server = start_jaeger(tmp_path_factory.mktemp("jaeger"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def hami(tmp_path_factory: pytest.TempPathFactory, jaeger: Jaeger) -> Iterator[Hami]:
    """HAMi's services trace into ``jaeger`` (tests/kubelet/test_device_plugin.py reads it)."""
    try:
        with hami_on_a_node(
            tmp_path_factory.mktemp("kubelet"), env=jaeger.environment("grpc")
        ) as node:
            yield node
    except Unusable as e:
        pytest.skip(str(e))
