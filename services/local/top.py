"""`hami top`: the web page's view in a terminal, refreshing. It reads the same document
(telemetry's `/api/view`, services/telemetry/view.py) and draws each GPU as a bar of its
shares, memory granted against memory used, then the waiting requests and why they wait."""

from __future__ import annotations

import json
import shutil
import sys
import time
import urllib.error
import urllib.request
from typing import Any

from shared.errors import Unavailable

MIB = 1024 * 1024
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def fetch(url: str, timeout_s: float = 5.0) -> dict[str, Any]:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as reply:
            document = json.loads(reply.read())
    except (urllib.error.URLError, OSError, ValueError) as e:
        raise Unavailable(f"telemetry at {url} does not answer ({e}); is `hami up` running?") from e
    if not isinstance(document, dict) or "nodes" not in document:
        raise Unavailable(f"{url} did not answer with HAMi's view")
    return document


def _gib(mib: float) -> str:
    return f"{mib / 1024:.1f}G"


def _bar(device: dict[str, Any], width: int, letters: dict[str, str]) -> str:
    """One cell per 1/width of the device's memory: a letter per share (upper case where the
    job uses that part), '.' where nothing is granted."""
    cells = []
    total = max(1, device["memory_mib"])
    for share in device["shares"]:
        n = max(1, round(width * share["memory_mib"] / total))
        usage = share.get("usage") or {}
        limit, used = usage.get("limit_bytes") or 0, usage.get("used_bytes") or 0
        busy = min(n, round(n * used / limit)) if limit else 0
        letter = letters[share["allocation_id"]]
        cells.append(letter.upper() * busy + letter.lower() * (n - busy))
    bar = "".join(cells)[:width]
    return bar + "." * (width - len(bar))


def render(document: dict[str, Any], width: int = 100) -> str:
    bar_width = max(10, min(60, width - 40))
    letters: dict[str, str] = {}
    lines = []
    for node in document["nodes"]:
        lines.append(f"node {node['name']}")
        for device in node["devices"]:
            for share in device["shares"]:
                letters.setdefault(share["allocation_id"], LETTERS[len(letters) % len(LETTERS)])
            granted, total = device["allocated_memory_mib"], device["memory_mib"]
            flags = (" simulated" if device["simulated"] else "") + (
                "" if device["healthy"] else " UNHEALTHY"
            )
            lines.append(
                f"  GPU {device['index']} {device['model']}{flags}  "
                f"[{_bar(device, bar_width, letters)}] {_gib(granted)}/{_gib(total)}  "
                f"cores {device['allocated_cores']}/{device['cores']}  "
                f"jobs {len(device['shares'])}/{device['split_count']}"
            )
            for share in device["shares"]:
                usage = share.get("usage") or {}
                used = usage.get("used_bytes")
                util = usage.get("utilization_percent")
                holder = share["holder"]["name"] or share["allocation_id"]
                lines.append(
                    f"    {letters[share['allocation_id']]} {holder[:40]:<40} "
                    f"mem {_gib(share['memory_mib']):>7} used "
                    f"{('-' if used is None else _gib(used / MIB)):>7}  "
                    f"cores {share['cores']:>3}%  "
                    f"busy {('-' if util is None else f'{util:.0f}%'):>4}"
                )
    if not document["nodes"]:
        lines.append("no node has published its devices yet")
    waiting = document.get("waiting") or []
    lines.append("")
    lines.append(f"waiting: {len(waiting)}")
    for w in waiting:
        lines.append(
            f"  {(w['holder'] or w['request_id'])[:40]:<40} {w['waiting_s']:>5.0f}s  {w['reason']}"
        )
    for problem in document.get("problems") or ():
        lines.append(f"problem: {problem}")
    lines.append("(upper case: memory the job uses; lower case: granted, unused; '.': free)")
    return "\n".join(lines)


def top(url: str, interval_s: float, once: bool) -> int:
    if once:
        print(render(fetch(url), shutil.get_terminal_size().columns))
        return 0
    try:
        while True:
            frame = render(fetch(url), shutil.get_terminal_size().columns)
            stamp = time.strftime("%H:%M:%S")
            sys.stdout.write(f"\x1b[H\x1b[2J{frame}\n\nhami top {stamp}, every {interval_s:g}s\n")
            sys.stdout.flush()
            time.sleep(interval_s)
    except KeyboardInterrupt:
        return 0
