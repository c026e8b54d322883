"""What an operator sees of `hami up --simulate` with two jobs sharing GPUs: a real Prometheus
scraping telemetry (per-job memory by PromQL, and the series gone once the job ends), and the
web page in headless Chromium (both shares on the right GPU, from the DOM and a screenshot)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.observability import browser
from tests.e2e.observability.prometheus import Prometheus, start_prometheus
from tests.e2e.test_local_mode import HAMI, Local, wait_for

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
NATIVE = REPO / "native" / "build"
GIB = 1 << 30


@pytest.fixture
def up(tmp_path: Path) -> Iterator[Local]:
    if not (NATIVE / "test_native").exists():
        pytest.fail("native/build is not built (make -C native): the jobs run over its test driver")
    hami = Local(tmp_path / "state")
    started = hami.hami("up", "--simulate", "2xH200", "--nats-port", "0", "--metrics-port", "0")
    assert started.returncode == 0, started.stderr + started.stdout
    assert "web page: http://127.0.0.1:" in started.stdout
    yield hami
    assert hami.hami("down").returncode == 0


def hold(local: Local, name: str, memory: str, cores: str, bytes_: int) -> subprocess.Popen[str]:
    """A job that holds ``bytes_`` of device memory through the isolation library (over the
    test driver) until the file <state>/<name>.go exists."""
    with (local.state_dir / f"{name}.err").open("w") as err:
        return subprocess.Popen(
            [
                *HAMI,
                "run",
                "--gpumem",
                memory,
                "--gpucores",
                cores,
                "--",
                "env",
                f"LD_LIBRARY_PATH={NATIVE}",
                str(NATIVE / "test_native"),
                "hold",
                str(bytes_),
                str(local.state_dir / f"{name}.go"),
            ],
            env=local.env,
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
        )


def allocation_of(local: Local, name: str) -> dict:  # type: ignore[type-arg]
    for record in local.status()["allocations"]:
        if f"{name}.go" in record["holder"]["command"]:
            return dict(record)
    raise AssertionError(f"no allocation for {name}")


@pytest.fixture
def two_jobs(up: Local) -> Iterator[tuple[Local, dict, dict]]:  # type: ignore[type-arg]
    one = hold(up, "one", "40g", "30", GIB)
    two = hold(up, "two", "20g", "50", GIB // 2)
    for job in (one, two):
        assert job.stdout is not None and job.stdout.readline().startswith("held"), up.stderr_of(
            "one"
        ) + up.stderr_of("two")
    yield up, allocation_of(up, "one"), allocation_of(up, "two")
    for name, job in (("one", one), ("two", two)):
        (up.state_dir / f"{name}.go").touch()
        job.communicate(timeout=30)


def test_prometheus_reads_each_jobs_memory_and_forgets_it_when_it_ends(
    two_jobs: tuple[Local, dict, dict],  # type: ignore[type-arg]
    tmp_path: Path,
) -> None:
    local, one, two = two_jobs
    target = local.record()["metrics_url"].split("//")[1].split("/")[0]
    prometheus: Prometheus = start_prometheus(tmp_path / "prometheus", [target])
    try:

        def used(allocation: str) -> list[float]:
            query = f'hami_vgpu_memory_used_bytes{{pod="{allocation}",zone="vGPU"}}'
            return [float(r["value"][1]) for r in prometheus.query(query)]

        wait_for(lambda: used(one["allocation_id"]) == [GIB], timeout_s=30, what="job one")
        assert used(two["allocation_id"]) == [GIB // 2]
        [limit] = prometheus.query(f'hami_vgpu_memory_limit_bytes{{pod="{one["allocation_id"]}"}}')
        assert float(limit["value"][1]) == 40 * GIB
        assert limit["metric"]["device_uuid"] == one["containers"][0][0]["uuid"]
        [granted] = prometheus.query('sum(hami_vgpu_memory_allocated_bytes{zone="vGPU"})')
        assert float(granted["value"][1]) == 60 * GIB
        wait_for(
            lambda: prometheus.query(
                f'hami_container_last_kernel_elapsed_seconds{{pod="{one["allocation_id"]}"}}'
            ),
            timeout_s=30,
            what="the job's last kernel",
        )
        (local.state_dir / "one.go").touch()  # job one ends: its series goes with it
        wait_for(lambda: not used(one["allocation_id"]), timeout_s=30, what="no stale series")
        assert used(two["allocation_id"]) == [GIB // 2]
    finally:
        prometheus.stop()


def test_the_web_page_draws_both_shares_on_their_gpus(
    two_jobs: tuple[Local, dict, dict],  # type: ignore[type-arg]
) -> None:
    local, one, two = two_jobs
    page = local.record()["metrics_url"].removesuffix("metrics")
    gpu_of = {a["allocation_id"]: a["containers"][0][0]["uuid"] for a in (one, two)}

    def drawn() -> dict[str, set[str]]:
        return browser.shares_by_gpu(browser.dom(page))

    wait_for(lambda: all(a in drawn().get(g, set()) for a, g in gpu_of.items()), timeout_s=30)
    shares = drawn()
    for allocation, gpu in gpu_of.items():
        assert allocation in shares[gpu]
        assert all(allocation not in s for g, s in shares.items() if g != gpu)
    html = browser.dom(page)
    assert 'id="job-count">2<' in html
    shot = browser.screenshot(page, "webui-two-jobs.png")
    assert shot.stat().st_size > 10_000
    # The screenshot shows the shares: the two jobs' colours are on it.
    png = subprocess.run(
        [sys.executable, "-c", PIXELS, str(shot)], capture_output=True, text=True, check=True
    )
    colours = set(json.loads(png.stdout))
    assert {"1f6feb", "a371f7"} <= colours, colours


PIXELS = """
import json, sys, zlib, struct
data = open(sys.argv[1], "rb").read()
assert data[:8] == b"\\x89PNG\\r\\n\\x1a\\n"
pos, idat, width = 8, b"", 0
while pos < len(data):
    length, kind = struct.unpack(">I4s", data[pos:pos + 8])
    body = data[pos + 8:pos + 8 + length]
    if kind == b"IHDR":
        width, height, depth, colour = struct.unpack(">IIBB", body[:10])
        channels = {2: 3, 6: 4}[colour]
    if kind == b"IDAT":
        idat += body
    pos += 12 + length
