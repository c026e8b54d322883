"""Which containers hold which compute units of this node's AMD GPUs: a durable record
(`<vgpu-root>/amd/cu-masks.json`), so a restarted agent hands a new container CUs no running
one has, and an Allocate retried for the same container gets the same CUs.

The CUs of an allocation that ended are given back when a new container needs them (its
record is gone from the allocator's bucket); an unreadable record holds every CU: nothing is
handed out until it is fixed or removed (fails closed)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from pathlib import Path

import msgspec

from services.nodeagent.core.cumask import choose
from services.nodeagent.hostfiles import write_atomically
from shared.errors import InvalidRequest, Unavailable


class CuEntry(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    allocation_id: str
    container: str
    """The container's key (`<podUID>_<container>`)."""
    device: str
    cus: tuple[int, ...]


class CuLedger:
    def __init__(self, path: Path, live: Callable[[str], bool]) -> None:
        """``live``: whether an allocation is still this node's (NodeAllocations.holds)."""
        self.path = path
        self.live = live
        self._lock = asyncio.Lock()

    def entries(self) -> list[CuEntry]:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return []
        except OSError as e:
            raise Unavailable(f"the CU ledger {self.path} cannot be read: {e}") from e
        try:
            return msgspec.json.decode(raw, type=list[CuEntry])
        except msgspec.DecodeError as e:
            raise Unavailable(
                f"the CU ledger {self.path} is unreadable ({e}); fix or remove it: no compute "
                "share is handed out until then"
            ) from e

    async def masks_for(
        self, allocation_id: str, container: str, wants: Sequence[tuple[str, int, int]]
    ) -> list[tuple[int, ...]]:
        """The CUs of the container on each device it wants (device UUID, the device's CUs,
        how many); the same CUs it was given before, if it was."""
        async with self._lock:
            entries = self.entries()
            mine = {
                e.device: e
                for e in entries
                if (e.allocation_id, e.container) == (allocation_id, container)
            }
            if all(d in mine and len(mine[d].cus) == n for d, _, n in wants):
                return [mine[d].cus for d, _, _ in wants]
            others = [
                e for e in entries if (e.allocation_id, e.container) != (allocation_id, container)
            ]
            made: list[CuEntry] = []
            for device, total, need in wants:
                try:
                    cus = choose(total, _taken(others, device), need, device)
                except InvalidRequest:
                    # Ended allocations' CUs come back only now: the watch of the allocator's
                    # records may still be catching up at start, so they are not dropped early.
                    others = [e for e in others if self.live(e.allocation_id)]
                    cus = choose(total, _taken(others, device), need, device)
                made.append(CuEntry(allocation_id, container, device, cus))
            kept = sorted([*others, *made], key=lambda e: (e.device, e.cus))
            write_atomically(self.path, msgspec.json.encode(kept).decode(), 0o600, durable=True)
            return [e.cus for e in made]


def _taken(entries: Sequence[CuEntry], device: str) -> list[int]:
    return [cu for e in entries if e.device == device for cu in e.cus]
