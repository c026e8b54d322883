"""A job is its whole process tree, not just the process `hami run` started.

`hami run` becomes a child subreaper, so whatever the job leaves behind (`sh -c 'work &'`, a
double-forked daemon) is re-parented to it rather than to init, and is found here. When the
main process exits, the leftovers are either ended (`kill`, the default: a container's life is
its main process's) or waited for (`wait`); only then are the devices released."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
from pathlib import Path

_PR_SET_CHILD_SUBREAPER = 36
LEFTOVER_POLICIES = ("kill", "wait")


def become_subreaper() -> bool:
    libc = ctypes.CDLL(None, use_errno=True)
    return int(libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)) == 0


def _table() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, state letter) for every process we can see."""
    out = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # The command name may hold spaces and parentheses: split after its last ')'.
        fields = stat[stat.rindex(")") + 2 :].split()
        out[int(entry.name)] = (int(fields[1]), fields[0])
    return out


def descendants(root: int) -> tuple[list[int], list[int]]:
    """(live descendants of ``root``, its zombie children to reap)."""
    table = _table()
    children: dict[int, list[int]] = {}
    for pid, (parent, _) in table.items():
        children.setdefault(parent, []).append(pid)
    live, zombies, queue = [], [], list(children.get(root, []))
    while queue:
        pid = queue.pop()
        if table[pid][1] == "Z":
            if table[pid][0] == root:
                zombies.append(pid)
            continue
        live.append(pid)
        queue.extend(children.get(pid, []))
    return live, zombies


def _reap(zombies: list[int]) -> None:
    for pid in zombies:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)


def _signal(pids: list[int], sig: signal.Signals) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


async def end_leftovers(policy: str, *, grace_s: float = 5.0, poll_s: float = 0.1) -> int:
    """After the job's main process exited: end (or wait for) what it left. Returns how many
    processes were left."""
    me = os.getpid()
    live, zombies = descendants(me)
    _reap(zombies)
    left = len(live)
    if policy == "kill":
        _signal(live, signal.SIGTERM)
    deadline = asyncio.get_running_loop().time() + grace_s
    while live:
        await asyncio.sleep(poll_s)
        live, zombies = descendants(me)
        _reap(zombies)
        if policy == "kill" and live and asyncio.get_running_loop().time() > deadline:
            _signal(live, signal.SIGKILL)
    return left
