"""Where local mode keeps its state, and the record of a running `hami up`."""

from __future__ import annotations

import json
import os
from pathlib import Path

import msgspec


def default_state_dir() -> Path:
    explicit = os.environ.get("HAMI_STATE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "hami"


class LocalRecord(msgspec.Struct, kw_only=True):
    """``<state>/local.json``: what `hami up` started, for `hami run/status/down` to find."""

    supervisor_pid: int
    nats_url: str
    embedded_nats: bool
    metrics_url: str
    node: str
    services: dict[str, int] = {}
    """service name -> pid of its current process."""
    ready: bool = False


def record_path(state_dir: Path) -> Path:
    return state_dir / "local.json"


def read_record(state_dir: Path) -> LocalRecord | None:
    try:
        return msgspec.json.decode(record_path(state_dir).read_bytes(), type=LocalRecord)
    except (OSError, msgspec.DecodeError, json.JSONDecodeError):
        return None


def write_record(state_dir: Path, record: LocalRecord) -> None:
    """Atomically, so a reader never sees half a file."""
    path = record_path(state_dir)
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(msgspec.json.encode(record))
    os.replace(tmp, path)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def running_record(state_dir: Path) -> LocalRecord | None:
    """The record of a live `hami up`, or None (a stale record is ignored)."""
    record = read_record(state_dir)
    if record is None or not pid_alive(record.supervisor_pid):
        return None
    return record
