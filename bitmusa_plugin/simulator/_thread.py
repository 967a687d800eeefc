"""The simulator on its own thread and event loop, as a real exchange would be: the code
under test keeps its loop to itself (its tasks, timers and stalls are its own), and faults
are injected from the test's loop with :meth:`SimulatorThread.call`."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from bitmusa_plugin.simulator import Simulator

T = TypeVar("T")


class SimulatorThread:
    """``with SimulatorThread(time_scale=3600) as handle:`` starts a :class:`Simulator`
    on a daemon thread; ``await handle.call(lambda sim: sim.drop())`` runs a function (or
    ``call_async`` for a coroutine function) on the simulator's loop and returns its result."""

    def __init__(self, **options: Any) -> None:
        self._options = options
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="bitmusa-simulator", daemon=True)
        self._ready = threading.Event()
        self._stopped: asyncio.Event | None = None
        self._error: BaseException | None = None
        self.sim: Simulator | None = None

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._main())
        self._loop.close()

    async def _main(self) -> None:
        self._stopped = asyncio.Event()
        try:
            self.sim = await Simulator(**self._options).start()
        except BaseException as exc:  # reported to the starting thread
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        await self._stopped.wait()
        await self.sim.stop()
        # handlers still running (a REST "timeout" fault sleeps on purpose) end with it
        rest = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in rest:
            task.cancel()
        await asyncio.gather(*rest, return_exceptions=True)

    def start(self) -> Simulator:
        self._thread.start()
        self._ready.wait(30)
        if self._error is not None:
            raise self._error
        assert self.sim is not None
        return self.sim

    def stop(self) -> None:
        if self._stopped is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stopped.set)
            self._thread.join(10)

    def __enter__(self) -> SimulatorThread:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def simulator(self) -> Simulator:
        assert self.sim is not None, "not started"
        return self.sim

    async def call(self, fn: Callable[[Simulator], T]) -> T:
        """Run ``fn(sim)`` on the simulator's loop; its result."""

        async def run() -> T:
            return fn(self.simulator)

        return await self.call_async(lambda sim: run())

    async def call_async(self, fn: Callable[[Simulator], Awaitable[T]]) -> T:
        """Run and await ``fn(sim)`` (a coroutine) on the simulator's loop; its result."""

        async def run() -> T:
            return await fn(self.simulator)

        future = asyncio.run_coroutine_threadsafe(run(), self._loop)
        return await asyncio.wrap_future(future)
