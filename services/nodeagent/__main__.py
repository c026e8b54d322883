"""`python -m services.nodeagent`: run the node agent until SIGTERM."""

from services.nodeagent.service import serve
from services.nodeagent.settings import parse_settings
from shared.logs import setup_logging
from shared.runloop import run_until_signalled


def main() -> None:
    settings = parse_settings()
    setup_logging("nodeagent", settings.log_level)
    run_until_signalled(lambda stop: serve(settings, stop))


if __name__ == "__main__":
    main()
