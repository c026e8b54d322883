"""End to end: `hami up` on simulated devices, real nats-server, real processes."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

JOB = Path(__file__).with_name("job.py")
HAMI = [sys.executable, "-m", "services.local"]


class Local:
    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.up_output = ""
        self.env = {**os.environ, "HAMI_STATE_DIR": str(state_dir)}
        self.env.pop("HAMI_NATS_URL", None)

    def hami(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*HAMI, *args], env=self.env, capture_output=True, text=True, timeout=timeout
        )

    def start_job(
        self, name: str, *flags: str, code: int = 0
    ) -> tuple[subprocess.Popen[str], Path, Path]:
        out, go = self.state_dir / f"{name}.json", self.state_dir / f"{name}.go"
        with (self.state_dir / f"{name}.err").open("w") as err:
            process = subprocess.Popen(
                [
                    *HAMI,
                    "run",
                    *flags,
                    "--",
                    sys.executable,
                    str(JOB),
                    str(out),
                    str(go),
                    str(code),
                ],
                env=self.env,
                stdout=subprocess.DEVNULL,
                stderr=err,
                text=True,
            )
        return process, out, go

    def stderr_of(self, name: str) -> str:
        return (self.state_dir / f"{name}.err").read_text()

    def record(self) -> dict:  # type: ignore[type-arg]
        return json.loads((self.state_dir / "local.json").read_text())

    def status(self) -> dict:  # type: ignore[type-arg]
        result = self.hami("status", "--json")
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)


def wait_for(predicate: Callable[[], object], timeout_s: float = 20.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or predicate}")
        time.sleep(0.05)


@pytest.fixture
def local(tmp_path: Path) -> Iterator[Local]:
    hami = Local(tmp_path / "state")
    up = hami.hami(
        "up",
        "--simulate",
        "1xH200",
        "--nats-port",
        "0",
        "--metrics-port",
        "0",
        "--split-count",
        "3",
    )
    assert up.returncode == 0, up.stderr + up.stdout
    assert "hami is up" in up.stdout
    hami.up_output = up.stdout
    yield hami
    down = hami.hami("down")
    assert down.returncode == 0, down.stderr
    assert not (hami.state_dir / "local.json").exists()


def test_two_jobs_share_a_gpu_and_a_third_waits(local: Local) -> None:
    one, out1, go1 = local.start_job("one", "--gpumem", "45%", "--gpucores", "30")
    two, out2, go2 = local.start_job("two", "--gpumem", "50g", "--gpucores", "40")
    wait_for(lambda: out1.exists() and out2.exists(), what="both jobs running")
    env1, env2 = json.loads(out1.read_text()), json.loads(out2.read_text())
    assert env1["CUDA_VISIBLE_DEVICES"] == env2["CUDA_VISIBLE_DEVICES"]  # one GPU, shared
    assert env1["CUDA_DEVICE_MEMORY_LIMIT_0"] == f"{143771 * 45 // 100}m"
    assert env2["CUDA_DEVICE_MEMORY_LIMIT_0"] == f"{50 * 1024}m"
    assert (env1["CUDA_DEVICE_SM_LIMIT"], env2["CUDA_DEVICE_SM_LIMIT"]) == ("30", "40")
    assert env1["CUDA_DEVICE_MEMORY_SHARED_CACHE"] != env2["CUDA_DEVICE_MEMORY_SHARED_CACHE"]
    [device] = local.status()["devices"]
    assert device["used_count"] == 2 and device["used_cores"] == 70

    metrics = urllib.request.urlopen(local.record()["metrics_url"], timeout=5).read().decode()
    assert "hami_gpu_memory_limit_bytes{" in metrics
    wait_for(
        lambda: (
            "hami_vgpu_memory_allocated_bytes{"
            in urllib.request.urlopen(local.record()["metrics_url"], timeout=5).read().decode()
        ),
        what="allocation gauges",
    )

    three, out3, go3 = local.start_job("three", "--gpumem", "45%", "--gpucores", "40")
    wait_for(lambda: "waiting for devices" in local.stderr_of("three"), what="third job waits")
    assert not out3.exists()
    go1.touch()
    assert one.wait(20) == 0
    wait_for(out3.exists, what="third job starts after the first ends")
    go2.touch()
    go3.touch()
    assert two.wait(20) == 0 and three.wait(20) == 0
    wait_for(lambda: not local.status()["allocations"], what="everything released")


def test_exit_code_and_signal_pass_through(local: Local) -> None:
    job, out, go = local.start_job("code", "--gpumem", "1g", code=7)
    wait_for(out.exists)
    go.touch()
    assert job.wait(20) == 7
    term, out, _ = local.start_job("term", "--gpumem", "1g")
    wait_for(out.exists)
    term.send_signal(signal.SIGTERM)  # forwarded to the job, which dies of it; so do we
    assert term.wait(20) == -signal.SIGTERM
    wait_for(lambda: not local.status()["allocations"], what="released after the signal")


def test_kill_9_of_the_job_releases(local: Local) -> None:
    job, out, _ = local.start_job("victim", "--gpumem", "1g")
    wait_for(out.exists)
    os.kill(int(json.loads(out.read_text())["pid"]), signal.SIGKILL)
    assert job.wait(20) == 128 + signal.SIGKILL
    wait_for(lambda: not local.status()["allocations"], what="released after kill -9 of the job")


def test_kill_9_of_hami_run_releases_by_lease_expiry(local: Local) -> None:
    runner, out, _ = local.start_job("orphan", "--gpumem", "1g", "--lease-ttl", "2")
    wait_for(out.exists)
    job_pid = int(json.loads(out.read_text())["pid"])
    assert len(local.status()["allocations"]) == 1
    runner.kill()
    runner.wait(10)
    wait_for(lambda: not _alive(job_pid), timeout_s=10, what="the job dies with hami run")
    wait_for(lambda: not local.status()["allocations"], timeout_s=10, what="lease expiry")


def test_allocator_killed_mid_way_keeps_allocations(local: Local) -> None:
    one, out1, go1 = local.start_job("one", "--gpumem", "10g", "--gpucores", "20")
    two, out2, go2 = local.start_job("two", "--gpumem", "20g", "--gpucores", "20")
    wait_for(lambda: out1.exists() and out2.exists())
    before = sorted(a["allocation_id"] for a in local.status()["allocations"])
    old_pid = local.record()["services"]["allocator"]
    os.kill(old_pid, signal.SIGKILL)
    wait_for(lambda: local.record()["services"]["allocator"] != old_pid, what="restart")

    def answers() -> bool:
        return local.hami("status", "--json").returncode == 0

    wait_for(answers, what="restarted allocator answers")
    status = local.status()
    assert sorted(a["allocation_id"] for a in status["allocations"]) == before
    [device] = status["devices"]
    assert (device["used_memory_mib"], device["used_cores"]) == (30 * 1024, 40)
    go1.touch()
    go2.touch()
    assert one.wait(20) == 0 and two.wait(20) == 0
    wait_for(lambda: not local.status()["allocations"], what="released after restart")


def test_bad_input_exits_2_and_allocates_nothing(local: Local) -> None:
    for flags, needle in (
        (["--gpumem", "-1"], "--gpumem"),
        (["--gpumem", "3x"], "--gpumem"),
        (["--gpumem", "0"], "--gpumem"),
        (["--gpumem", "101%"], "1% and 100%"),
        (["--gpucores", "150"], "0 to 100"),
        (["--gpus", "2"], "never fit"),
        (["--gputype", "A100"], "type"),
        (["--gpu-uuid", "GPU-nope"], "UUID"),
        (["--gpumem", "200g"], "never fit"),
    ):
        result = local.hami("run", *flags, "--", "true")
        assert result.returncode == 2, (flags, result.stderr)
        assert needle in result.stderr and "Traceback" not in result.stderr, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
    assert local.status()["allocations"] == []


def test_no_wait_fails_at_once_with_the_reason(local: Local) -> None:
    job, out, go = local.start_job("big", "--gpumem", "90%")
    wait_for(out.exists)
    result = local.hami("run", "--no-wait", "--gpumem", "20%", "--", "true")
    assert result.returncode == 75 and "memory" in result.stderr
    go.touch()
    assert job.wait(20) == 0


def test_up_is_idempotent_and_busy_port_is_one_line(local: Local, tmp_path: Path) -> None:
    again = local.hami("up")
    assert again.returncode == 0 and "already running" in again.stdout
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        other = Local(tmp_path / "other")
        result = other.hami("up", "--simulate", "1xT4", "--nats-port", str(port))
    assert result.returncode == 69
    assert f"port {port}" in result.stderr and "--nats-port" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_a_mig_gpu_is_refused_for_local_jobs_in_one_line(tmp_path: Path) -> None:
    result = Local(tmp_path / "mig").hami("up", "--simulate", "1xmig:H200", "--nats-port", "0")
    assert result.returncode == 2, result.stderr
    assert "interception" in result.stderr and "mig mode" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_not_running_is_a_clear_error(tmp_path: Path) -> None:
    result = Local(tmp_path / "none").hami("run", "--", "true")
    assert result.returncode == 69 and "hami up" in result.stderr
    assert "Traceback" not in result.stderr


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead for our purpose
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def test_two_ups_at_once_on_one_state_dir_start_one_supervisor(tmp_path: Path) -> None:
    hami = Local(tmp_path / "race")
    argv = [*HAMI, "up", "--simulate", "1xH200", "--nats-port", "0", "--metrics-port", "0"]
    racers = [
        subprocess.Popen(
            argv, env=hami.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(3)
    ]
    results = [(p.wait(90), *p.communicate()) for p in racers]
    try:
        started = [r for r in results if r[0] == 0 and "hami is up" in r[1]]
        assert len(started) == 1, results
        for code, out, err in results:
            assert (code == 0 and ("hami is up" in out or "already running" in out)) or (
                code == 69 and "another `hami up`" in err and len(err.strip().splitlines()) == 1
            ), (code, out, err)
        status = hami.status()
        assert len(status["devices"]) == 1 and len(status["nodes"]) == 1
        supervisors = [
            pid
            for pid in os.listdir("/proc")
            if pid.isdigit()
            and str(hami.state_dir).encode() in Path(f"/proc/{pid}/cmdline").read_bytes()
            and b"services.local.supervisor" in Path(f"/proc/{pid}/cmdline").read_bytes()
        ]
        assert len(supervisors) == 1, supervisors
        assert hami.state_dir.stat().st_mode & 0o777 == 0o700
        for path in hami.state_dir.rglob("*"):
            if path.is_file() and not path.is_symlink():
                assert path.stat().st_mode & 0o077 == 0, path
    finally:
        assert hami.hami("down").returncode == 0


def test_an_unusable_state_dir_is_one_line(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    readonly = tmp_path / "readonly"
    readonly.mkdir()
    mounted = os.geteuid() == 0 and (
        subprocess.run(["mount", "--bind", "-o", "ro", str(readonly), str(readonly)]).returncode
        == 0
    )
    if not mounted:
        readonly.chmod(0o500)
    try:
        for state in (blocker / "state", readonly):
            result = Local(state).hami("up", "--simulate", "1xH200", "--nats-port", "0")
            assert result.returncode == 69, result.stderr
            assert "state directory" in result.stderr and "Traceback" not in result.stderr
            assert len(result.stderr.strip().splitlines()) == 1
    finally:
        if mounted:
            subprocess.run(["umount", str(readonly)], check=True)


def test_a_job_cannot_outlive_its_share(local: Local) -> None:
    pidfile = local.state_dir / "background.pid"
    result = local.hami("run", "--", "sh", "-c", f"sleep 40 & echo $! > {pidfile}")
    assert result.returncode == 0, result.stderr
    assert "ended 1 process(es) the job left running" in result.stderr
    background = int(pidfile.read_text())
    wait_for(lambda: not _alive(background), 5, "the background process to be ended")
    assert local.status()["allocations"] == []


def test_leftovers_wait_keeps_the_share_until_the_last_process_exits(local: Local) -> None:
    marker = local.state_dir / "done"
    started = time.monotonic()
    job = subprocess.Popen(
        [*HAMI, "run", "--leftovers", "wait", "--", "sh", "-c", f"(sleep 3; touch {marker}) &"],
        env=local.env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_for(lambda: local.status()["allocations"], 10, "the allocation")
    time.sleep(1)
    assert job.poll() is None and local.status()["allocations"]  # still held for the leftover
    _, err = job.communicate(timeout=30)
    assert job.returncode == 0 and marker.exists(), err
    assert time.monotonic() - started >= 3
    # The subshell, and its sleep once it has forked it: the count depends on that moment.
    assert re.search(r"waited for [12] process\(es\)", err), err
    assert local.status()["allocations"] == []


def test_local_nats_knows_each_service_and_refuses_everyone_else(local: Local) -> None:
    import asyncio
    import gc

    from shared.errors import Unavailable
    from shared.natsauth import load_credentials
    from shared.natsutil import connect

    url = local.record()["nats_url"]
    creds = local.state_dir / "credentials"

    async def can_write(user: str | None, subject: str) -> bool:
        credentials = None if user is None else load_credentials(creds / f"{user}.json")
        nc = await connect(url, "probe", reconnect=False, credentials=credentials)
        try:
            await nc.request(subject, b"{}", timeout=1.5)  # a KV put waits for the store's ack
            return True
        except Exception:
            return False
        finally:
            await nc.close()

    async def refused_anonymously() -> bool:
        try:
            nc = await connect(url, "anonymous", reconnect=False)
        except Unavailable:
            return True
        await nc.close()
        return False

    async def probe() -> None:
        assert await refused_anonymously()
        gc.collect()  # a refused client must not leave its socket open (a ResourceWarning)
        # A job client may not write the ledger, nor announce a node.
        assert not await can_write("client", "$KV.hami_allocations.forged")
        assert not await can_write("client", "$KV.hami_nodes.fake-node")
        # A node agent announces its own node only, and never writes allocations.
        assert not await can_write("nodeagent", "$KV.hami_allocations.forged")
        assert not await can_write("nodeagent", "$KV.hami_nodes.fake-node")
        assert not await can_write("telemetry", "$KV.hami_allocations.forged")
        assert await can_write("client", "hami.v1.alloc.status")  # the API is open to it

    asyncio.run(probe())
    keys = [a["allocation_id"] for a in local.status()["allocations"]]
    assert keys == [] and "forged" not in json.dumps(local.status())


def test_up_says_its_devices_are_simulated_and_where_the_library_is(local: Local) -> None:
    assert "devices: 1 SIMULATED (NVIDIA H200" in local.up_output, local.up_output
    assert "isolation library: " in local.up_output


def test_run_says_when_the_library_is_missing_and_can_refuse(local: Local) -> None:
    local.env["HAMI_LIBVGPU"] = ""  # as if it had never been built
    plain = local.hami("run", "--gpumem", "1g", "--", "true")
    assert plain.returncode == 0, plain.stderr
    assert "libvgpu.so is missing: limits are not enforced" in plain.stderr
    strict = local.hami("run", "--require-isolation", "--gpumem", "1g", "--", "true")
    assert strict.returncode != 0
    assert strict.stderr.count("\n") == 1 and "libvgpu.so is missing" in strict.stderr
    assert local.status()["allocations"] == []  # refused before anything was allocated


def test_the_job_gets_a_read_only_limits_file(local: Local) -> None:
    show = 'cat "$HAMI_LIMITS_FILE"; stat -c %a "$HAMI_LIMITS_FILE"'
    result = local.hami("run", "--gpumem", "3g", "--gpucores", "30", "--", "sh", "-c", show)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "CUDA_DEVICE_MEMORY_LIMIT_0=3072m" in lines and "CUDA_DEVICE_SM_LIMIT=30" in lines
    assert lines[-1] == "444"
    assert not list((local.state_dir / "containers").glob("*.limits"))  # gone with the job
