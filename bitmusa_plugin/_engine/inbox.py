"""A stream's inbox: the events its supervisor loop handles, in the order they were posted.

An ``asyncio.Queue`` costs 3.3 KiB even when empty (three deques of 760 B: its items, its
getters and its putters), and waiting on one with a timeout took a task per wait. A
process holds one inbox per account stream, and an idle stream's memory is the figure that
counts at 1,000 accounts (docs/benchmarks.md §4): this is a list and, while the loop waits,
one future, about 100 B.
"""

from __future__ import annotations

import asyncio
from typing import Generic, TypeVar

T = TypeVar("T")


def _release(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class Inbox(Generic[T]):
    """Unbounded, one consumer. ``put`` never blocks; :meth:`get` waits for an item or for
    its timeout."""

    __slots__ = ("_items", "_waiter")

    def __init__(self) -> None:
        self._items: list[T] = []
        self._waiter: asyncio.Future[None] | None = None

    def __len__(self) -> int:
        return len(self._items)

    def put(self, item: T) -> None:
        self._items.append(item)
        waiter = self._waiter
        if waiter is not None:
            _release(waiter)

    def empty(self) -> bool:
        return not self._items

    def get_nowait(self) -> T:
        """The oldest item (``IndexError`` when there is none)."""
        return self._items.pop(0)  # a handful at most: the loop drains it every turn

    async def get(self, timeout: float | None) -> T | None:
        """The oldest item, waiting up to ``timeout`` seconds (None: for ever) for one to be
        put; None when none came. Cancelling the caller cancels the wait and nothing else:
        not ``asyncio.wait_for``, which on Python 3.11 can swallow a cancellation that
        arrives as the awaited item completes (cpython gh-86296)."""
        if not self._items:
            loop = asyncio.get_running_loop()
            waiter: asyncio.Future[None] = loop.create_future()
            self._waiter = waiter
            timer = None if timeout is None else loop.call_later(timeout, _release, waiter)
            try:
                await waiter
            finally:
                self._waiter = None
                if timer is not None:
                    timer.cancel()
        return self._items.pop(0) if self._items else None
