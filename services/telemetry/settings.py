"""Telemetry settings: `TelemetrySettings` (shared/servicesettings.py) is the whole contract;
flags, `HAMI_*` environment, a settings file and the help derive from it (shared/settings.py)."""

from __future__ import annotations

from collections.abc import Sequence

from shared import settings
from shared.servicesettings import TelemetrySettings as TelemetrySettings


def parse_settings(argv: Sequence[str] | None = None) -> TelemetrySettings:
    return settings.load(
        TelemetrySettings, argv, prog="hami-telemetry", description="HAMi telemetry"
    )