raw = zlib.decompress(idat)
stride = width * channels + 1
seen, prev = set(), bytearray(stride - 1)
for y in range(len(raw) // stride):
    kind, line = raw[y * stride], bytearray(raw[y * stride + 1:(y + 1) * stride])
    for i in range(len(line)):
        a = line[i - channels] if i >= channels else 0
        b, c = prev[i], prev[i - channels] if i >= channels else 0
        if kind == 1: line[i] = (line[i] + a) & 255
        elif kind == 2: line[i] = (line[i] + b) & 255
        elif kind == 3: line[i] = (line[i] + (a + b) // 2) & 255
        elif kind == 4:
            p = a + b - c; pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
            line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
    prev = line
    for x in range(0, len(line), channels * 4):
        seen.add(bytes(line[x:x + 3]).hex())
print(json.dumps(sorted(seen)))
"""


def test_hami_top_draws_the_same_shares_in_the_terminal(
    two_jobs: tuple[Local, dict, dict],  # type: ignore[type-arg]
) -> None:
    local, _, _ = two_jobs
    wait_for(
        lambda: "1.0G" in local.hami("top", "--once").stdout, timeout_s=30, what="usage in top"
    )
    frame = local.hami("top", "--once").stdout
    gpu_lines = [line for line in frame.splitlines() if line.lstrip().startswith("GPU ")]
    assert len(gpu_lines) == 2 and all("jobs 1/10" in line for line in gpu_lines), frame
    rows = [line for line in frame.splitlines() if line.startswith("    ")]
    assert len(rows) == 2 and "waiting: 0" in frame, frame
    assert any("mem   40.0G" in r for r in rows) and any("mem   20.0G" in r for r in rows)
    bad = local.hami("top", "--once", "--url", "http://127.0.0.1:9")
    assert bad.returncode != 0 and "does not answer" in bad.stderr
