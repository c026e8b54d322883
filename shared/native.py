"""Finding the native isolation library (libvgpu.so) that jobs get preloaded."""

from __future__ import annotations

from pathlib import Path

REPO_BUILD = Path(__file__).resolve().parent.parent / "native" / "build" / "libvgpu.so"
PACKAGED = Path(__file__).resolve().parent / "lib" / "libvgpu.so"
"""Where a wheel install carries it (setup.py)."""


def find_libvgpu(setting: str = "auto") -> Path | None:
    """The library a setting names (`CliSettings.libvgpu`, from ``HAMI_LIBVGPU``): "auto" is the
    in-tree build, else the one the wheel carries; empty disables preloading."""
    if setting != "auto":
        return Path(setting) if setting and Path(setting).is_file() else None
    return next((p for p in (REPO_BUILD, PACKAGED) if p.is_file()), None)
