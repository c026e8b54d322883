"""libvgpu.so preloaded into C and Python programs over the test driver (no GPU needed)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

MB = 1 << 20


def preloaded(build: Path, env: dict[str, str]) -> dict[str, str]:
    """The library preloaded over the test driver, none of the caller's limits or settings."""
    inherited = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("CUDA_", "GPU_", "FAKE_", "LD_PRELOAD"))
    }
    preload = {"LD_LIBRARY_PATH": str(build), "LD_PRELOAD": str(build / "libvgpu.so")}
    return {**inherited, **preload, **env}


def run(
    build: Path, *args: str, timeout: float = 60, **env: str
) -> subprocess.CompletedProcess[str]:
    environment = preloaded(build, env)
    return subprocess.run(
        [str(build / "test_native"), *args],
        env=environment,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def spawn(build: Path, *args: str, **env: str) -> subprocess.Popen[str]:
    environment = preloaded(build, env)
    return subprocess.Popen(
        [str(build / "test_native"), *args],
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def ok(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 0 and result.stdout.strip().endswith("ok"), result.stderr


def test_pure_units(native_build: Path) -> None:
    result = subprocess.run(
        [str(native_build / "test_units")], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0 and "test_units: ok" in result.stdout, result.stderr


def test_every_allocation_path_and_route_is_limited(native_build: Path) -> None:
    ok(run(native_build, "paths", CUDA_DEVICE_MEMORY_LIMIT_0="64m"))


def test_the_limit_binds_without_the_library_it_does_not(native_build: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
    env.update(LD_LIBRARY_PATH=str(native_build), CUDA_DEVICE_MEMORY_LIMIT_0="64m")
    plain = subprocess.run(
        [str(native_build / "test_native"), "paths"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert plain.returncode != 0  # the scenario's checks really depend on the library


def test_memory_info_is_virtualised(native_build: Path) -> None:
    ok(
        run(
            native_build,
            "meminfo",
            CUDA_DEVICE_MEMORY_LIMIT_0="64m",
            CUDA_VISIBLE_DEVICES="GPU-fake-0,GPU-fake-1",
        )
    )


def test_oversubscription_falls_back_to_unified_memory(native_build: Path) -> None:
    ok(run(native_build, "oversub", CUDA_DEVICE_MEMORY_LIMIT_0="64m", CUDA_OVERSUBSCRIBE="true"))


@pytest.mark.parametrize("value", ["lots", "-5m", "3x"])
def test_malformed_memory_limit_fails_closed(native_build: Path, value: str) -> None:
    result = run(native_build, "refused", CUDA_DEVICE_MEMORY_LIMIT_0=value, LIBCUDA_LOG_LEVEL="1")
    ok(result)
    assert result.stderr.count("malformed") == 1  # one clear line, not one per call


def test_malformed_sm_limit_refuses_launches(native_build: Path) -> None:
    ok(run(native_build, "launch-refused", CUDA_DEVICE_SM_LIMIT="150"))


def test_quiet_by_default(native_build: Path) -> None:
    result = run(native_build, "paths", CUDA_DEVICE_MEMORY_LIMIT_0="64m")
    assert result.stderr == ""


def test_processes_allocating_together_never_exceed_the_limit(
    native_build: Path, tmp_path: Path
) -> None:
    cache = tmp_path / "vgpu.cache"
    procs = [
        spawn(
            native_build,
            "grab",
            str(8 * MB),
            "20",
            CUDA_DEVICE_MEMORY_LIMIT_0="64m",
            CUDA_DEVICE_MEMORY_SHARED_CACHE=str(cache),
        )
        for _ in range(8)
    ]
    got = []
    for p in procs:
        out, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
        got.append(int(out.split("got ")[1].split()[0]))
    assert sum(got) == 8  # 64 MiB / 8 MiB: every block the budget holds, and not one more


def test_kill_9_inside_the_critical_section_does_not_block_others(
    native_build: Path, tmp_path: Path
) -> None:
    cache = tmp_path / "vgpu.cache"
    dead = subprocess.run(
        [str(native_build / "test_units"), "lock-and-die", str(cache)],
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )
    assert dead.returncode == -signal.SIGKILL and "locked" in dead.stdout
    started = time.monotonic()
    result = run(
        native_build,
        "grab",
        str(8 * MB),
        "8",
        timeout=20,
        CUDA_DEVICE_MEMORY_LIMIT_0="64m",
        CUDA_DEVICE_MEMORY_SHARED_CACHE=str(cache),
    )
    assert result.returncode == 0 and "got 8" in result.stdout, result.stderr
    assert time.monotonic() - started < 15
    used = subprocess.run(
        [str(native_build / "test_units"), "used", str(cache), "0"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert used.stdout.strip() == "0"  # the dead holder's bytes were reclaimed; the grabber left


def test_a_killed_process_gives_its_memory_back(native_build: Path, tmp_path: Path) -> None:
    cache = tmp_path / "vgpu.cache"
    env = {"CUDA_DEVICE_MEMORY_LIMIT_0": "64m", "CUDA_DEVICE_MEMORY_SHARED_CACHE": str(cache)}
    holder = spawn(native_build, "grab", str(8 * MB), "8", **env)
    assert holder.stdout is not None
    assert holder.stdout.readline().strip() == "got 8"
    holder.kill()
    holder.communicate()
    result = run(native_build, "grab", str(8 * MB), "8", **env)
    assert "got 8" in result.stdout, result.stderr


def test_two_processes_share_one_compute_budget(native_build: Path, tmp_path: Path) -> None:
    env = {"CUDA_DEVICE_SM_LIMIT": "50", "CUDA_DEVICE_MEMORY_SHARED_CACHE": str(tmp_path / "c")}
    procs = [spawn(native_build, "throttle", "2", **env) for _ in range(2)]
    shares = []
    for p in procs:
        out, err = p.communicate(timeout=30)
        assert p.returncode == 0, err
        shares.append(float(out.split("share ")[1].split()[0]))
    # Each fake process has its own simulated GPU; together they may use half of one.
    assert 0.40 <= sum(shares) <= 0.60, shares


def test_compute_share_tracks_the_limit(native_build: Path) -> None:
    result = run(native_build, "throttle", "2", CUDA_DEVICE_SM_LIMIT="50")
    share = float(result.stdout.split("share ")[1].split()[0])
    assert 0.42 <= share <= 0.58, result.stdout


def test_high_priority_and_disabled_policy_are_not_throttled(native_build: Path) -> None:
    for env in ({"CUDA_TASK_PRIORITY": "0"}, {"GPU_CORE_UTILIZATION_POLICY": "disable"}):
        result = run(native_build, "throttle", "1", CUDA_DEVICE_SM_LIMIT="25", **env)
        assert float(result.stdout.split("share ")[1].split()[0]) > 0.9, (env, result.stdout)


PYTHON_PROGRAM = """
import ctypes, sys
cuda = ctypes.CDLL("libcuda.so.1")
ptr = ctypes.c_uint64()
first = cuda.cuMemAlloc_v2(ctypes.byref(ptr), 48 << 20)
second = cuda.cuMemAlloc_v2(ctypes.byref(ctypes.c_uint64()), 32 << 20)
free, total = ctypes.c_size_t(), ctypes.c_size_t()
cuda.cuMemGetInfo_v2(ctypes.byref(free), ctypes.byref(total))
print(first, second, free.value >> 20, total.value >> 20)
"""


def test_python_ctypes_program_is_limited(native_build: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CUDA_")}
    env.update(
        LD_LIBRARY_PATH=str(native_build),
        LD_PRELOAD=str(native_build / "libvgpu.so"),
        CUDA_DEVICE_MEMORY_LIMIT_0="64m",
    )
    result = subprocess.run(
        [sys.executable, "-c", PYTHON_PROGRAM],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.stdout.split() == ["0", "2", "16", "64"], result.stderr


def test_only_hooked_symbols_are_exported(native_build: Path) -> None:
    from tests.native.test_hook_coverage import exported

    names = exported(native_build, "TtWw")
    assert names and all(n.startswith(("cu", "nvml")) or n == "dlsym" for n in names), names


def test_hami_finds_the_built_library(native_build: Path) -> None:
    from shared.native import find_libvgpu

    assert find_libvgpu() == native_build / "libvgpu.so"


def test_the_region_file_is_0600_whatever_the_umask(native_build: Path, tmp_path: Path) -> None:
    cache = tmp_path / "vgpu.cache"
    env = preloaded(
        native_build,
        {"CUDA_DEVICE_MEMORY_LIMIT_0": "64m", "CUDA_DEVICE_MEMORY_SHARED_CACHE": str(cache)},
    )
    subprocess.run(
        ["sh", "-c", f"umask 000; exec {native_build / 'test_native'} grab {MB} 1"],
        env=env,
        capture_output=True,
        check=True,
        timeout=30,
    )
    assert cache.stat().st_mode & 0o777 == 0o600


def test_a_region_of_another_layout_is_left_as_it_is(native_build: Path, tmp_path: Path) -> None:
    cache = tmp_path / "vgpu.cache"
    other = b"HAMI" + bytes(1000)
    cache.write_bytes(other)
    result = run(
        native_build,
        "grab",
        str(MB),
        "1",
        CUDA_DEVICE_MEMORY_LIMIT_0="64m",
        CUDA_DEVICE_MEMORY_SHARED_CACHE=str(cache),
    )
    assert "got 0" in result.stdout  # no shared accounting: limited memory is refused
    assert cache.read_bytes() == other


def test_without_its_shared_region_the_compute_share_still_holds(
    native_build: Path, tmp_path: Path
) -> None:
    unreachable = tmp_path / "missing-dir" / "vgpu.cache"
    result = run(
        native_build,
        "throttle",
        "2",
        CUDA_DEVICE_SM_LIMIT="50",
        CUDA_DEVICE_MEMORY_SHARED_CACHE=str(unreachable),
    )
    share = float(result.stdout.split("share ")[1].split()[0])
    assert 0.42 <= share <= 0.58, result.stdout


@pytest.mark.parametrize("limit", ["64m", "0"])
def test_legacy_entry_points_and_wrapping_sizes_are_refused(native_build: Path, limit: str) -> None:
    ok(run(native_build, "legacy", CUDA_DEVICE_MEMORY_LIMIT_0=limit))


@pytest.mark.parametrize("pattern", ["throttle-streams", "throttle-threads"])
def test_the_share_holds_over_many_streams_and_a_thread_per_launch(
    native_build: Path, pattern: str
) -> None:
    result = run(native_build, pattern, "2", CUDA_DEVICE_SM_LIMIT="50")
    fields = result.stdout.split()
    share = float(fields[fields.index("share") + 1])
    events = int(fields[fields.index("events") + 1])
    assert 0.42 <= share <= 0.58, result.stdout + result.stderr
    assert events <= 2 * 256 + 1, result.stdout  # no thread leaves its events behind


def test_vmm_memory_stays_charged_until_its_last_mapping_goes(
    native_build: Path, tmp_path: Path
) -> None:
    ok(
        run(
            native_build,
            "vmm",
            CUDA_DEVICE_MEMORY_LIMIT_0="64m",
            CUDA_DEVICE_MEMORY_SHARED_CACHE=str(tmp_path / "vgpu.cache"),
        )
    )


SHARED_LIMIT = {"CUDA_DEVICE_MEMORY_LIMIT": "64m"}


@pytest.mark.parametrize(
    ("scenario", "extra"),
    [
        ("free-race", {"FAKE_FREE_YIELD": "1"}),
        ("pools", {}),
        ("pool-chunks", {"FAKE_POOL_CHUNK_MB": "128"}),
        ("graphs", {}),
        ("ctx-limits", {}),
        ("mipmaps", {}),
        ("oversub-routes", {"CUDA_OVERSUBSCRIBE": "true"}),
        ("context-reserve", {"HAMI_CONTEXT_RESERVE": "8m"}),
    ],
)
def test_every_route_to_device_memory_is_charged(
    native_build: Path, tmp_path: Path, scenario: str, extra: dict[str, str]
) -> None:
    """Each scenario fails on a library that lets its route past the limit: frees racing
    address reuse, pool retention and chunked growth, graph allocation nodes (direct, child,
    conditional), context limits, mipmaps, oversubscribed pitched and stream-ordered memory, the
    context reserve charged per thread."""
    env = {**SHARED_LIMIT, "CUDA_DEVICE_MEMORY_SHARED_CACHE": str(tmp_path / "c"), **extra}
    ok(run(native_build, scenario, **env))


def test_a_process_without_the_environment_is_bound_by_the_region(
    native_build: Path, tmp_path: Path
) -> None:
    cache = tmp_path / "vgpu.cache"
    holder = spawn(
        native_build,
        "grab",
        str(8 * MB),
        "4",
        CUDA_DEVICE_MEMORY_LIMIT_0="64m",
        CUDA_DEVICE_SM_LIMIT="30",
        CUDA_DEVICE_MEMORY_SHARED_CACHE=str(cache),
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == "got 4"
    # Same region, no limits of its own (an `env -i` child, a shell that unset them).
    unset = run(native_build, "grab", str(8 * MB), "8", CUDA_DEVICE_MEMORY_SHARED_CACHE=str(cache))
    holder.communicate(timeout=30)
    assert "got 4" in unset.stdout, unset.stderr  # 64 MiB - 32 held: four more, not eight
    throttled = run(native_build, "throttle", "1", CUDA_DEVICE_MEMORY_SHARED_CACHE=str(cache))
    share = float(throttled.stdout.split("share ")[1].split()[0])
    assert share < 0.4, throttled.stdout  # the region's 30% binds it too


def test_free_memory_is_right_at_the_next_query_after_kill_9(
    native_build: Path, tmp_path: Path
) -> None:
    env = {
        "CUDA_DEVICE_MEMORY_LIMIT_0": "64m",
        "CUDA_DEVICE_MEMORY_SHARED_CACHE": str(tmp_path / "c"),
    }
    holder = spawn(native_build, "grab", str(8 * MB), "8", **env)
    assert holder.stdout is not None and holder.stdout.readline().strip() == "got 8"
    holder.kill()
    holder.communicate()
    result = run(native_build, "free", **env)  # a query, no allocation hitting the limit
    assert "free 64" in result.stdout, result.stdout + result.stderr


SHARE_PATTERNS = [
    ("streams", "1"),
    ("streams", "2"),
    ("streams", "8"),
    ("threads", "1"),
    ("threads", "16"),
    ("ptds", "4"),
    ("graphs", "2"),
    ("legacy", "1"),
]


@pytest.mark.parametrize("limit", [25, 50, 75])
@pytest.mark.parametrize(("pattern", "count"), SHARE_PATTERNS)
def test_the_compute_share_holds_within_two_points_whatever_the_launch_pattern(
    native_build: Path, limit: int, pattern: str, count: str
) -> None:
    """1, 2 and 8 streams, 1 and 16 threads, the per-thread default stream, graphs of 8
    kernels, and the legacy entry points (cuLaunch, cuLaunchGrid, cuLaunchGridAsync,
    cuLaunchCooperativeKernelMultiDevice): the device time used stays within +-2 points of the
    limit. Never above it, in any run; below it, a second run may make up the shortfall: the
    launching threads share the machine's cores with whatever else runs (a CI run's control
    plane, benchmarks), and a thread that is not scheduled launches nothing, which reads as
    a share under the limit that no limiter could prevent (seen once in a CI run: 0.225 of
    0.25, 24 of 24 alone after). Each run prints how long its launching threads waited for a
    core ("runqueue"), so a failure says whether the host starved them. 16 threads once came
    out 3 points short in every run of a CI job: then the test driver woke every blocked
    launcher at each kernel, and its own host time starved the threads it measures; one
    launcher at a time now waits for room in its queue."""
    outputs, shares = [], []
    for _ in range(2):
        result = run(
            native_build,
            "share",
            pattern,
            count,
            "1.5",
            CUDA_DEVICE_SM_LIMIT=str(limit),
            FAKE_GRAPH_KERNELS="8",
        )
        outputs.append(result.stdout + result.stderr)
        shares.append(float(result.stdout.split("share ")[1].split()[0]))
        assert shares[-1] <= limit / 100 + 0.02, outputs[-1]
        if shares[-1] >= limit / 100 - 0.02:
            break
    assert max(shares) >= limit / 100 - 0.02, "\n".join(outputs)


def _share_and_launches(result: subprocess.CompletedProcess[str]) -> tuple[float, int]:
    fields = result.stdout.split()
    assert result.returncode == 0, result.stdout + result.stderr
    return float(fields[fields.index("share") + 1]), int(fields[fields.index("launches") + 1])


@pytest.mark.parametrize("gap_us", ["2000", "5000"])
def test_a_sparse_job_under_its_limit_keeps_its_pace(native_build: Path, gap_us: str) -> None:
    """One 100 us kernel every 2 or 5 ms uses 2-5% of the device: at a limit of 10 it must not
    wait. The idle time between its launches is not work (a library that counted it had this
    job at 0.3-0.7% of the device, a seventh of its pace)."""
    free = _share_and_launches(run(native_build, "sparse", gap_us, "1.5"))
    limited = _share_and_launches(
        run(native_build, "sparse", gap_us, "1.5", CUDA_DEVICE_SM_LIMIT="10")
    )
    assert free[0] < 0.08, free  # the premise: under the limit
    assert limited[1] >= 0.85 * free[1], (free, limited)


def test_a_destroyed_stream_is_never_used_again_and_does_not_stall_the_job(
    native_build: Path,
) -> None:
    """A stream whose last launch no marker covers is destroyed, then a sparse job runs on the
    default stream at limit 10. Without cuStreamDestroy hooked the sampler kept the dead handle:
    it recorded events on it and queried it (a driver may have given it to a new stream), and
    the chain never restarted, which held the job to 5 launches in a second."""
    free = run(native_build, "stream-gone", "2000", "1")
    limited = run(native_build, "stream-gone", "2000", "1", CUDA_DEVICE_SM_LIMIT="10")
    assert "dead 0" in limited.stdout, limited.stdout
    assert _share_and_launches(limited)[1] >= 0.85 * _share_and_launches(free)[1], (
        free.stdout,
        limited.stdout,
    )


@pytest.mark.parametrize(("pattern", "args"), [("sparse", ["500"]), ("bursts", ["20", "8000"])])
def test_a_job_that_idles_between_launches_gets_its_limit(
    native_build: Path, pattern: str, args: list[str]
) -> None:
    """A kernel every 0.6 ms (0.15 of the device unthrottled), or bursts of 20 kernels, a
    synchronisation and 8 ms idle (0.19): at a limit of 10 either gets 0.10, not the 0.02
    that counting the idle time as work gave."""
    free, _ = _share_and_launches(run(native_build, pattern, *args, "1.5"))
    limited, _ = _share_and_launches(
        run(native_build, pattern, *args, "1.5", CUDA_DEVICE_SM_LIMIT="10")
    )
    assert free > 0.12, free  # the premise: over the limit unthrottled
    assert 0.08 <= limited <= 0.12, (free, limited)


def test_stream_capture_is_never_invalidated_and_the_graph_is_throttled(
    native_build: Path,
) -> None:
    result = run(native_build, "capture", "1.5", CUDA_DEVICE_SM_LIMIT="50", FAKE_GRAPH_KERNELS="10")
    ok(result)
    share = float(result.stdout.split("share ")[1].split()[0])
    assert abs(share - 0.5) <= 0.02, result.stdout


def _can_unshare_pid() -> bool:
    try:
        probe = subprocess.run(
            ["unshare", "--pid", "--fork", "--mount-proc", "true"],
            capture_output=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return probe.returncode == 0


@pytest.mark.skipif(not _can_unshare_pid(), reason="needs unshare --pid (root)")
def test_a_holder_in_another_pid_namespace_is_not_mistaken_for_dead(
    native_build: Path, tmp_path: Path
) -> None:
    """The holder is pid 1 in its own namespace; on this side pid 1 is init with another start
    time. Its slot must still count as alive (the slot's lock says so), so its 32 MiB stay
    charged; and once it is gone, they are free at once."""
    env = preloaded(
        native_build,
        {
            "CUDA_DEVICE_MEMORY_LIMIT_0": "64m",
            "CUDA_DEVICE_MEMORY_SHARED_CACHE": str(tmp_path / "c"),
        },
    )
    holder = subprocess.Popen(
        [
            "unshare",
            "--pid",
            "--fork",
            "--mount-proc",
            str(native_build / "test_native"),
            "grab",
            str(8 * MB),
            "4",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == "got 4"
    other = run(
        native_build,
        "grab",
        str(8 * MB),
        "8",
        **{k: env[k] for k in ("CUDA_DEVICE_MEMORY_LIMIT_0", "CUDA_DEVICE_MEMORY_SHARED_CACHE")},
    )
    holder.communicate(timeout=30)
    assert "got 4" in other.stdout, other.stdout + other.stderr
    after = run(
        native_build,
        "free",
        CUDA_DEVICE_MEMORY_LIMIT_0="64m",
        CUDA_DEVICE_MEMORY_SHARED_CACHE=env["CUDA_DEVICE_MEMORY_SHARED_CACHE"],
    )
    assert "free 64" in after.stdout, after.stdout + after.stderr


def test_the_limits_file_binds_whatever_the_environment_says(
    native_build: Path, tmp_path: Path
) -> None:
    """The placement's limits file (read-only to the job where it is mounted) is the word:
    a laxer environment, another region path or a high priority cannot loosen it."""
    placed, elsewhere = tmp_path / "placed.cache", tmp_path / "elsewhere.cache"
    limits = tmp_path / "limits"
    limits.write_text(
        "# written by the node agent\n"
        "CUDA_DEVICE_MEMORY_LIMIT_0=64m\n"
        f"CUDA_DEVICE_MEMORY_SHARED_CACHE={placed}\n"
        "CUDA_DEVICE_SM_LIMIT=30\n"
        "CUDA_TASK_PRIORITY=1\n"
    )
    limits.chmod(0o444)
    lax = {
        "HAMI_LIMITS_FILE": str(limits),
        "CUDA_DEVICE_MEMORY_LIMIT_0": "1g",
        "CUDA_DEVICE_MEMORY_SHARED_CACHE": str(elsewhere),
        "CUDA_TASK_PRIORITY": "0",
    }
    grabbed = run(native_build, "grab", str(8 * MB), "16", **lax)
    assert "got 8" in grabbed.stdout, grabbed.stderr
    assert placed.exists() and not elsewhere.exists()
    throttled = run(native_build, "throttle", "1", **lax)
    share = float(throttled.stdout.split("share ")[1].split()[0])
    assert share < 0.4, throttled.stdout
    # A stricter environment still tightens it.
    strict = run(
        native_build, "grab", str(8 * MB), "16", **{**lax, "CUDA_DEVICE_MEMORY_LIMIT_0": "16m"}
    )
    assert "got 2" in strict.stdout, strict.stderr


def test_a_malformed_limits_file_fails_closed(native_build: Path, tmp_path: Path) -> None:
    limits = tmp_path / "limits"
    limits.write_text("CUDA_DEVICE_MEMORY_LIMIT_0=lots\nnot a line\n")
    result = run(native_build, "refused", HAMI_LIMITS_FILE=str(limits), LIBCUDA_LOG_LEVEL="1")
    ok(result)
    assert "malformed" in result.stderr and "not NAME=VALUE" in result.stderr


def test_a_corrupt_region_is_refused_and_left_alone(native_build: Path, tmp_path: Path) -> None:
    cache = tmp_path / "vgpu.cache"
    env = {"CUDA_DEVICE_MEMORY_LIMIT_0": "64m", "CUDA_DEVICE_MEMORY_SHARED_CACHE": str(cache)}
    assert "got 1" in run(native_build, "grab", str(MB), "1", **env).stdout
    data = bytearray(cache.read_bytes())
    data[12:16] = (7).to_bytes(4, "little")  # slot_count: a tenant's scribble
    cache.write_bytes(bytes(data))
    result = run(native_build, "grab", str(MB), "1", LIBCUDA_LOG_LEVEL="1", **env)
    assert "got 0" in result.stdout  # fails closed: limited memory refused
    assert result.stderr.count("not used") == 1, result.stderr
    assert cache.read_bytes() == bytes(data)
