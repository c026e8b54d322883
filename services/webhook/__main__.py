"""`python -m services.webhook`: serve admission reviews until SIGTERM."""

from services.webhook.service import serve
from services.webhook.settings import parse_settings
from shared.runloop import run_service


def main() -> None:
    settings = parse_settings()
    run_service("webhook", settings.log_level, lambda stop: serve(settings, stop))


if __name__ == "__main__":
    main()
