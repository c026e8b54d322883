"""`hami up`: NATS (embedded or joined) and the services as child processes, restarted if they
crash, stopped together on SIGTERM (`hami down`)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import msgspec

from services.local.paths import (
    LocalRecord,
    hold_state_lock,
    jobs_dir,
    prepare_state_dir,
    record_path,
    write_record,
)
from shared import natsauth
from shared.allocator_client import AllocatorClient
from shared.embedded_nats import EmbeddedNats, start_nats
from shared.errors import HamiError, Unavailable
from shared.natsauth import CREDENTIALS_DIR, Credentials, credentials_file, load_credentials
from shared.natsutil import connect
from shared.ports import free_port
from shared.proc import die_with_parent
from shared.servicesettings import (
    AllocatorSettings,
    LogLevel,
    NodeAgentSettings,
    TelemetrySettings,
)
from shared.settings import write_settings_file

log = logging.getLogger("hami.local")


class UpSettings(msgspec.Struct, frozen=True, kw_only=True):
    state_dir: str
    nats_url: str | None = None
    """Join this server instead of starting one."""
    nats_port: int = 4222
    simulate: str | None = None
    node: str = ""
    metrics_port: int = 9395
    split_count: int = 10
    heartbeat_interval_s: float = 5.0
    node_ttl_s: float = 15.0
    log_level: LogLevel = "INFO"

    @property
    def node_name(self) -> str:
        return self.node or socket.gethostname()


@dataclass
class Child:
    name: str
    argv: list[str]
    log_path: Path
    process: asyncio.subprocess.Process | None = None
    restarts: int = 0
    started_at: float = field(default=0.0)


def child_specs(
    settings: UpSettings, url: str, state_dir: Path, credentials: Path | None = None
) -> list[Child]:
    """Each service with its settings whole, as a settings file (shared/settings.py): typed and
    checked here, not re-typed as flags."""
    logs, files = state_dir / "logs", state_dir / "settings"
    files.mkdir(mode=0o700, parents=True, exist_ok=True)

    def nats_credentials(user: str) -> str | None:
        return None if credentials is None else str(credentials_file(credentials, user))

    children = {
        "allocator": AllocatorSettings(
            nats_url=url,
            nats_credentials=nats_credentials("allocator"),
            log_level=settings.log_level,
            node_ttl_s=settings.node_ttl_s,
            # A short leader lease: an allocator restarted after kill -9 waits it out once.
            leader_ttl_s=3.0,
        ),
        "nodeagent": NodeAgentSettings(
            nats_url=url,
            nats_credentials=nats_credentials("nodeagent"),
            log_level=settings.log_level,
            node=settings.node_name,
            split_count=settings.split_count,
            heartbeat_interval_s=settings.heartbeat_interval_s,
            simulate=settings.simulate,
            local_jobs_dir=str(jobs_dir(state_dir)),
            usage_interval_s=2.0,  # one machine: `hami top` and the page follow jobs closely
        ),
        "telemetry": TelemetrySettings(
            nats_url=url,
            nats_credentials=nats_credentials("telemetry"),
            log_level=settings.log_level,
            metrics_port=settings.metrics_port,
        ),
    }
    return [
        Child(
            name,
            [
                sys.executable,
                "-m",
                f"services.{name}",
                "--settings-file",
                str(write_settings_file(files / f"{name}.json", child)),
            ],
            logs / f"{name}.log",
        )
        for name, child in children.items()
    ]


async def _spawn(child: Child) -> None:
    with child.log_path.open("ab") as out:
        child.process = await asyncio.create_subprocess_exec(
            *child.argv,
            stdout=out,
            stderr=out,
            stdin=asyncio.subprocess.DEVNULL,
            preexec_fn=die_with_parent,
        )
    child.started_at = time.monotonic()
    log.info("started", extra={"service": child.name, "pid": child.process.pid})


async def _stop(child: Child, grace_s: float) -> None:
    process = child.process
    if process is None or process.returncode is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        await asyncio.wait_for(process.wait(), grace_s)
    except TimeoutError:
        process.kill()
        await process.wait()


async def _wait_ready(
    url: str, node: str, timeout_s: float, credentials: Credentials | None
) -> None:
    nc = await connect(url, "hami-up-probe", reconnect=False, credentials=credentials)
    try:
        client = AllocatorClient(nc, timeout_s=1.0)
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                status = await client.status()
                if any(n.node == node for n in status.nodes):
                    return
            except HamiError:
                pass
            if time.monotonic() > deadline:
                raise Unavailable(
                    f"services did not become ready in {timeout_s:.0f}s; "
                    "see the logs under the state directory"
                )
            await asyncio.sleep(0.1)
    finally:
        await nc.close()


async def supervise(settings: UpSettings, stop: asyncio.Event) -> None:
    state_dir = Path(settings.state_dir)
    os.umask(0o077)  # the store, logs and records are this user's alone
    prepare_state_dir(state_dir)
    lock = hold_state_lock(state_dir)  # before anything starts: the check-then-start race
    logs = state_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    embedded: EmbeddedNats | None = None
    credentials: Path | None = None
    if settings.nats_url is None:
        # Our own server: one identity per service, other local users refused.
        credentials = state_dir / CREDENTIALS_DIR
        authorization = natsauth.generate(credentials, settings.node_name)
        embedded = start_nats(state_dir, port=settings.nats_port, authorization=authorization)
        url = embedded.url
    else:
        url = settings.nats_url
        authorization = ""
    if settings.metrics_port == 0:
        settings = msgspec.structs.replace(settings, metrics_port=free_port())
    children = child_specs(settings, url, state_dir, credentials)
    record = LocalRecord(
        supervisor_pid=os.getpid(),
        nats_url=url,
        embedded_nats=embedded is not None,
        metrics_url=f"http://127.0.0.1:{settings.metrics_port}/metrics",
        node=settings.node_name,
    )

    def save() -> None:
        record.services = {c.name: c.process.pid for c in children if c.process is not None}
        write_record(state_dir, record)

    try:
        for child in children:
            await _spawn(child)
        save()
        client = (
            None
            if credentials is None
            else load_credentials(credentials_file(credentials, "client"))
        )
        await _wait_ready(url, settings.node_name, timeout_s=30.0, credentials=client)
        record.ready = True
        save()
        log.info("local mode ready", extra={"nats": url, "node": settings.node_name})
        while not stop.is_set():
            if embedded is not None and embedded.process.poll() is not None:
                log.error("nats-server exited; restarting it on the same port and store")
                port = int(url.rsplit(":", 1)[1])
                embedded = start_nats(state_dir, port=port, authorization=authorization)
            for child in children:
                assert child.process is not None
                if child.process.returncode is None:
                    continue
                # Back off a service that crashes right after starting, up to 10 s.
                quick = time.monotonic() - child.started_at < 5.0
                child.restarts = child.restarts + 1 if quick else 0
                log.error(
                    "service exited; restarting",
                    extra={
                        "service": child.name,
                        "code": child.process.returncode,
                        "restarts": child.restarts,
                    },
                )
                await asyncio.sleep(min(10.0, 0.2 * 2**child.restarts) if quick else 0)
                await _spawn(child)
                save()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.2)
    finally:
        # The node agent first, so it withdraws its inventory while NATS is still up.
        for child in sorted(children, key=lambda c: c.name != "nodeagent"):
            await _stop(child, grace_s=10.0)
        if embedded is not None:
            embedded.stop()
        record_path(state_dir).unlink(missing_ok=True)
        os.close(lock)
        log.info("local mode stopped")


def main() -> None:
    """Entry for the detached supervisor: settings arrive as JSON in argv[1]."""
    from shared.logs import setup_logging
    from shared.runloop import run_until_signalled

    settings = msgspec.json.decode(sys.argv[1], type=UpSettings)
    setup_logging("supervisor", settings.log_level)
    try:
        run_until_signalled(lambda stop: supervise(settings, stop))
    except HamiError as e:
        print(f"hami up: {e}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
