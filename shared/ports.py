"""Free TCP ports for the servers a process starts (local mode, the tests' collaborators)."""

from __future__ import annotations

import random
import socket
from pathlib import Path


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999  # Linux's default


def free_port() -> int:
    """A free loopback port outside the kernel's ephemeral range: a port from that range (what
    binding port 0 gives) can be taken by any outgoing connection before the server meant to
    listen on it starts (seen: an API server failing with `address already in use`)."""
    low, high = _ephemeral_range()
    ranges = [r for r in ((10000, low), (high + 1, 65536)) if r[1] - r[0] > 1000]
    for _ in range(200 if ranges else 0):
        start, stop = random.choice(ranges)
        port = random.randrange(start, stop)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket() as sock:  # nothing free outside the range: the kernel's choice
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
