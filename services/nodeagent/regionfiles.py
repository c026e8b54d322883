"""Regions on disk: whether any live process still holds a slot in one, and recreating a corrupt
one. A process owns its slot through an open-file-description lock on one byte past the end of
the region file (native/src/region.c, docs/native.md): the kernel drops it when the process
dies, whatever PID namespace it lives in, so a probe from the host sees the truth."""

from __future__ import annotations

import fcntl
import logging
import os
import struct
import time
from pathlib import Path

from services.nodeagent.core.region import (
    REGION_BYTES,
    SLOT_COUNT,
    RegionCorrupt,
    RegionReading,
    RegionUnreadable,
    read_region,
)

log = logging.getLogger("hami.nodeagent.regionfiles")
_FLOCK = "hhqqi"  # struct flock: l_type, l_whence, l_start, l_len, l_pid (native alignment)


def live_holders(path: Path) -> int:
    """Slots of the region whose owner is alive (holds its lock)."""
    fd = os.open(path, os.O_RDWR | os.O_CLOEXEC | os.O_NOFOLLOW)
    try:
        held = 0
        for index in range(SLOT_COUNT):
            probe = struct.pack(_FLOCK, fcntl.F_WRLCK, os.SEEK_SET, REGION_BYTES + index, 1, 0)
            answer = fcntl.fcntl(fd, fcntl.F_OFD_GETLK, probe)
            if struct.unpack(_FLOCK, answer)[0] != fcntl.F_UNLCK:
                held += 1
        return held
    finally:
        os.close(fd)


def recreate_if_unheld(path: Path) -> bool:
    """Move a corrupt region aside when no live process holds a slot in it, so that the
    container's next process makes a fresh one. With holders left it stays (they account in
    it; a second region would let the container take its limit twice) and the library keeps
    refusing it. The corrupt file is kept beside it for a look."""
    try:
        if live_holders(path) > 0:
            return False
        os.replace(path, path.with_name(f"{path.name}.corrupt-{int(time.time())}"))
    except OSError as e:
        log.warning("cannot recreate region", extra={"path": str(path), "error": str(e)})
        return False
    return True


class RegionReader:
    """Reads regions read-only (their containers' processes own them). One that cannot be read
    is skipped with one log line while it stays so, and counted (``skipped``, published in the
    node's inventory); a corrupt one nobody holds is moved aside for a fresh one."""

    def __init__(self) -> None:
        self.skipped = 0
        self._unreadable: set[str] = set()

    def read(self, key: str, path: Path) -> RegionReading | None:
        try:
            with path.open("rb") as f:
                data = f.read()
        except FileNotFoundError:
            return None
        except OSError as e:
            self._skip(key, "region unreadable", str(e))
            return None
        try:
            reading = read_region(data)
        except RegionCorrupt as e:
            if recreate_if_unheld(path):
                log.warning(
                    "corrupt region moved aside: the container's next process makes a new one",
                    extra={"container": key, "error": str(e)},
                )
                self.skipped += 1
                self._unreadable.discard(key)
                return None
            self._skip(key, "region corrupt, still held", str(e))
            return None
        except RegionUnreadable as e:
            self._skip(key, "region unreadable", str(e))
            return None
        self._unreadable.discard(key)
        return reading

    def _skip(self, key: str, message: str, error: str) -> None:
        self.skipped += 1
        if key not in self._unreadable:
            log.warning(message, extra={"container": key, "error": error})
            self._unreadable.add(key)
