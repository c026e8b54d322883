"""GPU checks for libvgpu.so on a real NVIDIA GPU, one subcommand per check; each prints one
JSON line. Run through tests/gpu/run.sh, which sets LD_PRELOAD and the limits."""

from __future__ import annotations

import ctypes
import json
import os
import sys
import time
from collections.abc import Callable

GIB = 1 << 30


def torch_oom() -> None:
    import torch

    limit = int(os.environ["HAMI_CHECK_LIMIT_BYTES"])
    free, total = torch.cuda.mem_get_info()
    held = torch.empty(int(limit * 0.6), dtype=torch.uint8, device="cuda")
    try:
        torch.empty(int(limit * 0.6), dtype=torch.uint8, device="cuda")
        refused = False
    except torch.OutOfMemoryError:
        refused = True
    print(
        json.dumps(
            {
                "check": "torch_oom",
                "alloc_conf": os.environ.get("PYTORCH_CUDA_ALLOC_CONF", ""),
                "mem_get_info_total": total,
                "limit": limit,
                "total_is_limit": total == limit,
                "free_le_limit": free <= limit,
                "refused_past_limit": refused,
            }
        )
    )
    del held


def cupy_oom() -> None:
    import cupy

    limit = int(os.environ["HAMI_CHECK_LIMIT_BYTES"])
    held = cupy.empty(int(limit * 0.6), dtype=cupy.uint8)
    try:
        cupy.empty(int(limit * 0.6), dtype=cupy.uint8)
        refused = False
    except cupy.cuda.memory.OutOfMemoryError:
        refused = True
    print(json.dumps({"check": "cupy_oom", "refused_past_limit": refused}))
    del held


def torch_hold(fraction: float, seconds: float) -> None:
    import torch

    limit = int(os.environ["HAMI_CHECK_LIMIT_BYTES"])
    try:
        held = torch.empty(int(limit * fraction), dtype=torch.uint8, device="cuda")
        ok = True
    except torch.OutOfMemoryError:
        held, ok = None, False
    print(json.dumps({"check": "torch_hold", "fraction": fraction, "allocated": ok}), flush=True)
    time.sleep(seconds)
    del held


def matmul_rate(seconds: float) -> None:
    import torch

    a = torch.randn(4096, 4096, device="cuda")
    b = torch.randn(4096, 4096, device="cuda")
    for _ in range(5):
        a @ b
    torch.cuda.synchronize()
    start, n = time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        for _ in range(10):
            a @ b
        n += 10
        torch.cuda.synchronize()
    rate = n / (time.perf_counter() - start)
    print(
        json.dumps(
            {
                "check": "matmul_rate",
                "sm_limit": os.environ.get("CUDA_DEVICE_SM_LIMIT", ""),
                "matmuls_per_s": rate,
            }
        )
    )


# ---- the driver API through ctypes (names resolve through dlsym: the library's hooks) ----


class _Location(ctypes.Structure):
    _fields_ = [("type", ctypes.c_int), ("id", ctypes.c_int)]


class _AllocFlags(ctypes.Structure):
    _fields_ = [
        ("compressionType", ctypes.c_ubyte),
        ("gpuDirectRDMACapable", ctypes.c_ubyte),
        ("usage", ctypes.c_ushort),
        ("reserved", ctypes.c_ubyte * 4),
    ]


class _AllocationProp(ctypes.Structure):
    _fields_ = [
        ("type", ctypes.c_int),
        ("requestedHandleTypes", ctypes.c_int),
        ("location", _Location),
        ("win32HandleMetaData", ctypes.c_void_p),
        ("allocFlags", _AllocFlags),
    ]


class _AccessDesc(ctypes.Structure):
    _fields_ = [("location", _Location), ("flags", ctypes.c_int)]


def _driver() -> ctypes.CDLL:
    cuda = ctypes.CDLL("libcuda.so.1")
    ctx = ctypes.c_void_p()
    assert cuda.cuInit(0) == 0
    assert cuda.cuDevicePrimaryCtxRetain(ctypes.byref(ctx), 0) == 0
    assert cuda.cuCtxSetCurrent(ctx) == 0
    return cuda


def _free(cuda: ctypes.CDLL) -> int:
    free, total = ctypes.c_size_t(), ctypes.c_size_t()
    assert cuda.cuMemGetInfo_v2(ctypes.byref(free), ctypes.byref(total)) == 0
    return free.value


