"""The vendors' management tools' output as device readings, as pure functions of the text.

Each parser takes what its tool printed (the commands are in services/nodeagent/toolbackends.py)
and returns one ToolReading per device: what the scheduler needs (identity, model, memory,
bus id, health, device-node minor) and the usage the node agent streams. Formats, from the
tools' documentation (tests/fixtures/vendortools/README.md says which page each follows):

- `npu-smi info` and `npu-smi info -m` (Huawei Ascend): the status table, two rows per chip,
  and the NPU/chip to logic-id and chip-name map.
- `cnmon info -e -m -u -j` (Cambricon): JSON `CnmonInfo`, one object per card.
- `hy-smi --showproductname --showuniqueid --showmeminfo vram --showuse --showbus --json`
  (Hygon; rocm-smi's options and JSON): one `cardN` object per DCU.
- `ixsmi --query-gpu=... --format=csv,noheader,nounits` (Iluvatar; nvidia-smi's query
  grammar).
- `amd-smi list --json`, `amd-smi static --asic --vram --json`, `amd-smi metric --usage
  --mem-usage --json` (AMD): one object per GPU keyed by `gpu` (newer releases wrap the
  metric list in `gpu_data`).

A device whose model no registered kind knows is left out (with the reason), never guessed
into another kind; a malformed output raises ToolOutputError naming the tool and the line."""

from __future__ import annotations

import csv
import json
import re
import uuid as uuidlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from services.nodeagent.core.readings import DeviceReading, UsageReading
from shared.devicekinds import DeviceKind, KindRegistry
from shared.errors import Unavailable

MIB = 1 << 20


class ToolOutputError(Unavailable):
    """A vendor tool printed something its parser cannot read: no readings from it this time
    (retryable: the tool may answer next beat)."""

    code = "tool_output_unreadable"


@dataclass(frozen=True, slots=True)
class ToolReading:
    device: DeviceReading
    usage: UsageReading


@dataclass(frozen=True, slots=True)
class Parsed:
    readings: tuple[ToolReading, ...]
    skipped: tuple[str, ...] = ()
    """Devices left out, each with why (a model no kind registers)."""


def _norm(name: str) -> str:
    return re.sub(r"[^A-Z0-9]", "", name.upper())


def kind_for(registry: KindRegistry, vendor: str, model: str) -> tuple[DeviceKind, str] | None:
    """The vendor's registered kind whose model the tool's model name is, and that model's
    registered name (type selectors match it); the longest matching name wins (`Z100L` over
    `Z100`). A vendor with one kind takes a model it does not list under that kind."""
    reported = _norm(model)
    best: tuple[int, DeviceKind, str] | None = None
    candidates = [k for k in registry.kinds if k.vendor == vendor]
    for kind in candidates:
        for known in kind.models:
            name = _norm(known.name)
            if name and name in reported and (best is None or len(name) > best[0]):
                best = (len(name), kind, known.name)
    if best is not None:
        return best[1], best[2]
    if len(candidates) == 1 and not _per_model(candidates[0]):
        return candidates[0], model.strip()
    return None


def _per_model(kind: DeviceKind) -> bool:
    """A kind registered per chip model (its resource names the model: Ascend, Iluvatar):
    another model of the vendor is not its."""
    return any(_norm(m.name) in _norm(kind.resources.count) for m in kind.models)


def stable_id(prefix: str, node: str, bus_id: str, index: int) -> str:
    """An id for a device whose tool reports none: stable for the node and its bus address."""
    where = bus_id.lower() or f"index-{index}"
    return f"{prefix}-{uuidlib.uuid5(uuidlib.NAMESPACE_DNS, f'hami/{node}/{where}')}"


LARGEST = 1 << 48
"""More than any index, MiB or CU count a device has: a larger number is a misread."""


def _int(value: object, tool: str, what: str) -> int:
    """A whole quantity the tool reports (an index, MiB, a count): 0..LARGEST."""
    try:
        number = int(float(str(value).split()[0]))
    except (ValueError, IndexError, OverflowError) as e:
        raise ToolOutputError(f"{tool}: {what} {value!r} is not a number") from e
    if not 0 <= number <= LARGEST:
        raise ToolOutputError(f"{tool}: {what} {value!r} is out of range")
    return number


def _float_or_none(value: object) -> float | None:
    """A percentage; None when the tool gives none or one that is not 0..100."""
    try:
        number = float(str(value).split()[0].rstrip("%"))
    except (ValueError, IndexError):
        return None
    return number if 0.0 <= number <= 100.0 else None


