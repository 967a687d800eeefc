"""asyncio helpers the engine needs and the standard library gets wrong somewhere."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")


async def within(awaitable: Awaitable[T], timeout: float | None) -> T:
    """``asyncio.wait_for`` without its swallowed cancellation: on Python 3.11 a cancellation
    that arrives as the awaited thing completes is lost (cpython gh-86296), and a loop
    around it then runs on after it was cancelled (seen in CI at loop shutdown). Raises
    ``asyncio.TimeoutError`` after ``timeout`` seconds, cancelling what it waited for;
    our own cancellation cancels it too, and propagates."""
    task = asyncio.ensure_future(awaitable)
    try:
        done, _ = await asyncio.wait({task}, timeout=timeout)
    except BaseException:
        task.cancel()
        raise
    if not done:
        task.cancel()
        raise asyncio.TimeoutError
    return task.result()
