"""`python -m services.webhook`: serve admission reviews until SIGTERM."""

from services.webhook.service import serve
from services.webhook.settings import parse_settings
from shared.logs import setup_logging
from shared.runloop import run_until_signalled


def main() -> None:
    settings = parse_settings()
    setup_logging("webhook", settings.log_level)
    run_until_signalled(lambda stop: serve(settings, stop))


if __name__ == "__main__":
    main()
