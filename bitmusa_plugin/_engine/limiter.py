"""The REST allowance every account of a process shares: a request waits for its turn
instead of being refused (Bitmusa documents 8 requests/s and 200/min, possibly per IP).

Turns go by priority, then first come first served: an order or a cancel (``TRADING``)
never waits behind the snapshots of a 1,000-account resync (``ROUTINE``); it takes the next
turn the limits allow.
"""

from __future__ import annotations

import asyncio
import collections
import heapq
import itertools
import time
from collections.abc import Callable

#: Placing, cancelling and closing, and a listenKey's keep-alive (PUT) and close
#: (DELETE): the next turn, before any routine call.
TRADING = 1
#: Snapshots, trade history, side lookups, market data, fetches.
ROUTINE = 0

_Waiter = tuple[int, int, "asyncio.Future[None]"]


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
        self._order = itertools.count()
        # per event loop (a process-wide limiter may see several): who waits, and the timer
        # that hands out the next turn
        self._waiting: dict[asyncio.AbstractEventLoop, list[_Waiter]] = {}
        self._timers: dict[asyncio.AbstractEventLoop, asyncio.TimerHandle] = {}

    async def acquire(self, priority: int = ROUTINE) -> None:
        """Wait for a turn: at once when the limits allow and nobody waits, else after
        every waiter of a higher ``priority``, and of the same one that came first."""
        loop = asyncio.get_running_loop()
        waiting = self._waiting.get(loop)
        if not waiting and self._delay() <= 0:
            self._sent.append(self._clock())
            return
        if waiting is None:
            self._waiting = {lp: w for lp, w in self._waiting.items() if not lp.is_closed()}
            waiting = self._waiting[loop] = []
        turn: asyncio.Future[None] = loop.create_future()
        heapq.heappush(waiting, (-priority, next(self._order), turn))
        self._hand_out(loop)
        await turn  # a cancelled waiter is skipped when its turn would come

    def ready(self, n: int = 1) -> bool:
        """Would ``n`` requests go out now, without waiting (and with nobody queued)?"""
        if self._waiting.get(asyncio.get_running_loop()):
            return False
        now = self._clock()
        return all(
            sum(1 for t in self._sent if now - t < window) + n <= count
            for count, window in self.limits
        )

    def _hand_out(self, loop: asyncio.AbstractEventLoop) -> None:
        """Give turns to the waiters at the head while the limits allow, then set a timer
        for the next one."""
        timer = self._timers.pop(loop, None)
        if timer is not None:
            timer.cancel()
        waiting = self._waiting.get(loop, [])
        while waiting:
            if waiting[0][2].done():  # cancelled while it waited
                heapq.heappop(waiting)
                continue
            delay = self._delay()
            if delay > 0:
                self._timers[loop] = loop.call_later(delay, self._hand_out, loop)
                return
            _, _, turn = heapq.heappop(waiting)
            self._sent.append(self._clock())
            turn.set_result(None)

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
