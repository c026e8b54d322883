"""Webhook settings: the Struct is the whole contract (flags, `HAMI_*` environment, a settings
file and the help all derive from it: shared/settings.py). The admission rules
(`WebhookSettings`) come from `--config` and HAMi's device configuration."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any

import msgspec

from services.webhook.core.settings import WebhookSettings
from shared import settings
from shared.deviceconfig import load_device_config
from shared.errors import InvalidRequest
from shared.servicesettings import LogLevel


class ServeSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    host: Annotated[str, msgspec.Meta(extra={"env": "HAMI_WEBHOOK_HOST"})] = "0.0.0.0"
    port: Annotated[int, msgspec.Meta(ge=0, le=65535, extra={"env": "HAMI_WEBHOOK_PORT"})] = 9443
    cert_file: str = "/tls/tls.crt"
    key_file: str = "/tls/tls.key"
    reload_interval_s: Annotated[float, msgspec.Meta(gt=0)] = 10.0
    """How often the certificate files are checked for a renewal."""
    log_level: LogLevel = "INFO"
    config: Annotated[str | None, msgspec.Meta(extra={"env": "HAMI_WEBHOOK_CONFIG"})] = None
    """A JSON file with the admission settings (services/webhook/core/settings.py)."""
    device_config: str | None = None
    """HAMi's device configuration (resource names, defaultMemory, defaultCores, ...)."""
    admission: WebhookSettings = WebhookSettings()
    tls_secret: str | None = None
    """namespace/name: make (or reuse) the serving pair in this Secret and put its CA into the
    webhook configurations (services/webhook/bootstrap.py); None: serve cert_file/key_file."""
    service_name: str = "hami-webhook"
    """The webhook's Service (its DNS names go into the bootstrapped certificate)."""
    configuration_name: str = "hami-webhook"
    """The Mutating- and ValidatingWebhookConfiguration the bootstrap sets the CA on."""
    tls_dir: str = "/tmp/hami-webhook-tls"
    """Where the bootstrapped pair is written for serving (an emptyDir in the pod)."""
    kubeconfig: Annotated[str | None, msgspec.Meta(extra={"env": "KUBECONFIG"})] = None

    def __post_init__(self) -> None:
        if self.tls_secret is not None and (
            self.tls_secret.count("/") != 1 or not all(self.tls_secret.split("/"))
        ):
            raise ValueError(f"--tls-secret {self.tls_secret!r}: expected namespace/name")


def _admission(values: Mapping[str, Any]) -> dict[str, Any]:
    admission = WebhookSettings()
    config = values.get("config")
    if config:
        try:
            admission = msgspec.json.decode(Path(config).read_bytes(), type=WebhookSettings)
        except OSError as e:
            raise InvalidRequest(f"webhook configuration {config}: {e.strerror}") from None
        except (msgspec.ValidationError, msgspec.DecodeError) as e:
            raise InvalidRequest(f"webhook configuration {config}: {e}") from None
    device_config = values.get("device_config")
    if device_config:
        nvidia = load_device_config(device_config).nvidia
        admission = msgspec.structs.replace(
            admission,
            resources=nvidia.resources,
            default_mem=nvidia.default_memory,
            default_cores=nvidia.default_cores,
            default_gpu_num=nvidia.default_gpu_num,
        )
    return {"admission": msgspec.to_builtins(admission)} if (config or device_config) else {}


def parse_settings(argv: Sequence[str] | None = None) -> ServeSettings:
    return settings.load(
        ServeSettings, argv, prog="hami-webhook", description="HAMi webhook", fallback=_admission
    )