def _reading(
    kind: DeviceKind,
    model: str,
    *,
    uuid: str,
    index: int,
    total_mib: int,
    used_mib: int,
    utilization: float | None,
    bus_id: str = "",
    healthy: bool = True,
    minor: int | None = None,
    compute_units: int = 0,
) -> ToolReading:
    if not (0 <= total_mib <= LARGEST and 0 <= used_mib <= LARGEST and 0 <= index <= LARGEST):
        raise ToolOutputError(f"{uuid}: memory {used_mib} / {total_mib} MiB is out of range")
    if not uuid.isprintable() or len(uuid) > 128:
        raise ToolOutputError(f"a device id {uuid[:40]!r} is not an id")
    device = DeviceReading(
        uuid=uuid,
        index=index,
        model=model,
        memory_total_bytes=total_mib * MIB,
        pci_bus_id=bus_id,
        healthy=healthy and total_mib > 0,
        kind=kind.name,
        minor_number=minor if minor is not None else index,
        compute_units=compute_units,
    )
    usage = UsageReading(
        uuid=uuid,
        memory_used_bytes=max(0, used_mib) * MIB,
        memory_total_bytes=total_mib * MIB,
        utilization_percent=utilization,
    )
    return ToolReading(device, usage)


def _placed(
    registry: KindRegistry, vendor: str, model: str, tool: str, ident: str
) -> tuple[tuple[DeviceKind, str] | None, str]:
    found = kind_for(registry, vendor, model)
    why = "" if found else f"{tool}: {ident} is a {model!r}, which no registered {vendor} kind has"
    return found, why


# --- npu-smi (Huawei Ascend) -------------------------------------------------------------

ASCEND_HEALTHY = frozenset({"OK", "WARNING"})
"""npu-smi's health words for a chip that can run work (Warning: a minor alarm, as Huawei's
device plugin treats it); Alarm, Critical and anything else: unhealthy."""


def _cells(line: str) -> list[str] | None:
    line = line.strip()
    if not (line.startswith("|") and line.endswith("|")):
        return None
    return [c.strip() for c in line[1:-1].split("|")]


def _used_total(text: str) -> tuple[int, int] | None:
    match = re.fullmatch(r"(\d+)\s*/\s*(\d+)", text.strip())
    return (int(match.group(1)), int(match.group(2))) if match else None


def parse_npu_smi_chips(text: str) -> dict[tuple[int, int], tuple[int, str]]:
    """`npu-smi info -m`: (NPU id, chip id) to (chip logic id, chip name); the board's MCU
    rows (no logic id) are not chips."""
    chips: dict[tuple[int, int], tuple[int, str]] = {}
    for line in text.splitlines():
        parts = line.split(None, 3)
        if len(parts) == 4 and all(p.isdigit() for p in parts[:3]):
            chips[(int(parts[0]), int(parts[1]))] = (int(parts[2]), parts[3].strip())
    return chips


def parse_npu_smi(info: str, chips_text: str, node: str, registry: KindRegistry) -> Parsed:
    """`npu-smi info`: per chip a first row `NPU Name | Health | Power Temp Hugepages` and a
    second `Chip [Device] | Bus-Id | AICore(%) Memory-Usage(MB) [HBM-Usage(MB)]` (a card with
    several chips repeats the first row per chip); the device memory is
    HBM where the chip has it (910 series), else its memory (310P). The process table after
    the chips is not read."""
    chips = parse_npu_smi_chips(chips_text)
    out: list[ToolReading] = []
    skipped: list[str] = []
    first: tuple[int, str, str] | None = None
    for line in info.splitlines():
        if "Process id" in line:
            break
        cells = _cells(line)
        if cells is None or len(cells) < 3:
            continue
        head = cells[0].split()
        if not head or not head[0].isdigit():
            first = None
            continue
        if first is None:
            if len(head) < 2:
                raise ToolOutputError(f"npu-smi info: no chip name in {line.strip()!r}")
            first = (int(head[0]), " ".join(head[1:]), cells[1].upper())
            continue
        npu, name, health = first
        first = None
        chip = int(head[0])
        bus_id = cells[1]
        memories = re.findall(r"\d+\s*/\s*\d+", cells[2])
        if not memories:
            raise ToolOutputError(f"npu-smi info: no memory usage in {line.strip()!r}")
        pairs = [p for p in (_used_total(m) for m in memories) if p is not None]
        used, total = next((p for p in reversed(pairs) if p[1] > 0), pairs[-1])
        aicore = _float_or_none(cells[2])
        # Older layouts name the chip's logic id beside it (`Chip Device`); `-m` always does.
        own = int(head[1]) if len(head) > 1 and head[1].isdigit() else npu
        logic, chip_name = chips.get((npu, chip), (own, f"Ascend{name}"))
        found, why = _placed(registry, "Huawei", chip_name, "npu-smi", f"NPU {npu} chip {chip}")
        if found is None:
            skipped.append(why)
            continue
        kind, model = found
        out.append(
            _reading(
                kind,
                model,
                uuid=stable_id(kind.annotation_type, node, bus_id, logic),
                index=logic,
                total_mib=total,
                used_mib=used,
                utilization=aicore,
                bus_id=bus_id,
                healthy=health in ASCEND_HEALTHY,
                minor=logic,
            )
        )
    return Parsed(tuple(out), tuple(skipped))


