"""`hami status`: the allocator's view as a table (or JSON)."""

from __future__ import annotations

from shared.quantity import format_mib
from shared.schemas.placement import DeviceStatus, StatusReply


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


SHARING = {"interception": "hami-core", "partition": "partitions", "whole": "whole"}


def _sharing(device: DeviceStatus) -> str:
    """How the device is shared: its kind (other vendors), its model, its partitions in use."""
    kind = "" if device.kind == "nvidia" else f"{device.kind} "
    mode = SHARING.get(device.isolation, device.isolation)
    if device.isolation == "partition" and device.kind == "nvidia":
        mode = "mig"
    parts = f": {','.join(device.partitions)}" if device.partitions else ""
    return f"{kind}{mode}{parts}"


def render(status: StatusReply, nats_url: str, metrics_url: str | None) -> str:
    out = [f"NATS {nats_url}" + (f"   metrics {metrics_url}" if metrics_url else ""), ""]
    rows = [
        [
            "NODE",
            "IDX",
            "MODEL",
            "UUID",
            "MEMORY FREE/TOTAL",
            "CORES FREE/TOTAL",
            "SHARES",
            "SHARING",
            "HEALTH",
        ]
    ]
    for d in sorted(status.devices, key=lambda d: (d.node, d.index)):
        rows.append(
            [
                d.node,
                str(d.index),
                d.model,
                d.uuid,
                f"{format_mib(d.memory_mib - d.used_memory_mib)} / {format_mib(d.memory_mib)}",
                f"{d.cores - d.used_cores}% / {d.cores}%",
                f"{d.used_count}/{d.split_count}",
                _sharing(d),
                "ok" if d.healthy else "UNHEALTHY",
            ]
        )
    out.append(_table(rows) if len(rows) > 1 else "no devices (is a node agent running?)")
    out.append("")
    rows = [["ALLOCATION", "NODE", "DEVICES", "MEMORY", "CORES", "HOLDER"]]
    for a in status.allocations:
        grants = [g for c in a.containers for g in c]
        holder = (a.holder.pod and f"{a.holder.namespace}/{a.holder.pod}") or (
            f"pid {a.holder.pid}: {a.holder.command}" if a.holder.pid else a.holder.command
        )
        rows.append(
            [
                a.allocation_id[:12],
                a.node,
                ",".join(str(g.index) for g in grants),
                ",".join(format_mib(g.memory_mib) for g in grants),
                ",".join(f"{g.cores}%" for g in grants),
                holder[:60],
            ]
        )
    out.append(_table(rows) if len(rows) > 1 else "no allocations")
    out.extend(f"PROBLEM: {problem}" for problem in status.problems)
    return "\n".join(out)
