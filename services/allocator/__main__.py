"""`python -m services.allocator`: run the allocator until SIGTERM."""

from services.allocator.service import serve
from services.allocator.settings import parse_settings
from shared.runloop import run_service


def main() -> None:
    settings = parse_settings()
    run_service("allocator", settings.log_level, lambda stop: serve(settings, stop))


if __name__ == "__main__":
    main()
