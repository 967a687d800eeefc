"""Isolated, ordered delivery of hook calls to plugins.

pluggy's own ``pm.hook.x()`` stops at the first raising implementation (pluggy#419) and
does not await coroutines, so pluggy is used for discovery only and delivery is ours:

* Each plugin gets one ordered, bounded queue and one worker. A plugin sees its events in
  stream order *across* its hooks (an order fill before the position it opened), and a
  plugin that raises, blocks or falls behind delays only itself.
* ``async def`` implementations are awaited on the event loop; plain ``def`` ones run in
  the plugin's own daemon thread, so a blocking handler never starves the loop (and the
  websocket's pongs, ccxt#22493). Consecutive sync calls run as one batch per thread hop.
* Every plugin gets its own copy of each object (one pass per event finds the nested
  containers, then each extra plugin's copy is a few C-level ``dict.copy()`` calls; the
  last plugin gets the original): no plugin can change what another receives.
* Overflow policy: when a plugin's queue is full, its *oldest* queued call is dropped to
  make room for the newest (the newest state is the one worth having). Each overflow
  episode is reported once through ``on_error`` (kind ``queue_overflow``) and the log, and
  every dropped call is counted in ``stats()``. Nothing is dropped silently.
* A handler still running after ``slow_after`` seconds is reported once (``plugin_slow``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from queue import SimpleQueue
from typing import Any

from pluggy import HookImpl

from bitmusa_hookspecs import ErrorInfo

from .mapping import error_info

log = logging.getLogger(__name__)

DEFAULT_QUEUE_SIZE = 10_000
DEFAULT_SLOW_AFTER = 5.0

Call = tuple[str, dict[str, Any]]
Reporter = Callable[[ErrorInfo, Any], None]


@dataclass(slots=True)
class _Impl:
    function: Callable[..., Any]
    argnames: tuple[str, ...]
    is_async: bool


class _Thread:
    """One daemon thread per plugin with sync handlers. A daemon, so a handler blocked
    forever cannot hold the process open at exit."""

    def __init__(self, name: str) -> None:
        self._jobs: SimpleQueue[tuple[Callable[[], Any], asyncio.Future[Any]] | None] = (
            SimpleQueue()
        )
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._run, name=f"bitmusa-plugin:{name}")
        self._thread.daemon = True
        self._thread.start()

    def submit(self, job: Callable[[], Any]) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = self._loop.create_future()
        self._jobs.put((job, future))
        return future

    def stop(self) -> None:
        self._jobs.put(None)

    def _run(self) -> None:
        while (item := self._jobs.get()) is not None:
            job, future = item
            try:
                result = job()
            except BaseException as exc:  # delivered to the awaiting worker
                self._resolve(future, None, exc)
            else:
                self._resolve(future, result, None)

    def _resolve(self, future: asyncio.Future[Any], result: Any, exc: BaseException | None) -> None:
        def done() -> None:
            if future.done():
                return
            if exc is not None:
                future.set_exception(exc)
            else:
                future.set_result(result)

        with contextlib.suppress(RuntimeError):  # the loop closed while we ran
            self._loop.call_soon_threadsafe(done)


@dataclass(slots=True)
class Subscriber:
    """One plugin's queue, worker and counters."""

    name: str
    impls: dict[str, _Impl]
    maxsize: int
    queue: deque[Call] = field(default_factory=deque)
    wakeup: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    thread: _Thread | None = None
    delivered: int = 0
    errors: int = 0
    dropped: int = 0
    overflowing: bool = False
    busy_since: float | None = None
    busy_hook: str | None = None
    slow_reported: bool = False

    def stats(self) -> dict[str, Any]:
        return {
            "delivered": self.delivered,
            "errors": self.errors,
            "dropped": self.dropped,
            "queued": len(self.queue),
        }


