"""`python -m services.nodeagent`: run the node agent until SIGTERM."""

from services.nodeagent.service import serve
from services.nodeagent.settings import parse_settings
from shared.runloop import run_service


def main() -> None:
    settings = parse_settings()
    run_service("nodeagent", settings.log_level, lambda stop: serve(settings, stop))


if __name__ == "__main__":
    main()
