"""A service loop ends when its task is cancelled, even when the cancel reaches it disguised:
as a library's own error, or as a timeout (Python 3.11's wait_for, gh-86296). Otherwise a
cancelled service would run on forever and whoever awaits it would hang."""

from __future__ import annotations

import asyncio
import contextlib

from shared.runloop import every, sleep_or_stop


async def ends_when_cancelled(task: asyncio.Task[None], stop: asyncio.Event) -> bool:
    await asyncio.sleep(0.05)
    task.cancel()
    try:
        done, _ = await asyncio.wait({task}, timeout=2)
        return task in done and task.cancelled()
    finally:
        stop.set()  # a loop that did not end stops here, so the test fails instead of hanging
        await asyncio.wait({task}, timeout=2)


async def test_a_periodic_loop_ends_when_its_work_turns_the_cancel_into_an_error() -> None:
    async def work() -> None:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            raise RuntimeError("the library's own error") from None

    stop = asyncio.Event()
    assert await ends_when_cancelled(asyncio.create_task(every(stop, 0.01, "test", work)), stop)


async def test_a_sleep_whose_cancel_became_a_timeout_still_ends_the_loop() -> None:
    stop, rounds = asyncio.Event(), 0

    async def loop() -> None:
        nonlocal rounds
        while not stop.is_set():
            rounds += 1
            # Swallowed, as a timeout that coincided with the cancel would be.
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.sleep(10)
            await sleep_or_stop(stop, 0.01)

    assert await ends_when_cancelled(asyncio.create_task(loop()), stop)
    assert rounds == 1
