"""`python -m services.telemetry`: serve metrics until SIGTERM."""

from services.telemetry.service import serve
from services.telemetry.settings import parse_settings
from shared.runloop import run_service


def main() -> None:
    settings = parse_settings()
    run_service("telemetry", settings.log_level, lambda stop: serve(settings, stop))


if __name__ == "__main__":
    main()