class Dispatcher:
    """Delivers hook calls to every subscribed plugin through its own queue."""

    def __init__(
        self,
        impls: list[tuple[str, str, HookImpl]],
        *,
        queue_size: int = DEFAULT_QUEUE_SIZE,
        slow_after: float = DEFAULT_SLOW_AFTER,
        reporter: Reporter | None = None,
    ) -> None:
        self.queue_size = queue_size
        self.slow_after = slow_after
        self._reporter = reporter
        self._subscribers: dict[str, Subscriber] = {}
        self._by_hook: dict[str, list[Subscriber]] = {}
        self._watchdog: asyncio.Task[None] | None = None
        for plugin_name, hook, impl in impls:
            sub = self._subscribers.get(plugin_name)
            if sub is None:
                sub = self._subscribers[plugin_name] = Subscriber(plugin_name, {}, queue_size)
            sub.impls[hook] = _Impl(
                impl.function,
                tuple(impl.argnames),
                asyncio.iscoroutinefunction(impl.function),
            )
            self._by_hook.setdefault(hook, []).append(sub)

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        """Start one worker per plugin (call from the running loop)."""
        for sub in self._subscribers.values():
            if any(not impl.is_async for impl in sub.impls.values()):
                sub.thread = _Thread(sub.name)
            sub.task = asyncio.get_running_loop().create_task(
                self._work(sub), name=f"bitmusa-plugin:{sub.name}"
            )
        if self._subscribers and self.slow_after > 0:
            self._watchdog = asyncio.get_running_loop().create_task(self._watch())

    async def drain(self, timeout: float | None = None) -> bool:
        """Wait until every queue is empty and no handler runs; False on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.quiet():
            if deadline is not None and time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.002)
        return True

    def quiet(self) -> bool:
        """True when no call is queued or running."""
        return all(not s.queue and s.busy_since is None for s in self._subscribers.values())

    async def close(self, timeout: float = 1.0) -> None:
        """Drain for up to ``timeout`` seconds, then stop every worker."""
        await self.drain(timeout)
        tasks = [s.task for s in self._subscribers.values() if s.task is not None]
        if self._watchdog is not None:
            tasks.append(self._watchdog)
        for task in tasks:
            task.cancel()
        for sub in self._subscribers.values():
            if sub.queue:  # one line per plugin, however far behind it was
                hooks = Counter(call[0] for call in sub.queue)
                summary = ", ".join(f"{n} {hook}" for hook, n in sorted(hooks.items()))
                log.warning("plugin %s: not delivered before shutdown: %s", sub.name, summary)
            if sub.thread is not None:
                sub.thread.stop()
        if tasks:
            await asyncio.wait(tasks, timeout=0.5)

    # -- delivery -------------------------------------------------------------------------

    def has_subscribers(self, hook: str) -> bool:
        return hook in self._by_hook

    def publish(self, hook: str, kwargs: dict[str, Any]) -> None:
        """Queue ``hook(**kwargs)`` for every plugin implementing it. Never blocks."""
        subs = self._by_hook.get(hook)
        if not subs:
            return
        last = len(subs) - 1
        plan = copy_plan(kwargs) if last else ()
        for i, sub in enumerate(subs):
            # the last subscriber gets the original, the others a private copy
            args = kwargs if i == last else clone(kwargs, plan)
            queue = sub.queue
            if len(queue) >= sub.maxsize:
                self._overflow(sub)
            queue.append((hook, args))
            if len(queue) == 1:
                sub.wakeup.set()

    def backlog(self) -> int:
        """The longest queue, in calls."""
        return max((len(s.queue) for s in self._subscribers.values()), default=0)

    def stats(self) -> dict[str, dict[str, Any]]:
        return {name: sub.stats() for name, sub in self._subscribers.items()}

    def _overflow(self, sub: Subscriber) -> None:
        dropped_hook, _ = sub.queue.popleft()
        sub.dropped += 1
        if not sub.overflowing:
            sub.overflowing = True
            message = (
                f"plugin {sub.name!r} fell {sub.maxsize} calls behind: dropping its oldest "
                f"queued calls (first: {dropped_hook}) until it catches up"
            )
            log.warning(message)
            self._report(error_info("queue_overflow", message, plugin=sub.name), None)

    def _report(self, error: ErrorInfo, event: Any) -> None:
        if self._reporter is not None:
            self._reporter(error, event)

    async def _work(self, sub: Subscriber) -> None:
        queue = sub.queue
        while True:
            if not queue:
                if sub.overflowing:
                    sub.overflowing = False
                    log.warning("plugin %s caught up; %d calls dropped", sub.name, sub.dropped)
                sub.wakeup.clear()
                await sub.wakeup.wait()
                continue
            hook, kwargs = queue.popleft()
            impl = sub.impls[hook]
            sub.busy_since, sub.busy_hook, sub.slow_reported = time.monotonic(), hook, False
            if impl.is_async:
                try:
                    await impl.function(*[kwargs[a] for a in impl.argnames])
                except asyncio.CancelledError:
                    raise
                except BaseException as exc:  # SystemExit from a plugin stops only its call
                    self._failed(sub, hook, kwargs, exc)
                else:
                    sub.delivered += 1
            else:
                batch = [(hook, kwargs)]
                while queue and not sub.impls[queue[0][0]].is_async and len(batch) < 256:
                    batch.append(queue.popleft())
                assert sub.thread is not None
                results = await sub.thread.submit(lambda b=batch: _run_batch(sub, b))  # type: ignore[misc]
                for (b_hook, b_kwargs), failure in zip(batch, results, strict=True):
                    if failure is None:
                        sub.delivered += 1
                    else:
                        self._failed(sub, b_hook, b_kwargs, failure)
            sub.busy_since = None

    def _failed(
        self, sub: Subscriber, hook: str, kwargs: dict[str, Any], exc: BaseException
    ) -> None:
        sub.errors += 1
        message = f"plugin {sub.name!r} raised in {hook}: {type(exc).__name__}: {exc}"
        log.error(message, exc_info=(type(exc), exc, exc.__traceback__))
        if hook != "on_error":  # an on_error handler that raises is logged, never re-sent
            self._report(error_info("plugin_error", message, plugin=sub.name), kwargs.get("event"))

    async def _watch(self) -> None:
        interval = max(self.slow_after / 2, 0.05)
        while True:
            await asyncio.sleep(interval)
            now = time.monotonic()
            for sub in self._subscribers.values():
                since = sub.busy_since
                if since is not None and not sub.slow_reported and now - since > self.slow_after:
                    sub.slow_reported = True
                    message = (
                        f"plugin {sub.name!r} has been running {sub.busy_hook} for more than "
                        f"{self.slow_after:g} s; its later events wait in its own queue"
                    )
                    log.warning(message)
                    self._report(error_info("plugin_slow", message, plugin=sub.name), None)


_CONTAINERS = (dict, list)
#: Where the nested containers of a value are: ((key or index, plan of that child), ...).
Plan = tuple[tuple[Any, "Plan"], ...]


def copy_plan(value: Any) -> Plan:
    """One pass over a JSON-shaped value (dicts, lists, scalars) finding its containers.
    Made once per event, it lets :func:`clone` copy each container with one C-level
    ``copy()`` instead of visiting every scalar again for every plugin."""
    items = value.items() if type(value) is dict else enumerate(value)
    return tuple((key, copy_plan(item)) for key, item in items if type(item) in _CONTAINERS)


def clone(value: Any, plan: Plan, memo: dict[int, Any] | None = None) -> Any:
    """A deep copy of ``value`` along ``plan``. Sharing is kept: an order's ``info`` and
    its event's ``data`` are one object, and stay one object in the copy."""
    if memo is None:
        memo = {}
    copy = value.copy()
    memo[id(value)] = copy
    for key, child_plan in plan:
        child = value[key]
        done = memo.get(id(child))
        copy[key] = done if done is not None else clone(child, child_plan, memo)
    return copy


def _run_batch(sub: Subscriber, batch: list[Call]) -> list[BaseException | None]:
    """Run consecutive sync calls in the plugin's thread; collect each call's outcome."""
    results: list[BaseException | None] = []
    for hook, kwargs in batch:
        impl = sub.impls[hook]
        try:
            impl.function(*[kwargs[a] for a in impl.argnames])
        except BaseException as exc:  # even SystemExit: it must not end the thread
            results.append(exc)
        else:
            results.append(None)
    return results