def _report(check: str, body: Callable[[], dict[str, object]]) -> None:
    try:
        result = {"check": check, **body()}
    except Exception as e:  # one line per check, whatever happened
        result = {"check": check, "error": f"{type(e).__name__}: {e}"}
    print(json.dumps(result), flush=True)


def gpa_identity() -> dict[str, object]:
    """cuGetProcAddress_v2 from the real driver hands back our hooks (pointer identity)."""
    cuda = _driver()
    self_lib = ctypes.CDLL(None)
    names = {
        "cuMemAlloc": "cuMemAlloc_v2",
        "cuMemFree": "cuMemFree_v2",
        "cuLaunchKernel": "cuLaunchKernel",
        "cuMemCreate": "cuMemCreate",
        "cuMemAllocAsync": "cuMemAllocAsync",
        "cuGraphInstantiate": "cuGraphInstantiateWithFlags",
        "cuCtxSetLimit": "cuCtxSetLimit",
        "cuMipmappedArrayCreate": "cuMipmappedArrayCreate",
        "cuMemGetInfo": "cuMemGetInfo_v2",
    }
    mismatches = []
    for asked, hooked in names.items():
        pfn = ctypes.c_void_p()
        rc = cuda.cuGetProcAddress_v2(asked.encode(), ctypes.byref(pfn), 12000, 0, None)
        ours = ctypes.cast(getattr(self_lib, hooked), ctypes.c_void_p).value
        if rc != 0 or pfn.value != ours:
            mismatches.append(asked)
    return {"all_ours": not mismatches, "mismatches": mismatches}


