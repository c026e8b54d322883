"""One real node with HAMi on it for the whole module (tests/e2e/kubelet/stack.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.e2e.kubelet.stack import Hami, Unusable, hami_on_a_node


@pytest.fixture(scope="module")
def hami(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hami]:
    try:
        with hami_on_a_node(tmp_path_factory.mktemp("kubelet")) as node:
            yield node
    except Unusable as e:
        pytest.skip(str(e))
