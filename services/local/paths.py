"""Where local mode keeps its state, and the record of a running `hami up`."""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path

import msgspec

from shared.errors import Unavailable
from shared.servicesettings import CliSettings

LOCK_FILE = "supervisor.lock"


def default_state_dir(settings: CliSettings) -> Path:
    if settings.state_dir:
        return Path(settings.state_dir)
    base = settings.xdg_state_home or str(Path.home() / ".local" / "state")
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


def page_url(record: LocalRecord) -> str:
    """Telemetry's web page: it serves the metrics too, on the same port."""
    return record.metrics_url.removesuffix("metrics")


def jobs_dir(state_dir: Path) -> Path:
    """Where `hami run` jobs keep their regions (the node agent reads them for usage)."""
    return state_dir / "containers"


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


def prepare_state_dir(state_dir: Path) -> None:
    """Create it private to this user (0700; the NATS store, logs and credentials live here),
    or say in one line why it cannot be used (read-only, full, not ours)."""
    try:
        state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        state_dir.chmod(0o700)
        probe = state_dir / f".probe-{os.getpid()}"
        probe.write_bytes(b"probe")
        probe.unlink()
    except OSError as e:
        raise Unavailable(
            f"state directory {state_dir} is not usable ({e.strerror or e}); "
            "pass --state-dir DIR or set HAMI_STATE_DIR"
        ) from None


def hold_state_lock(state_dir: Path) -> int:
    """An exclusive lock on the state directory for the caller's life (the kernel drops it when
    the process dies): one supervisor per directory, whatever races to start. Returns the fd."""
    fd = os.open(state_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 32).decode(errors="replace").strip() or "?"
        os.close(fd)
        raise Unavailable(
            f"another `hami up` (pid {holder}) is running on {state_dir}; "
            "use it, or stop it with `hami down`"
        ) from None
    os.ftruncate(fd, 0)
    os.write(fd, str(os.getpid()).encode())
    return fd
