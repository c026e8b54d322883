"""One run loop per service: signals set a stop event, the service drains and returns."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable


def run_until_signalled(serve: Callable[[asyncio.Event], Awaitable[None]]) -> None:
    """Run ``serve(stop)``; SIGTERM and SIGINT set ``stop``. A second signal cancels outright."""

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()

        def on_signal() -> None:
            if stop.is_set() and task is not None:
                task.cancel()
            stop.set()

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, on_signal)
        await serve(stop)

    with contextlib.suppress(asyncio.CancelledError):
        asyncio.run(main())


def run_service(
    name: str, log_level: str, serve: Callable[[asyncio.Event], Awaitable[None]]
) -> None:
    """A service's main: its logs, its tracing (the `OTEL_*` environment: shared/tracing.py),
    ``serve`` until signalled, then the spans still queued flushed."""
    from shared import tracing
    from shared.logs import setup_logging

    setup_logging(name, log_level)
    stop_tracing = tracing.start(f"hami-{name}")
    try:
        run_until_signalled(serve)
    finally:
        stop_tracing()


log = logging.getLogger("hami.runloop")


def raise_if_cancelling() -> None:
    """Raise CancelledError when this task was asked to cancel. For a loop that goes on after a
    timeout or an error: on Python 3.11 ``asyncio.wait_for`` can report a timeout that
    coincided with a cancel as the timeout alone (gh-86296), and libraries turn a cancel into
    their own errors, so a loop that only watches its stop event would never end."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


async def sleep_or_stop(stop: asyncio.Event, seconds: float) -> None:
    """Sleep, but wake at once when ``stop`` is set."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
    raise_if_cancelling()


async def every(
    stop: asyncio.Event, interval_s: float, name: str, work: Callable[[], Awaitable[None]]
) -> None:
    """Run ``work`` now and then every ``interval_s`` until stopped. A failed round is logged
    and the next one tries again: one bad beat must not end a service."""
    while not stop.is_set():
        try:
            await work()
        except Exception as e:
            raise_if_cancelling()
            log.warning("periodic task failed", extra={"task": name, "error": repr(e)})
        await sleep_or_stop(stop, interval_s)
