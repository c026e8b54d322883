"""Every driver entry point that can take device memory is intercepted or documented.

`cuda.h` (from the nvidia-cuda-runtime wheel the build uses) is compared with the symbols
`libvgpu.so` exports and with the table in docs/native.md ("Entry points that take device memory
and are not charged"), so that an entry point a new CUDA release adds cannot slip past the
limits unnoticed."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "native.md"

# The families through which device memory can be taken (allocation, arrays, pools, graphs'
# memory, contexts and their limits, modules, imports and interop).
MEMORY_FAMILIES = re.compile(
    r"^cu(Mem(Alloc|Create|PoolCreate|PoolImport|HostAlloc|HostRegister|Import|SetMemPool)"
    r"|(Mipmapped)?Array(3D)?Create|MipmappedArrayCreate"
    r"|Graph(AddMemAllocNode|AddNode|Instantiate|ExecUpdate|ExecNodeSetParams|Upload|MemAlloc)"
    r"|DeviceGraphMem|DeviceSetMemPool"
    r"|CtxCreate|GreenCtxCreate|CtxFromGreenCtx|DevicePrimaryCtxRetain|CtxSetLimit"
    r"|ModuleLoad|LibraryLoad|Link(Create|Complete)"
    r"|IpcOpenMemHandle|ImportExternalMemory|ExternalMemoryGetMapped"
    r"|Graphics.*(Register|GetMapped)|Multicast(Create|Bind)|StreamBeginCaptureToGraph)"
)


def header_functions() -> set[str]:
    include = subprocess.run(
        [sys.executable, str(REPO / "native" / "find_headers.py")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    text = (Path(include) / "cuda.h").read_text()
    names = set(re.findall(r"CUresult\s+CUDAAPI\s+(cu\w+)\s*\(", text))
    # What the driver exports under a declared name: `#define cuMemAlloc cuMemAlloc_v2`, and
    # `__CUDA_API_PTSZ(cuLaunchKernel)` for the per-thread-stream flavour too.
    for target in re.findall(r"#define\s+cu\w+\s+(cu\w+)\s*$", text, re.MULTILINE):
        names.add(target)
    for macro, target in re.findall(r"__CUDA_API_(PTSZ|PTDS)\((cu\w+)\)", text):
        names.update({target, f"{target}_{macro.lower()}"})
    return names


def exported(build: Path, kinds: str = "") -> set[str]:
    """The symbols libvgpu.so defines (``kinds``: only those of these nm types, e.g. "TtWw")."""
    symbols = subprocess.run(
        ["nm", "-D", "--defined-only", str(build / "libvgpu.so")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rows = [line.split() for line in symbols.splitlines()]
    return {row[-1] for row in rows if not kinds or row[1] in kinds}


def documented() -> set[str]:
    text = DOC.read_text()
    start = text.index("### Entry points that take device memory and are not charged")
    section = text[start : text.index("\n## ", start)]
    first_cells = [line.split("|")[1] for line in section.splitlines() if line.startswith("| ")]
    return {name for cell in first_cells for name in re.findall(r"`(cu\w+)`", cell)}


def test_every_memory_entry_point_is_hooked_or_documented(native_build: Path) -> None:
    declared = header_functions()
    assert len(declared) > 400  # the header really was read
    family = {name for name in declared if MEMORY_FAMILIES.match(name)}
    hooked, listed = exported(native_build), documented()
    unaccounted = sorted(family - hooked - listed)
    assert not unaccounted, (
        "entry points that can take device memory, neither hooked nor listed in docs/native.md: "
        + ", ".join(unaccounted)
    )


def test_the_documented_list_names_real_entry_points_the_library_does_not_hook(
    native_build: Path,
) -> None:
    declared, hooked = header_functions(), exported(native_build)
    listed = documented()
    assert not (listed & hooked), sorted(listed & hooked)  # stale: it is charged now
    assert not (listed - declared), sorted(listed - declared)  # a typo, or gone from cuda.h


def test_every_hook_is_a_driver_entry_point(native_build: Path) -> None:
    declared = header_functions()
    hooks = {name for name in exported(native_build) if name.startswith("cu")}
    assert not (hooks - declared), sorted(hooks - declared)
