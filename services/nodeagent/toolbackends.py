"""Device managers that read a vendor's management tool (npu-smi, cnmon, hy-smi, ixsmi,
amd-smi): the commands and their I/O; the parsing is core/vendortools.py.

Behind the same DeviceManager seam as NVML. A tool that fails or prints what its parser cannot
read keeps the devices it last reported, unhealthy (nothing new is placed on them; nothing
running is forgotten), and is asked again next beat; at start it must answer."""

from __future__ import annotations

import logging
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from services.nodeagent.core.readings import DeviceReading, DriverInfo, UsageReading
from services.nodeagent.core.vendortools import (
    IXSMI_FIELDS,
    Parsed,
    ToolReading,
    parse_amd_smi,
    parse_cnmon,
    parse_hy_smi,
    parse_ixsmi,
    parse_npu_smi,
)
from services.nodeagent.mig import HeldSlices, MigDevices, every_instance_held
from shared.devicekinds import KindRegistry
from shared.errors import Unavailable

log = logging.getLogger("hami.nodeagent.tools")

Runner = Callable[[Sequence[str], Path | None], str]
"""Runs a command (in a directory, where given) and returns what it printed; Unavailable
when it cannot be run, fails or hangs."""
TOOL_TIMEOUT_S = 20.0


def run_tool(argv: Sequence[str], cwd: Path | None = None) -> str:
    try:
        done = subprocess.run(
            list(argv), capture_output=True, text=True, timeout=TOOL_TIMEOUT_S, cwd=cwd, check=False
        )
    except FileNotFoundError as e:
        raise Unavailable(f"{argv[0]} is not installed on this node (not on PATH)") from e
    except subprocess.TimeoutExpired as e:
        raise Unavailable(f"{' '.join(argv)} did not answer in {TOOL_TIMEOUT_S:.0f} s") from e
    if done.returncode != 0:
        said = (done.stderr or done.stdout).strip().splitlines()
        raise Unavailable(
            f"{' '.join(argv)} exited {done.returncode}: {said[-1][:200] if said else 'no output'}"
        )
    return done.stdout


def _npu_smi(run: Runner, node: str, registry: KindRegistry) -> Parsed:
    return parse_npu_smi(
        run(["npu-smi", "info"], None), run(["npu-smi", "info", "-m"], None), node, registry
    )


def _cnmon(run: Runner, node: str, registry: KindRegistry) -> Parsed:
    # cnmon's JSON export goes to cnmon_info.json in the working directory, not to stdout.
    with tempfile.TemporaryDirectory(prefix="hami-cnmon-") as where:
        run(["cnmon", "info", "-e", "-m", "-u", "-j"], Path(where))
        try:
            text = (Path(where) / "cnmon_info.json").read_text()
        except OSError as e:
            raise Unavailable(f"cnmon wrote no cnmon_info.json: {e}") from e
    return parse_cnmon(text, registry)


HY_SMI = [
    "hy-smi",
    "--showproductname",
    "--showuniqueid",
    "--showmeminfo",
    "vram",
    "--showuse",
    "--showbus",
    "--json",
]


def _hy_smi(run: Runner, node: str, registry: KindRegistry) -> Parsed:
    return parse_hy_smi(run(HY_SMI, None), registry)


IXSMI = ["ixsmi", f"--query-gpu={','.join(IXSMI_FIELDS)}", "--format=csv,noheader,nounits"]


def _ixsmi(run: Runner, node: str, registry: KindRegistry) -> Parsed:
    return parse_ixsmi(run(IXSMI, None), registry)


def _amd_smi(run: Runner, node: str, registry: KindRegistry) -> Parsed:
    return parse_amd_smi(
        run(["amd-smi", "list", "--json"], None),
        run(["amd-smi", "static", "--asic", "--vram", "--json"], None),
        run(["amd-smi", "metric", "--usage", "--mem-usage", "--json"], None),
        registry,
    )


@dataclass(frozen=True, slots=True)
class ToolBackend:
    name: str
    vendor: str
    collect: Callable[[Runner, str, KindRegistry], Parsed]
    render_nodes: bool = False
    """Its devices are DRM render nodes (`/dev/dri/renderD<128+minor>`): the minor is read
    from sysfs by bus address, not assumed from the tool's index."""


def render_minor(bus_id: str, sysfs: Path = Path("/sys/bus/pci/devices")) -> int | None:
    """The render node's minor over 128 of the PCI device at ``bus_id``; None if unknown."""
    try:
        names = [p.name for p in (sysfs / bus_id.lower() / "drm").iterdir()]
    except OSError:
        return None
    minors = [
        int(n[len("renderD") :]) for n in names if n.startswith("renderD") and n[7:].isdigit()
    ]
    return min(minors) - 128 if minors else None


TOOL_BACKENDS = {
    b.name: b
    for b in (
        ToolBackend("npu-smi", "Huawei", _npu_smi),
        ToolBackend("cnmon", "Cambricon", _cnmon),
        ToolBackend("hy-smi", "Hygon", _hy_smi),
        ToolBackend("ixsmi", "Iluvatar", _ixsmi),
        ToolBackend("amd-smi", "AMD", _amd_smi, render_nodes=True),
    )
}
"""The vendors whose tool's output format is documented (tests/fixtures/vendortools/). Metax
(mx-smi), Enflame (efsmi) and Kunlunxin (xpu-smi) publish none that a parser can be held to;
their nodes run simulated or not at all until they do (docs/devices.md)."""


class ToolDeviceManager:
    """Devices as a vendor tool reports them; usage from the same tool."""

    def __init__(
        self,
        backend: ToolBackend,
        node: str,
        registry: KindRegistry,
        run: Runner = run_tool,
        sysfs: Path = Path("/sys/bus/pci/devices"),
    ) -> None:
        self._sysfs = sysfs
        self.backend = backend
        self.node = node
        self.registry = registry
        self.mig: MigDevices | None = None
        self.held_slices: HeldSlices = every_instance_held
        self._run = run
        self._last: tuple[ToolReading, ...] = ()
        self._told: set[str] = set()
        if not self._collect():
            raise Unavailable(f"{backend.name} found no device on {node} that a kind here knows")

    def _collect(self) -> tuple[ToolReading, ...]:
        parsed = self.backend.collect(self._run, self.node, self.registry)
        for why in parsed.skipped:
            if why not in self._told:
                self._told.add(why)
                log.warning("device left out", extra={"tool": self.backend.name, "reason": why})
        readings = parsed.readings
        if self.backend.render_nodes:
            readings = tuple(self._with_render_minor(r) for r in readings)
        self._last = readings
        return readings

    def _with_render_minor(self, reading: ToolReading) -> ToolReading:
        minor = render_minor(reading.device.pci_bus_id, self._sysfs)
        if minor is None:
            return reading
        return ToolReading(replace(reading.device, minor_number=minor), reading.usage)

    def driver(self) -> DriverInfo:
        return DriverInfo(driver_version=f"{self.backend.name} ({self.backend.vendor})")

    def devices(self) -> list[DeviceReading]:
        try:
            return [r.device for r in self._collect()]
        except Unavailable as e:
            log.warning(
                "tool failed: last devices kept, unhealthy",
                extra={"tool": self.backend.name, "error": str(e)},
            )
            return [replace(r.device, healthy=False) for r in self._last]

    def usage(self) -> list[UsageReading]:
        try:
            return [r.usage for r in self._collect()]
        except Unavailable as e:
            log.warning("tool failed: no usage", extra={"tool": self.backend.name, "error": str(e)})
            return []

    def close(self) -> None:
        pass
