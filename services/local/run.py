"""`hami run`: get a placement, run the command with its limits, keep the lease, release."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shlex
import signal
import socket
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

from nats.aio.client import Client

from services.local.jobenv import job_environment, write_limits_file
from services.local.paths import jobs_dir
from services.local.proctree import become_subreaper, end_leftovers
from shared import tracing
from shared.allocator_client import AllocatorClient
from shared.errormap import EXIT_CODE
from shared.errors import HamiError, InvalidRequest, NoCapacity, Unavailable
from shared.native import find_libvgpu
from shared.proc import die_with_parent
from shared.schemas.events import EVENTS
from shared.schemas.placement import AllocationRecord, ContainerRequest, Holder, PlaceRequest

EXIT_UNAVAILABLE = EXIT_CODE["unavailable"]
FORWARDED = (
    signal.SIGTERM,
    signal.SIGHUP,
    signal.SIGQUIT,
    signal.SIGUSR1,
    signal.SIGUSR2,
    signal.SIGWINCH,
    signal.SIGCONT,
)


@dataclass(frozen=True, slots=True)
class RunOptions:
    container: ContainerRequest
    command: list[str]
    priority: int = 1
    wait: bool = True
    lease_ttl_s: float = 30.0
    retry_interval_s: float = 5.0
    leftovers: str = "kill"
    """What happens to processes the job leaves when its main process exits: kill or wait."""
    require_isolation: bool = False
    """Refuse to run the job without the isolation library (its limits would be advisory)."""
    libvgpu: str = "auto"
    """Which library (CliSettings.libvgpu): auto, a path, or empty for none."""


def say(message: str) -> None:
    print(f"hami run: {message}", file=sys.stderr, flush=True)


async def acquire(
    nc: Client, client: AllocatorClient, options: RunOptions, secret: str
) -> AllocationRecord:
    request = PlaceRequest(
        request_id=uuid.uuid4().hex,
        containers=(options.container,),
        holder=Holder(
            kind="local",
            host=socket.gethostname(),
            pid=os.getpid(),
            command=shlex.join(options.command)[:200],
        ),
        lease_ttl_s=options.lease_ttl_s,
        priority=options.priority,
        holder_secret=secret,
    )
    released = asyncio.Event()

    async def on_release(_msg: object) -> None:
        released.set()

    # Subscribe before asking, so a release between the answer and the wait is not missed.
    subscription = await nc.subscribe(f"{EVENTS}.*", cb=on_release)
    try:
        told = False
        while True:
            released.clear()
            try:
                reply = await client.place(request)
            except HamiError as e:
                if not (e.retryable and options.wait):
                    raise
                if not told:
                    say(f"{e}; retrying")
                    told = True
                await _wait_event(released, options.retry_interval_s)
                continue
            if reply.outcome == "placed" and reply.allocation is not None:
                return reply.allocation
            if reply.outcome == "never":
                raise InvalidRequest(f"this request can never fit here: {reply.reason}")
            if not options.wait:
                raise NoCapacity(f"no capacity now ({reply.reason}); not waiting (--no-wait)")
            if not told:
                say(f"waiting for devices: {reply.reason}")
                told = True
            await _wait_event(released, options.retry_interval_s)
    finally:
        await subscription.unsubscribe()


async def _wait_event(event: asyncio.Event, timeout_s: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), timeout_s)


async def keep_lease(
    client: AllocatorClient,
    record: AllocationRecord,
    child: asyncio.subprocess.Process,
    interval_s: float,
    secret: str,
) -> None:
    """Renew until cancelled. If the allocation is gone, the job must stop: its devices may
    already belong to someone else."""
    while True:
        await asyncio.sleep(interval_s)
        try:
            reply = await client.renew(record.allocation_id, secret)
        except HamiError as e:
            if e.retryable:
                continue  # allocator restarting: it restores leases with a fresh deadline
            say(f"allocation {record.allocation_id} cannot be renewed ({e}); stopping the job")
            if child.returncode is None:
                child.terminate()
            return
        if not reply.ok:
            say(f"allocation {record.allocation_id} was lost; stopping the job")
            if child.returncode is None:
                child.terminate()
            return


def isolation_library(required: bool, setting: str = "auto") -> Path | None:
    """The library jobs get preloaded; without it the limits are advisory, and `hami run` says so
    (or refuses, when the caller requires isolation)."""
    library = find_libvgpu(setting)
    if library is None:
        advice = "build it with `make -C native` or set HAMI_LIBVGPU"
        if required:
            raise Unavailable(f"the isolation library libvgpu.so is missing ({advice})")
        say(f"the isolation library libvgpu.so is missing: limits are not enforced ({advice})")
    return library


async def run_job(nc: Client, options: RunOptions, state_dir: Path) -> int:
    library = isolation_library(options.require_isolation, options.libvgpu)
    client = AllocatorClient(nc)
    secret = secrets.token_hex(16)  # only this process can renew or release what it gets
    # One trace per placement: this span is its root and ends once the job has started.
    with tracing.span("hami run", attributes={"process.command": options.command[0]}) as placement:
        record = await acquire(nc, client, options, secret)
        placement.set_attribute("hami.allocation_id", record.allocation_id)
        placement.set_attribute("hami.node", record.node)
        cache_dir = jobs_dir(state_dir)
        cache_dir.mkdir(parents=True, exist_ok=True)
        cache_path = cache_dir / f"{record.allocation_id}.cache"
        env = job_environment(os.environ, record, cache_path=cache_path, libvgpu=library)
        # The job may join the trace (OpenTelemetry's environment carrier).
        env.update({k.upper(): v for k, v in tracing.inject({}).items()})
        limits = write_limits_file(env, cache_path)
        subreaper = become_subreaper()
        with tracing.span("start job", attributes={"process.command": options.command[0]}):
            try:
                child = await asyncio.create_subprocess_exec(
                    *options.command, env=env, preexec_fn=lambda: die_with_parent(signal.SIGKILL)
                )
            except OSError as e:
                await client.release(
                    record.allocation_id, reason="command failed to start", secret=secret
                )
                raise InvalidRequest(f"cannot start {options.command[0]!r}: {e.strerror}") from e
        placement.set_attribute("process.pid", child.pid)
    loop = asyncio.get_running_loop()
    forwarded = list(FORWARDED)
    if not subreaper:
        say("cannot track the job's process tree here; processes it leaves may keep running")
    if not _stdin_is_terminal():
        # From a terminal, Ctrl-C already reaches the job (same process group); forward it
        # only when it was sent to us alone.
        forwarded.append(signal.SIGINT)
    else:
        loop.add_signal_handler(signal.SIGINT, lambda: None)
    for sig in forwarded:
        loop.add_signal_handler(sig, child.send_signal, sig)
    lease = asyncio.create_task(keep_lease(client, record, child, options.lease_ttl_s / 3, secret))
    try:
        code = await child.wait()
        # The share lives as long as any process of the job: none may keep running with it.
        left = await end_leftovers(options.leftovers)
        if left:
            verb = "ended" if options.leftovers == "kill" else "waited for"
            say(f"{verb} {left} process(es) the job left running")
    finally:
        lease.cancel()
        for sig in (*forwarded, signal.SIGINT):
            loop.remove_signal_handler(sig)
        try:
            await client.release(
                record.allocation_id, reason=f"job exited ({child.returncode})", secret=secret
            )
        except HamiError as e:
            say(f"release failed ({e}); the lease expires in {options.lease_ttl_s:.0f}s")
        cache_path.unlink(missing_ok=True)
        limits.unlink(missing_ok=True)
    return code


def _stdin_is_terminal() -> bool:
    # Not sys.stdin: it is None when the process was started with standard input closed.
    return os.isatty(0)