def vmm_release_while_mapped() -> dict[str, object]:
    """NVIDIA's VMM idiom: create, map, release the handle while mapped: still charged until
    unmapped."""
    cuda = _driver()
    prop = _AllocationProp(type=1, location=_Location(type=1, id=0))
    granularity = ctypes.c_size_t()
    assert cuda.cuMemGetAllocationGranularity(ctypes.byref(granularity), ctypes.byref(prop), 0) == 0
    size = (GIB + granularity.value - 1) // granularity.value * granularity.value
    before = _free(cuda)
    handle, va = ctypes.c_ulonglong(), ctypes.c_ulonglong()
    assert cuda.cuMemCreate(ctypes.byref(handle), ctypes.c_size_t(size), ctypes.byref(prop), 0) == 0
    assert cuda.cuMemAddressReserve(ctypes.byref(va), ctypes.c_size_t(size), 0, 0, 0) == 0
    assert cuda.cuMemMap(va, ctypes.c_size_t(size), 0, handle, 0) == 0
    access = _AccessDesc(location=_Location(type=1, id=0), flags=3)
    assert cuda.cuMemSetAccess(va, ctypes.c_size_t(size), ctypes.byref(access), 1) == 0
    assert cuda.cuMemRelease(handle) == 0
    charged_while_mapped = before - _free(cuda) >= size
    big = ctypes.c_ulonglong()
    refused = cuda.cuMemAlloc_v2(ctypes.byref(big), ctypes.c_size_t(before - size // 2)) != 0
    assert cuda.cuMemUnmap(va, ctypes.c_size_t(size)) == 0
    cuda.cuMemAddressFree(va, ctypes.c_size_t(size))
    return {
        "charged_while_mapped": charged_while_mapped,
        "refused_past_limit": refused,
        "uncharged_after_unmap": _free(cuda) == before,
    }


def pool_retention() -> dict[str, object]:
    """A pool that keeps what is freed (release threshold UINT64_MAX) stays charged until it is
    trimmed; and whether the driver counts a stream-ordered allocation as reserved at once."""
    cuda = _driver()
    pool = ctypes.c_void_p()
    assert cuda.cuDeviceGetDefaultMemPool(ctypes.byref(pool), 0) == 0
    keep_all = ctypes.c_uint64(2**64 - 1)
    assert cuda.cuMemPoolSetAttribute(pool, 4, ctypes.byref(keep_all)) == 0  # RELEASE_THRESHOLD
    before = _free(cuda)
    p = ctypes.c_ulonglong()
    assert cuda.cuMemAllocAsync(ctypes.byref(p), ctypes.c_size_t(3 * GIB), None) == 0
    reserved = ctypes.c_uint64()
    cuda.cuMemPoolGetAttribute(pool, 5, ctypes.byref(reserved))  # RESERVED_MEM_CURRENT
    assert cuda.cuMemFreeAsync(p, None) == 0
    assert cuda.cuStreamSynchronize(None) == 0
    retained_charged = before - _free(cuda) >= 3 * GIB
    q = ctypes.c_ulonglong()
    refused = cuda.cuMemAlloc_v2(ctypes.byref(q), ctypes.c_size_t(2 * GIB)) != 0
    assert cuda.cuMemPoolTrimTo(pool, 0) == 0
    after_trim = cuda.cuMemAlloc_v2(ctypes.byref(q), ctypes.c_size_t(2 * GIB)) == 0
    if after_trim:
        cuda.cuMemFree_v2(q)
    return {
        "reserved_at_call": reserved.value >= 3 * GIB,
        "retained_charged": retained_charged,
        "refused_while_retained": refused,
        "allocates_after_trim": after_trim,
    }


def torch_graph_capture(seconds: float) -> dict[str, object]:
    """PyTorch captures in global mode: the capture must succeed under an SM limit, and its
    replays are throttled (the rate is compared with an unlimited run by summarize.py)."""
    import torch

    a = torch.randn(4096, 4096, device="cuda")
    b = torch.randn(4096, 4096, device="cuda")
    side = torch.cuda.Stream()
    with torch.cuda.stream(side):  # warm-up on a side stream, as PyTorch's docs do
        for _ in range(3):
            a @ b
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(10):
            c = a @ b
    torch.cuda.synchronize()
    start, n = time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        graph.replay()
        n += 10
        torch.cuda.synchronize()
    del c
    return {
        "captured": True,
        "sm_limit": os.environ.get("CUDA_DEVICE_SM_LIMIT", ""),
        "matmuls_per_s": n / (time.perf_counter() - start),
    }


def torch_streams(seconds: float) -> dict[str, object]:
    """The same matmul loop spread over three streams: the share is per device."""
    import torch

    a = torch.randn(4096, 4096, device="cuda")
    b = torch.randn(4096, 4096, device="cuda")
    streams = [torch.cuda.Stream() for _ in range(3)]
    torch.cuda.synchronize()
    start, n = time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        for s in streams:
            with torch.cuda.stream(s):
                for _ in range(4):
                    a @ b
        n += 12
        torch.cuda.synchronize()
    return {
        "sm_limit": os.environ.get("CUDA_DEVICE_SM_LIMIT", ""),
        "matmuls_per_s": n / (time.perf_counter() - start),
    }


def jax_prealloc() -> dict[str, object]:
    """JAX preallocates a fraction of the free memory it is told about: of the limit, not the
    card, and it cannot allocate past the limit."""
    import jax
    import jax.numpy as jnp

    limit = int(os.environ["HAMI_CHECK_LIMIT_BYTES"])
    stats = jax.devices()[0].memory_stats() or {}
    bytes_limit = int(stats.get("bytes_limit", 0))
    try:
        jnp.ones((int(limit * 1.2) // 4,), dtype=jnp.float32).block_until_ready()
        refused = False
    except Exception:
        refused = True
    return {
        "bytes_limit": bytes_limit,
        "within_limit": 0 < bytes_limit <= limit,
        "refused_past_limit": refused,
    }


def cupy_pool() -> dict[str, object]:
    """CuPy's pool keeps freed blocks (device memory really held): charged until it frees them."""
    import cupy

    limit = int(os.environ["HAMI_CHECK_LIMIT_BYTES"])
    pool = cupy.get_default_memory_pool()
    x = cupy.empty(int(limit * 0.7), dtype=cupy.uint8)
    del x
    held = pool.total_bytes()
    free_held, _ = cupy.cuda.runtime.memGetInfo()
    pool.free_all_blocks()
    free_after, _ = cupy.cuda.runtime.memGetInfo()
    return {
        "pool_holds": held >= int(limit * 0.7),
        "charged_while_held": free_held <= limit - int(limit * 0.7),
        "uncharged_after_free_all": free_after >= limit - (64 << 20),
    }


if __name__ == "__main__":
    name, *args = sys.argv[1:]
    reported = {
        "gpa_identity": gpa_identity,
        "vmm_release_while_mapped": vmm_release_while_mapped,
        "pool_retention": pool_retention,
        "torch_graph_capture": lambda: torch_graph_capture(float(args[0])),
        "torch_streams": lambda: torch_streams(float(args[0])),
        "jax_prealloc": jax_prealloc,
        "cupy_pool": cupy_pool,
    }
    if name in reported:
        _report(name, reported[name])
        sys.exit(0)
    {
        "torch_oom": torch_oom,
        "cupy_oom": cupy_oom,
        "torch_hold": lambda: torch_hold(float(args[0]), float(args[1])),
        "matmul_rate": lambda: matmul_rate(float(args[0])),
    }[name]()
