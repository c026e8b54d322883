"""Process helpers for child processes that must not outlive their parent."""

from __future__ import annotations

import ctypes
import signal

_PR_SET_PDEATHSIG = 1


def die_with_parent(sig: int = signal.SIGTERM) -> None:
    """Use as ``preexec_fn``: the kernel sends ``sig`` to the child when its parent dies, even by
    SIGKILL, so no service or job keeps running (and holding devices) without its supervisor."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
