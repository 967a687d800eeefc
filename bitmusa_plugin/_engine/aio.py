"""asyncio helpers the engine needs and the standard library gets wrong somewhere."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable
from typing import Any, TypeVar

T = TypeVar("T")


def _wake(waiter: asyncio.Future[None], *_: Any) -> None:
    if not waiter.done():
        waiter.set_result(None)


async def within(awaitable: Awaitable[T], timeout: float | None, *, cancel: bool = True) -> T:
    """``asyncio.wait_for`` without its swallowed cancellation: on Python 3.11 a cancellation
    that arrives as the awaited thing completes is lost (cpython gh-86296), and a loop
    around it then runs on after it was cancelled (seen in CI at loop shutdown). Raises
    ``asyncio.TimeoutError`` after ``timeout`` seconds, cancelling what it waited for;
    our own cancellation cancels it too, and propagates. ``cancel=False``: neither cancels
    it, it runs on (what ``asyncio.shield`` around it did, without the shield's second
    future and callbacks).

    One future, one timer and one callback, not ``asyncio.wait``: its sets, closure and
    two coroutine frames were most of what a REST call held while it waited for a pool
    slot, and 1,000 accounts starting at once hold thousands of those (issue 21)."""
    task = asyncio.ensure_future(awaitable)
    loop = asyncio.get_running_loop()
    waiter: asyncio.Future[None] = loop.create_future()
    wake = functools.partial(_wake, waiter)
    task.add_done_callback(wake)
    timer = None if timeout is None else loop.call_later(timeout, wake)
    try:
        await waiter  # a plain future: our cancellation is raised here, never lost
    except BaseException:
        if cancel:
            task.cancel()
        raise
    finally:
        if timer is not None:
            timer.cancel()
        task.remove_done_callback(wake)
    if not task.done():
        if cancel:
            task.cancel()
        raise asyncio.TimeoutError
    return task.result()
