"""docs/devices.md's table of device kinds, derived from the registry (shared/vendorkinds.py):
``python -m shared.kinddoc`` rewrites the part between the markers; a test fails when the file
and the registry disagree."""

from __future__ import annotations

from pathlib import Path

from shared.devicekinds import DeviceKind
from shared.vendorkinds import VENDOR_KINDS

DOC_PATH = Path(__file__).resolve().parents[1] / "docs" / "devices.md"
BEGIN = "<!-- BEGIN GENERATED: python -m shared.kinddoc -->"
END = "<!-- END GENERATED -->"


def _row(kind: DeviceKind) -> str:
    r = kind.resources
    names = ", ".join(
        f"`{n}`" for n in (r.count, r.memory, r.memory_percentage, r.cores, r.priority) if n
    )
    unit = "-"
    if r.memory:
        unit = f"{kind.memory_unit_mib} MiB"
        if kind.memory_sizes:
            unit += f" (only {', '.join(map(str, kind.memory_sizes))})"
    if r.cores and kind.cores_per_device != 100:
        unit += f"; cores: {kind.cores_per_device} = a device"
    s = kind.selectors
    selectors = ", ".join(
        f"`{a}`" for a in (s.use_type, s.nouse_type, s.use_uuid, s.nouse_uuid) if a
    )
    models = "; ".join(
        f"{m.name} ({m.memory_mib} MiB"
        + (
            ": " + ", ".join(f"`{p.name}` {p.memory_mib} MiB {p.cores}%" for p in m.profiles)
            if m.profiles
            else ""
        )
        + ")"
        for m in kind.models
    )
    return (
        f"| `{kind.name}` | {kind.vendor} | {kind.isolation} | {names} | {unit} | "
        f"{selectors or '-'} | `{kind.annotation_type}` in "
        f"`hami.io/{kind.annotation_word}-devices-*` | {models or 'from NVML'} |"
    )


def render() -> str:
    header = (
        "| kind | vendor | isolation | resources | memory unit | selectors | pod annotations | "
        "models (memory: profiles) |\n| --- | --- | --- | --- | --- | --- | --- | --- |"
    )
    return "\n".join([header, *(_row(k) for k in VENDOR_KINDS.kinds)])


def splice(document: str, table: str) -> str:
    before, rest = document.split(BEGIN, 1)
    _, after = rest.split(END, 1)
    return f"{before}{BEGIN}\n{table}\n{END}{after}"


if __name__ == "__main__":
    DOC_PATH.write_text(splice(DOC_PATH.read_text(), render()))
