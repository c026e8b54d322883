"""Allocator settings: `AllocatorSettings` (shared/servicesettings.py) is the whole contract;
flags, `HAMI_*` environment, a settings file and the help derive from it (shared/settings.py),
and HAMi's device configuration supplies the resource names."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import msgspec

from shared import settings
from shared.deviceconfig import load_device_config
from shared.devicekinds import DEFAULT_KINDS, NVIDIA, KindRegistry
from shared.servicesettings import AllocatorSettings as AllocatorSettings


def kinds_of(allocator: AllocatorSettings) -> KindRegistry:
    """The device kinds pods are read by: HAMi's names, or the device configuration's."""
    if allocator.resources == NVIDIA.resources:
        return DEFAULT_KINDS
    return KindRegistry((dataclasses.replace(NVIDIA, resources=allocator.resources),))


def _from_device_config(values: Mapping[str, Any]) -> dict[str, Any]:
    path = values.get("device_config")
    if not path:
        return {}
    return {"resources": msgspec.to_builtins(load_device_config(path).nvidia.resources)}


def parse_settings(argv: Sequence[str] | None = None) -> AllocatorSettings:
    return settings.load(
        AllocatorSettings,
        argv,
        prog="hami-allocator",
        description="HAMi allocator",
        fallback=_from_device_config,
    )
