"""The REST allowance every account of a process shares: a request waits for its turn
instead of being refused (Bitmusa documents 8 requests/s and 200/min, possibly per IP)."""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Callable


class RateLimiter:
    """Sliding-window limits shared by every client of a process (per IP, to be safe):
    a request waits for its turn instead of being refused."""

    def __init__(
        self,
        limits: tuple[tuple[int, float], ...] = ((8, 1.0), (200, 60.0)),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limits = limits
        self._clock = clock
        self._sent: collections.deque[float] = collections.deque()
        self._locks: dict[asyncio.AbstractEventLoop, asyncio.Lock] = {}

    async def acquire(self) -> None:
        # an asyncio.Lock belongs to one event loop; a process-wide limiter may see several
        loop = asyncio.get_running_loop()
        lock = self._locks.get(loop)
        if lock is None:
            self._locks = {lp: lk for lp, lk in self._locks.items() if not lp.is_closed()}
            lock = self._locks[loop] = asyncio.Lock()
        async with lock:
            while (delay := self._delay()) > 0:  # noqa: ASYNC110 (waits for time, not an event)
                await asyncio.sleep(delay)
            self._sent.append(self._clock())

    def ready(self, n: int = 1) -> bool:
        """Would ``n`` requests go out now, without waiting (and with nobody queued)?"""
        lock = self._locks.get(asyncio.get_running_loop())
        if lock is not None and lock.locked():
            return False
        now = self._clock()
        return all(
            sum(1 for t in self._sent if now - t < window) + n <= count
            for count, window in self.limits
        )

    def _delay(self) -> float:
        now = self._clock()
        longest = max(window for _, window in self.limits)
        while self._sent and now - self._sent[0] >= longest:
            self._sent.popleft()
        delay = 0.0
        for count, window in self.limits:
            recent = [t for t in self._sent if now - t < window]
            if len(recent) >= count:
                delay = max(delay, recent[-count] + window - now)
        return delay
