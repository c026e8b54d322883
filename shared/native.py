"""Finding the native isolation library (libvgpu.so) that jobs get preloaded."""

from __future__ import annotations

import os
from pathlib import Path

REPO_BUILD = Path(__file__).resolve().parent.parent / "native" / "build" / "libvgpu.so"
PACKAGED = Path(__file__).resolve().parent / "lib" / "libvgpu.so"
"""Where a wheel install carries it (setup.py)."""


def find_libvgpu() -> Path | None:
    """``HAMI_LIBVGPU`` if set (empty disables preloading), else the in-tree build, else the
    one the wheel carries."""
    explicit = os.environ.get("HAMI_LIBVGPU")
    if explicit is not None:
        return Path(explicit) if explicit and Path(explicit).is_file() else None
    return next((p for p in (REPO_BUILD, PACKAGED) if p.is_file()), None)
