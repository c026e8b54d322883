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
from shared.devicekinds import NVIDIA, KindRegistry
from shared.servicesettings import AllocatorSettings as AllocatorSettings
from shared.vendorkinds import VENDOR_KINDS


def kinds_of(allocator: AllocatorSettings) -> KindRegistry:
    """The device kinds pods are read by: every family HAMi supports (shared/vendorkinds.py),
    NVIDIA's names from the device configuration where it renames them."""
    if allocator.resources == NVIDIA.resources:
        return VENDOR_KINDS
    nvidia = dataclasses.replace(NVIDIA, resources=allocator.resources)
    return KindRegistry((nvidia, *VENDOR_KINDS.kinds[1:]))


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
