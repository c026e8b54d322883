"""The `hami` command: up, down, run, status."""

from __future__ import annotations

import argparse
import asyncio
import logging
import math
import os
import signal
import subprocess
import sys
import time
import typing
from pathlib import Path

import msgspec

from services.local.paths import (
    default_state_dir,
    page_url,
    pid_alive,
    prepare_state_dir,
    record_path,
    running_record,
)
from services.local.proctree import LEFTOVER_POLICIES
from services.local.run import (
    EXIT_UNAVAILABLE,
    RunOptions,
    run_job,
)
from services.local.status import render
from services.local.supervisor import UpSettings
from services.local.top import top
from shared import tracing
from shared.allocator_client import AllocatorClient
from shared.embedded_nats import find_nats_server, port_is_free
from shared.errormap import exit_code
from shared.errors import HamiError, InvalidRequest, Unavailable
from shared.native import find_libvgpu
from shared.natsauth import CREDENTIALS_DIR, Credentials, credentials_file, load_credentials
from shared.natsutil import connect
from shared.quantity import parse_cores, parse_count, parse_memory
from shared.schemas.placement import MAX_LEASE_TTL_S, ContainerRequest
from shared.servicesettings import CliSettings, LogLevel
from shared.settings import load
from shared.simspec import parse_spec


def fail(message: str, code: int) -> int:
    print(message, file=sys.stderr)
    return code


def _settings(args: argparse.Namespace) -> CliSettings:
    """The CLI's settings from the environment, read once by the loader (main sets them)."""
    settings = getattr(args, "settings", None)
    return settings if isinstance(settings, CliSettings) else CliSettings()


def _state_dir(args: argparse.Namespace) -> Path:
    return Path(args.state_dir) if args.state_dir else default_state_dir(_settings(args))


def _nats_url(args: argparse.Namespace) -> str:
    if getattr(args, "nats", None):
        return str(args.nats)
    if _settings(args).nats_url:
        return _settings(args).nats_url
    record = running_record(_state_dir(args))
    if record is None:
        raise Unavailable("HAMi is not running here: start it with `hami up` (or pass --nats URL)")
    return record.nats_url


def cmd_top(args: argparse.Namespace) -> int:
    if args.interval <= 0:
        raise InvalidRequest("--interval must be more than 0 seconds")
    if args.url:
        url = args.url.rstrip("/")
    else:
        record = running_record(_state_dir(args))
        if record is None:
            raise Unavailable("HAMi is not running here: start it with `hami up` (or pass --url)")
        url = page_url(record).rstrip("/")
    return top(f"{url}/api/view", args.interval, args.once)


def cmd_up(args: argparse.Namespace) -> int:
    state_dir = _state_dir(args)
    os.umask(0o077)
    prepare_state_dir(state_dir)
    running = running_record(state_dir)
    if running is not None:
        print(f"hami is already running (pid {running.supervisor_pid}, NATS {running.nats_url})")
        return 0
    settings = UpSettings(
        state_dir=str(state_dir),
        nats_url=args.nats,
        nats_port=args.nats_port,
        simulate=args.simulate,
        node=args.node or "",
        metrics_port=args.metrics_port,
        split_count=args.split_count,
        log_level=args.log_level,
    )
    if args.simulate and any(d.mig for d in parse_spec(args.simulate)):  # a bad spec: refused
        raise InvalidRequest(
            f"--simulate {args.simulate!r}: local jobs share GPUs by interception; MIG GPUs "
            "(mig:MODEL) are served by a Kubernetes node agent in mig mode (docs/devices.md)"
        )
    if args.nats is None:
        find_nats_server()
        if args.nats_port and not port_is_free("127.0.0.1", args.nats_port):
            raise Unavailable(
                f"port {args.nats_port} on 127.0.0.1 is in use; stop what uses it, pass "
                f"--nats-port N (0 picks a free one), or join it with --nats nats://127.0.0.1:{args.nats_port}"
            )
    if args.metrics_port and not port_is_free("127.0.0.1", args.metrics_port):
        raise Unavailable(f"metrics port {args.metrics_port} is in use; pass --metrics-port N")
    argv = [
        sys.executable,
        "-m",
        "services.local.supervisor",
        msgspec.json.encode(settings).decode(),
    ]
    if args.foreground:
        os.execv(sys.executable, argv)
    log_path = state_dir / "hami.log"
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            argv, stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True
        )
    deadline = time.monotonic() + args.timeout
    while time.monotonic() < deadline:
        record = running_record(state_dir)
        if record is not None and record.ready and record.supervisor_pid == process.pid:
            print(
                f"hami is up: node {record.node}, NATS {record.nats_url}, "
                f"metrics {record.metrics_url}"
            )
            print(f"web page: {page_url(record)} (in a terminal: hami top)")
            for note in asyncio.run(_up_notes(args, record.nats_url, record.node)):
                print(note)
            print("run a job with: hami run --gpumem 3g --gpucores 30 -- python train.py")
            return 0
        if process.poll() is not None:
            lines = log_path.read_text(errors="replace").strip().splitlines()
            last = next((ln for ln in reversed(lines) if ln.startswith("hami up:")), None)
            return fail(last or f"hami up: failed to start; see {log_path}", EXIT_UNAVAILABLE)
        time.sleep(0.1)
    process.terminate()
    return fail(f"hami up: not ready after {args.timeout:.0f}s; see {log_path}", EXIT_UNAVAILABLE)