# --- cnmon (Cambricon) ---------------------------------------------------------------------


def _json(text: str, tool: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise ToolOutputError(f"{tool}: output is not JSON ({e.msg} at line {e.lineno})") from e


def _obj(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def parse_cnmon(text: str, registry: KindRegistry) -> Parsed:
    """`cnmon info -e -m -u -j`: `{"CnmonInfo": [{"CardNum", "ProductName", "UUID",
    "PhysicalMemUsage": {"Total", "Used"} (MiB), "Utilization": {"MLUAverage"}}]}`."""
    cards = _obj(_json(text, "cnmon")).get("CnmonInfo")
    if not isinstance(cards, list):
        raise ToolOutputError("cnmon: no CnmonInfo list in its JSON")
    out, skipped = [], []
    for card in cards:
        card = _obj(card)
        index = _int(card.get("CardNum"), "cnmon", "CardNum")
        ident = str(card.get("UUID", "")).strip()
        if not ident:
            raise ToolOutputError(f"cnmon: card {index} has no UUID")
        model = str(card.get("ProductName", "")).strip()
        found, why = _placed(registry, "Cambricon", model, "cnmon", f"card {index}")
        if found is None:
            skipped.append(why)
            continue
        memory = _obj(card.get("PhysicalMemUsage"))
        out.append(
            _reading(
                found[0],
                found[1],
                uuid=ident if ident.upper().startswith("MLU-") else f"MLU-{ident}",
                index=index,
                total_mib=_int(memory.get("Total", 0), "cnmon", "PhysicalMemUsage.Total"),
                used_mib=_int(memory.get("Used", 0), "cnmon", "PhysicalMemUsage.Used"),
                utilization=_float_or_none(_obj(card.get("Utilization")).get("MLUAverage")),
                bus_id=str(card.get("BusId", "") or ""),
            )
        )
    return Parsed(tuple(out), tuple(skipped))


# --- hy-smi (Hygon DCU) --------------------------------------------------------------------


def _field(info: Mapping[str, Any], *names: str) -> Any:
    lowered = {k.lower(): v for k, v in info.items()}
    for name in names:
        if name.lower() in lowered:
            return lowered[name.lower()]
    return None


def parse_hy_smi(text: str, registry: KindRegistry) -> Parsed:
    """hy-smi's JSON (rocm-smi's): `{"card0": {"Card Series", "vram Total
    Memory (MiB)", "vram Total Used Memory (MiB)", "DCU use (%)" (newer drivers: "HCU use
    (%)"), "PCI Bus"}}`; keys other than `cardN` (rocm-smi's `system`) are not devices."""
    data = _obj(_json(text, "hy-smi"))
    out, skipped = [], []
    for key, value in data.items():
        match = re.fullmatch(r"card(\d+)", key)
        if match is None:
            continue
        info = _obj(value)
        index = int(match.group(1))
        model = str(_field(info, "Card Series", "Card Model") or "").strip()
        found, why = _placed(registry, "Hygon", model, "hy-smi", key)
        if found is None:
            skipped.append(why)
            continue
        total = _field(info, "vram Total Memory (MiB)")
        if total is None:
            raise ToolOutputError(f"hy-smi: {key} has no 'vram Total Memory (MiB)'")
        out.append(
            _reading(
                found[0],
                found[1],
                # HAMi's DCU device plugin names a DCU by its index and parses it back from
                # the pod's annotation: the same names let that plugin serve these devices.
                uuid=f"DCU-{index}",
                index=index,
                total_mib=_int(total, "hy-smi", "vram Total Memory"),
                used_mib=_int(_field(info, "vram Total Used Memory (MiB)") or 0, "hy-smi", "used"),
                utilization=_float_or_none(_field(info, "DCU use (%)", "HCU use (%)")),
                bus_id=str(_field(info, "PCI Bus") or ""),
            )
        )
    return Parsed(tuple(out), tuple(skipped))


# --- ixsmi (Iluvatar) ----------------------------------------------------------------------

IXSMI_FIELDS = (
    "index",
    "uuid",
    "name",
    "memory.total",
    "memory.used",
    "utilization.gpu",
    "pci.bus_id",
)
"""The query (nvidia-smi's grammar, which ixsmi follows), in this order."""


def parse_ixsmi(text: str, registry: KindRegistry) -> Parsed:
    """`ixsmi --query-gpu=<IXSMI_FIELDS> --format=csv,noheader,nounits`; values with units
    (`32768 MiB`, `3 %`) are read too."""
    out, skipped = [], []
    for row in csv.reader(line for line in text.splitlines() if line.strip()):
        if len(row) != len(IXSMI_FIELDS):
            raise ToolOutputError(
                f"ixsmi: expected {len(IXSMI_FIELDS)} fields ({','.join(IXSMI_FIELDS)}), "
                f"got {len(row)}: {','.join(row)[:120]!r}"
            )
        index_s, ident, name, total, used, util, bus = (c.strip() for c in row)
        index = _int(index_s, "ixsmi", "index")
        model = name.removeprefix("Iluvatar").strip()
        found, why = _placed(registry, "Iluvatar", model, "ixsmi", f"GPU {index}")
        if found is None:
            skipped.append(why)
            continue
        out.append(
            _reading(
                found[0],
                found[1],
                uuid=ident,
                index=index,
                total_mib=_int(total, "ixsmi", "memory.total"),
                used_mib=_int(used, "ixsmi", "memory.used"),
                utilization=_float_or_none(util),
                bus_id=bus,
            )
        )
    return Parsed(tuple(out), tuple(skipped))


# --- amd-smi (AMD) -------------------------------------------------------------------------


def _gpus(value: Any, tool: str) -> dict[int, Mapping[str, Any]]:
    if isinstance(value, Mapping) and isinstance(value.get("gpu_data"), list):
        value = value["gpu_data"]
    if not isinstance(value, list):
        raise ToolOutputError(f"{tool}: expected a list of GPUs")
    out = {}
    for item in value:
        item = _obj(item)
        if "gpu" in item:
            out[_int(item["gpu"], tool, "gpu")] = item
    return out


def _value_mib(value: Any, tool: str, what: str) -> int | None:
    """amd-smi's `{"value": N, "unit": "MB"}` (or a bare number, older releases) in MiB;
    None for `N/A`."""
    unit = "MB"
    if isinstance(value, Mapping):
        unit = str(value.get("unit", "MB")).upper()
        value = value.get("value")
    if value is None or str(value).strip().upper() == "N/A":
        return None
    number = _int(value, tool, what)
    return {"B": number >> 20, "KB": number >> 10, "GB": number << 10}.get(unit, number)


def parse_amd_smi(listed: str, static: str, metric: str, registry: KindRegistry) -> Parsed:
    """`amd-smi list --json` (`gpu`, `bdf`, `uuid`), `amd-smi static --asic --vram --json`
    (`asic.market_name`, `vram.size`) and `amd-smi metric --usage --mem-usage --json`
    (`usage.gfx_activity`, `mem_usage.used_vram`, `total_vram`), joined on `gpu`."""
    ids = _gpus(_json(listed, "amd-smi list"), "amd-smi list")
    statics = _gpus(_json(static, "amd-smi static"), "amd-smi static")
    metrics = _gpus(_json(metric, "amd-smi metric"), "amd-smi metric") if metric else {}
    out, skipped = [], []
    for gpu, entry in sorted(ids.items()):
        info = statics.get(gpu, {})
        model = str(_obj(info.get("asic")).get("market_name", "")).strip()
        found, why = _placed(registry, "AMD", model, "amd-smi", f"GPU {gpu}")
        if found is None:
            skipped.append(why)
            continue
        ident = str(entry.get("uuid", "")).strip()
        if not ident:
            raise ToolOutputError(f"amd-smi list: GPU {gpu} has no uuid")
        used = metrics.get(gpu, {})
        memory = _obj(used.get("mem_usage"))
        total = _value_mib(_obj(info.get("vram")).get("size"), "amd-smi static", "vram.size")
        if total is None:
            total = _value_mib(memory.get("total_vram"), "amd-smi metric", "total_vram") or 0
        util = _obj(used.get("usage")).get("gfx_activity")
        units = _obj(info.get("asic")).get("num_compute_units")
        out.append(
            _reading(
                found[0],
                found[1],
                uuid=ident if ident.upper().startswith("GPU-") else f"GPU-{ident}",
                index=gpu,
                total_mib=total,
                used_mib=_value_mib(memory.get("used_vram"), "amd-smi metric", "used_vram") or 0,
                utilization=_float_or_none(
                    util.get("value") if isinstance(util, Mapping) else util
                ),
                bus_id=str(entry.get("bdf", "")),
                compute_units=_int(units, "amd-smi static", "num_compute_units")
                if units not in (None, "N/A")
                else 0,
            )
        )
    return Parsed(tuple(out), tuple(skipped))


def devices_of(parsed: Iterable[ToolReading]) -> list[DeviceReading]:
    return [r.device for r in parsed]


def usage_of(parsed: Sequence[ToolReading]) -> list[UsageReading]:
    return [r.usage for r in parsed]