def cmd_down(args: argparse.Namespace) -> int:
    state_dir = _state_dir(args)
    record = running_record(state_dir)
    if record is None:
        record_path(state_dir).unlink(missing_ok=True)
        print("hami is not running")
        return 0
    os.kill(record.supervisor_pid, signal.SIGTERM)
    deadline = time.monotonic() + 30
    while pid_alive(record.supervisor_pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if pid_alive(record.supervisor_pid):
        return fail(
            f"hami down: supervisor {record.supervisor_pid} did not stop in 30 s", EXIT_UNAVAILABLE
        )
    print("hami is down")
    return 0


def _credentials(args: argparse.Namespace) -> Credentials | None:
    """HAMI_NATS_CREDENTIALS if set, else the client credentials `hami up` made (readable by
    the user who started it alone), else none (a NATS joined with --nats without auth)."""
    explicit = _settings(args).nats_credentials
    if explicit:
        return load_credentials(explicit)
    path = credentials_file(_state_dir(args) / CREDENTIALS_DIR, "client")
    if getattr(args, "nats", None) or not path.exists():
        return None
    return load_credentials(path)


async def _up_notes(args: argparse.Namespace, url: str, node: str) -> list[str]:
    """What `hami up` must not leave unsaid: simulated devices, a missing isolation library."""
    library = find_libvgpu(_settings(args).libvgpu)
    notes = [
        f"isolation library: {library}"
        if library is not None
        else "isolation library: missing (make -C native): jobs run WITHOUT enforced limits"
    ]
    try:
        nc = await connect(url, "hami-up", reconnect=False, credentials=_credentials(args))
        try:
            status = await asyncio.wait_for(AllocatorClient(nc).status(node), 5)
        finally:
            await nc.close()
    except (HamiError, TimeoutError, OSError):
        return notes  # the services are up; `hami status` shows the devices once they report
    devices = [d for n in status.nodes if n.node == node for d in n.devices]
    simulated = [d for d in devices if d.simulated]
    if simulated:
        models = ", ".join(sorted({d.model for d in simulated}))
        notes.append(
            f"devices: {len(simulated)} SIMULATED ({models}): no GPU answered through NVML here; "
            "jobs get limits, not devices"
        )
    elif devices:
        notes.append(f"devices: {len(devices)} through NVML ({devices[0].model})")
    return notes


async def _status(args: argparse.Namespace) -> int:
    url = _nats_url(args)
    nc = await connect(url, "hami-status", reconnect=False, credentials=_credentials(args))
    try:
        status = await AllocatorClient(nc).status()
    finally:
        await nc.close()
    if args.json:
        print(msgspec.json.format(msgspec.json.encode(status)).decode())
        return 0
    record = running_record(_state_dir(args))
    print(render(status, url, record.metrics_url if record else None))
    return 0


def _split(values: list[str] | None) -> tuple[str, ...]:
    return tuple(v.strip() for value in values or [] for v in value.split(",") if v.strip())


def build_run_options(args: argparse.Namespace) -> RunOptions:
    if not args.command:
        raise InvalidRequest("give the command after --, e.g. hami run -- python train.py")
    memory = parse_memory(args.gpumem) if args.gpumem is not None else None
    container = ContainerRequest(
        count=parse_count(args.gpus),
        memory_mib=memory.mib if memory else None,
        memory_percent=memory.percent if memory else None,
        cores=parse_cores(args.gpucores) if args.gpucores is not None else 0,
        use_types=_split(args.gputype),
        nouse_types=_split(args.nouse_gputype),
        use_uuids=_split(args.gpu_uuid),
        nouse_uuids=_split(args.nouse_gpu_uuid),
        # A local job is held to its share by the library; MIG instances are made by the
        # Kubernetes node agent only, so a local job never gets a partition it could overrun.
        device_mode="hami-core",
    )
    if not (math.isfinite(args.lease_ttl) and 1 <= args.lease_ttl <= MAX_LEASE_TTL_S):
        raise InvalidRequest(
            f"--lease-ttl {args.lease_ttl}: must be 1..{MAX_LEASE_TTL_S:.0f} seconds"
        )
    return RunOptions(
        container=container,
        command=list(args.command),
        priority=0 if args.priority == "high" else 1,
        wait=args.wait,
        lease_ttl_s=args.lease_ttl,
        leftovers=args.leftovers,
        require_isolation=args.require_isolation,
        libvgpu=_settings(args).libvgpu,
    )


async def _run(args: argparse.Namespace) -> int:
    options = build_run_options(args)
    # The exporter's retries are not the job's output: one line below says what was lost.
    logging.getLogger("opentelemetry").setLevel(logging.CRITICAL)
    stop_tracing = tracing.start("hami-run")
    try:
        nc = await connect(_nats_url(args), "hami-run", credentials=_credentials(args))
        try:
            code = await run_job(nc, options, _state_dir(args))
        finally:
            await nc.close()
    finally:
        # Before a signal's death below: the placement's spans are sent (or given up on).
        if not stop_tracing():
            print(
                f"hami run: traces not all sent: the OTLP endpoint did not take them in "
                f"{tracing.FLUSH_S:.0f}s",
                file=sys.stderr,
            )
    if code < 0:
        # The job died of a signal: die of the same one, so our parent sees what happened.
        sig = -code
        if sig not in (signal.SIGKILL, signal.SIGSTOP):
            signal.signal(sig, signal.SIG_DFL)
            os.kill(os.getpid(), sig)
        return 128 + sig
    return code


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="hami", description="Share GPUs with hard limits.")
    top.add_argument(
        "--state-dir", help="local state (default $HAMI_STATE_DIR or ~/.local/state/hami)"
    )
    sub = top.add_subparsers(dest="command_name", required=True)

    up = sub.add_parser("up", help="start NATS and the services on this machine")
    up.add_argument("--nats", help="join this NATS server instead of starting one")
    up.add_argument("--nats-port", type=int, default=4222, help="embedded NATS port (0: any free)")
    up.add_argument("--simulate", help="simulated devices, e.g. 2xH200,1xT4 (default: NVML)")
    up.add_argument("--node", help="node name (default: host name)")
    up.add_argument("--metrics-port", type=int, default=9395)
    up.add_argument("--split-count", type=int, default=10, help="jobs that may share one device")
    up.add_argument("--log-level", default="INFO", choices=typing.get_args(LogLevel))
    up.add_argument("--foreground", action="store_true", help="stay attached (for systemd)")
    up.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for readiness")

    sub.add_parser("down", help="stop what `hami up` started")

    status = sub.add_parser("status", help="devices, allocations, free memory and cores")
    status.add_argument("--json", action="store_true")
    status.add_argument("--nats")

    top_cmd = sub.add_parser("top", help="who shares which GPU, refreshing (the web page's view)")
    top_cmd.add_argument("--url", help="telemetry's address (default: the running `hami up`'s)")
    top_cmd.add_argument("--interval", type=float, default=2.0, help="seconds between frames")
    top_cmd.add_argument("--once", action="store_true", help="print one frame and exit")

    run = sub.add_parser("run", help="run a command on shared devices with hard limits")
    run.add_argument("--gpus", default="1", help="number of devices (default 1)")
    run.add_argument("--gpumem", help="memory per device: MiB (3000), size (3g) or percent (50%%)")
    run.add_argument("--gpucores", help="compute per device in percent, 0-100 (100: exclusive)")
    run.add_argument("--gputype", action="append", help="only these models (substring, comma list)")
    run.add_argument("--nouse-gputype", action="append", help="never these models")
    run.add_argument("--gpu-uuid", action="append", help="only these device UUIDs")
    run.add_argument("--nouse-gpu-uuid", action="append", help="never these device UUIDs")
    run.add_argument("--priority", choices=("high", "low"), default="low")
    run.add_argument(
        "--wait",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="wait for capacity (default) or fail at once",
    )
    run.add_argument(
        "--lease-ttl",
        type=float,
        default=30.0,
        help="seconds after which a dead `hami run` loses its devices",
    )
    run.add_argument(
        "--leftovers",
        choices=LEFTOVER_POLICIES,
        default="kill",
        help="processes the job leaves when its main process exits: kill them (default) or "
        "wait for them; the devices are released only after",
    )
    run.add_argument(
        "--require-isolation",
        action="store_true",
        help="refuse to run without the isolation library (limits would not be enforced)",
    )
    run.add_argument("--nats")
    run.add_argument("command", nargs=argparse.REMAINDER, help="-- CMD ARGS...")
    return top


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    args.settings = load(CliSettings, [], prog="hami")  # the environment, read once
    if getattr(args, "command", None) and args.command[:1] == ["--"]:
        args.command = args.command[1:]
    try:
        if args.command_name == "up":
            code = cmd_up(args)
        elif args.command_name == "down":
            code = cmd_down(args)
        elif args.command_name == "status":
            code = asyncio.run(_status(args))
        elif args.command_name == "top":
            code = cmd_top(args)
        else:
            code = asyncio.run(_run(args))
    except HamiError as e:
        code = fail(f"hami {args.command_name}: {e}", exit_code(e))
    except KeyboardInterrupt:
        code = 130
    sys.exit(code)
