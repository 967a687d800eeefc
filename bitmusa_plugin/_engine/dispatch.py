"""Isolated, ordered delivery of hook calls to plugins, under one of two delivery policies.

pluggy's own ``pm.hook.x()`` stops at the first raising implementation (pluggy#419) and
does not await coroutines, so pluggy is used for discovery only and delivery is ours:

* Each plugin gets one ordered queue and one worker. A plugin sees its events in stream
  order *across* its hooks (an order fill before the position it opened), and a plugin
  that raises, blocks or falls behind delays only itself.
* ``async def`` implementations are awaited on the event loop; plain ``def`` ones run in
  the plugin's own daemon thread, so a blocking handler never starves the loop (and the
  websocket's pongs, ccxt#22493). Consecutive sync calls run as one batch per thread hop.
* Every plugin gets its own copy of each object (one pass per event finds the nested
  containers, then each extra plugin's copy is a few C-level ``dict.copy()`` calls; the
  last plugin gets the original): no plugin can change what another receives.

What happens when a plugin falls behind is its **delivery policy** (docs/plugins.md):

* ``latest``: beyond ``conflate_after`` queued calls, a new state of an order, a position
  or the balance *replaces* the one still queued for the same object, at the newer one's
  place. The plugin still sees a subsequence of the stream in stream order, the final
  state of every object, and never a state older than one it saw; its queue is bounded by
  the number of live objects. Calls that are not states are never merged; ``on_error``
  floods beyond ``error_burst`` are counted and summarised, one call per kind, when the
  plugin catches up.
* ``all``: every call, in order. When such a plugin has ``queue_size`` calls queued,
  ingestion waits (:attr:`Dispatcher.blocked`, :meth:`Dispatcher.writable`): the readers
  stop reading their sockets and TCP carries the backpressure to the server. The same
  bound applies to a ``latest`` plugin's calls that cannot be merged.

A plugin with queued calls that makes no progress for ``stall_after`` seconds is reported
once (``plugin_stalled``) and switched to ``latest`` for the rest of the run: it never holds
ingestion again, and calls of it that can be neither merged nor queued within the bound
are dropped, counted and reported (``queue_overflow``). A handler still running after
``slow_after`` seconds is reported once per call (``plugin_slow``). Every episode is
reported once through ``on_error`` and the log, and counted in :meth:`Dispatcher.stats`:
each call published to a plugin is delivered, merged, summarised, dropped or still queued.

A *mark* (:meth:`Dispatcher.mark`) is a callback queued for one plugin like a call: it
runs when that plugin's worker reaches it, after every call published before it. The
worker's Redis sink learns that way when a gap's last record is in its hands.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import threading
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from queue import SimpleQueue
from typing import Any

from pluggy import HookImpl

from bitmusa_hookspecs import DeliveryPolicy, ErrorInfo, ErrorKind, error_info

log = logging.getLogger(__name__)

#: A lossless plugin holds ingestion when this many calls wait for it.
DEFAULT_QUEUE_SIZE = 10_000
#: A ``latest`` plugin this far behind starts merging its queued states.
DEFAULT_CONFLATE_AFTER = 1_000
#: Queued ``on_error`` calls a ``latest`` plugin keeps while behind; the rest are counted.
DEFAULT_ERROR_BURST = 100
DEFAULT_SLOW_AFTER = 5.0
DEFAULT_STALL_AFTER = 30.0
#: Calls handed to a sync plugin's thread in one hop.
SYNC_BATCH = 256

Call = tuple[str, dict[str, Any]]
Reporter = Callable[[ErrorInfo, Any], None]

#: Hooks whose calls carry the state of one object, and may be merged under ``latest``.
STATE_HOOKS = frozenset(("on_order", "on_position", "on_wallet"))
#: The queued call of a mark: never merged, summarised or dropped, not counted as a call.
MARK = "bitmusa:mark"


def state_key(hook: str, kwargs: dict[str, Any]) -> tuple[Any, ...] | None:
    """The object a call is the state of: an order by account and id, a position by
    account, symbol and side, the balance by account. None for calls that are events."""
    if hook == "on_order":
        return ("order", kwargs["event"]["account"], kwargs["order"]["id"])
    if hook == "on_position":
        position = kwargs["position"]
        return ("position", kwargs["event"]["account"], position["symbol"], position["side"])
    if hook == "on_wallet":
        return ("balance", kwargs["event"]["account"])
    return None


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
    """One plugin's queue, worker, policy and counters.

    The queue is a plain deque while the plugin keeps up. A ``latest`` plugin that falls
    ``conflate_after`` calls behind switches to ``backlog``, an ordered dict keyed by the
    object each state is about (events get a key of their own), so that a newer state
    replaces a queued one in O(1); it switches back once drained."""

    name: str
    impls: dict[str, _Impl]
    policy: DeliveryPolicy
    limit: int  # the queue length at which the policy steps in
    queue: deque[Call] = field(default_factory=deque)
    backlog: OrderedDict[Any, Call] | None = None
    wakeup: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    thread: _Thread | None = None
    #: calls in ``backlog`` that can never be merged (events), and queued ``on_error`` calls
    unmergeable: int = 0
    errors_queued: int = 0
    suppressed: Counter[ErrorKind] = field(default_factory=Counter)  # kind -> summarised
    published: int = 0
    delivered: int = 0
    errors: int = 0
    merged: int = 0
    summarised: int = 0
    dropped: int = 0
    peak: int = 0  # the longest the queue has been (tracked once the policy steps in)
    blocking: bool = False  # ingestion waits for this plugin
    blocked_since: float | None = None
    blocked_seconds: float = 0.0
    blocked_episodes: int = 0
    behind_since: float | None = None  # a ``latest`` merging episode under way
    dropping: bool = False
    stalled: bool = False
    last_progress: float = 0.0
    busy_since: float | None = None
    busy_hook: str | None = None
    slow_reported: bool = False
    idle_pending: bool = False  # delivered something since the last on_idle

    def __len__(self) -> int:
        return len(self.backlog) if self.backlog is not None else len(self.queue)

    def stats(self, now: float) -> dict[str, Any]:
        blocked = self.blocked_seconds
        if self.blocked_since is not None:
            blocked += now - self.blocked_since
        return {
            "policy": self.policy,
            "published": self.published,
            "delivered": self.delivered,
            "errors": self.errors,
            "merged": self.merged,
            "summarised": self.summarised,
            "dropped": self.dropped,
            "queued": len(self),
            "peak": max(self.peak, len(self)),
            "stalled": self.stalled,
            "blocked_episodes": self.blocked_episodes,
            "blocked_seconds": round(blocked, 3),
        }


class Dispatcher:
    """Delivers hook calls to every subscribed plugin through its own queue."""

    def __init__(
        self,
        impls: list[tuple[str, str, HookImpl]],
        *,
        policies: dict[str, DeliveryPolicy] | None = None,
        override: DeliveryPolicy | None = None,
        queue_size: int = DEFAULT_QUEUE_SIZE,
        conflate_after: int = DEFAULT_CONFLATE_AFTER,
        error_burst: int = DEFAULT_ERROR_BURST,
        slow_after: float = DEFAULT_SLOW_AFTER,
        stall_after: float = DEFAULT_STALL_AFTER,
        reporter: Reporter | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.queue_size = queue_size
        self.conflate_after = min(conflate_after, queue_size)
        self.error_burst = error_burst
        self.slow_after = slow_after
        self.stall_after = stall_after
        self._reporter = reporter
        self._clock = clock
        self._subscribers: dict[str, Subscriber] = {}
        self._by_hook: dict[str, list[Subscriber]] = {}
        self._watchdog: asyncio.Task[None] | None = None
        self._tokens = itertools.count()
        #: plugins ingestion waits for; :meth:`writable` is set while there are none
        self._full: set[str] = set()
        self._writable: asyncio.Event | None = None
        policies = policies or {}
        for plugin_name, hook, impl in impls:
            sub = self._subscribers.get(plugin_name)
            if sub is None:
                # ``override``: replay gives every plugin every call, as fast as the
                # slowest takes them (offline, nothing is gained by merging)
                policy = override or policies.get(plugin_name, "latest")
                limit = queue_size if policy == "all" else self.conflate_after
                sub = self._subscribers[plugin_name] = Subscriber(plugin_name, {}, policy, limit)
            sub.impls[hook] = _Impl(
                impl.function,
                tuple(impl.argnames),
                asyncio.iscoroutinefunction(impl.function),
            )
            if hook != "on_idle":  # called by the worker when the queue drains, never queued
                self._by_hook.setdefault(hook, []).append(sub)

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        """Start one worker per plugin (call from the running loop)."""
        loop = asyncio.get_running_loop()
        self._writable = asyncio.Event()
        self._writable.set()
        now = self._clock()
        for sub in self._subscribers.values():
            sub.last_progress = now
            if any(not impl.is_async for impl in sub.impls.values()):
                sub.thread = _Thread(sub.name)
            sub.task = loop.create_task(self._work(sub), name=f"bitmusa-plugin:{sub.name}")
        if self._subscribers and (self.slow_after > 0 or self.stall_after > 0):
            self._watchdog = loop.create_task(self._watch(), name="bitmusa-plugin:watchdog")

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
        return all(not len(s) and s.busy_since is None for s in self._subscribers.values())

    async def close(self, timeout: float = 1.0) -> None:
        """Drain for up to ``timeout`` seconds, then stop every worker."""
        await self.drain(timeout)
        tasks = [s.task for s in self._subscribers.values() if s.task is not None]
        if self._watchdog is not None:
            tasks.append(self._watchdog)
        for task in tasks:
            task.cancel()
        for sub in self._subscribers.values():
            hooks = Counter(call[0] for call in self._calls(sub) if call[0] != MARK)
            if hooks:  # one line per plugin, however far behind it was
                summary = ", ".join(f"{n} {hook}" for hook, n in sorted(hooks.items()))
                log.warning("plugin %s: not delivered before shutdown: %s", sub.name, summary)
            if sub.thread is not None:
                sub.thread.stop()
        self._full.clear()
        if self._writable is not None:
            self._writable.set()  # nobody waits for a stopped dispatcher
        if tasks:
            await asyncio.wait(tasks, timeout=0.5)

    # -- delivery -------------------------------------------------------------------------

    def has_subscribers(self, hook: str) -> bool:
        return hook in self._by_hook

    @property
    def blocked(self) -> bool:
        """A lossless plugin's queue is full: ingestion should wait for :meth:`writable`."""
        return bool(self._full)

    async def writable(self) -> None:
        """Return when no plugin holds ingestion (at once when none does)."""
        if self._full and self._writable is not None:
            await self._writable.wait()

    def publish(self, hook: str, kwargs: dict[str, Any]) -> None:
        """Queue ``hook(**kwargs)`` for every plugin implementing it. Never blocks and never
        drops: a caller that produces without end (a socket reader) awaits
        :meth:`writable` when :attr:`blocked` says so."""
        subs = self._by_hook.get(hook)
        if not subs:
            return
        last = len(subs) - 1
        plan = copy_plan(kwargs) if last else ()
        for i, sub in enumerate(subs):
            # the last subscriber gets the original, the others a private copy
            args = kwargs if i == last else clone(kwargs, plan)
            sub.published += 1
            if sub.backlog is not None:
                self._queue_behind(sub, hook, args)
                continue
            queue = sub.queue
            queue.append((hook, args))
            n = len(queue)
            if n == 1:
                sub.wakeup.set()
            elif n >= sub.limit:
                self._pressure(sub)

    def subscribed(self, plugin: str) -> bool:
        """Is ``plugin`` one of the plugins delivered to?"""
        return plugin in self._subscribers

    def mark(self, plugin: str, callback: Callable[[], None]) -> None:
        """Run ``callback`` on the loop when ``plugin``'s worker reaches this point of its
        queue: after every call published to it before, before any published after. At
        once if the plugin is not subscribed (nothing was published to it)."""
        sub = self._subscribers.get(plugin)
        if sub is None:
            callback()
            return
        if MARK not in sub.impls:
            sub.impls[MARK] = _Impl(_run_mark, ("callback",), True)
        args = {"callback": callback}
        if sub.backlog is not None:  # never merged (not a state), nor dropped
            sub.backlog[("event", next(self._tokens))] = (MARK, args)
        else:
            sub.queue.append((MARK, args))
        sub.wakeup.set()

    def stats(self) -> dict[str, dict[str, Any]]:
        now = self._clock()
        return {name: sub.stats(now) for name, sub in self._subscribers.items()}

    def backlog(self) -> int:
        """The longest queue, in calls."""
        return max((len(s) for s in self._subscribers.values()), default=0)

    # -- falling behind -------------------------------------------------------------------

    def _pressure(self, sub: Subscriber) -> None:
        """``sub``'s queue reached its limit: merge (``latest``) or hold ingestion (``all``)."""
        if sub.policy == "all":
            sub.peak = max(sub.peak, len(sub.queue))
            self._block(sub)
            return
        # latest: from now on the queue is keyed by object, until it drains
        sub.backlog = OrderedDict()
        sub.unmergeable = sub.errors_queued = 0
        calls = list(sub.queue)
        sub.queue.clear()
        for hook, args in calls:
            self._queue_behind(sub, hook, args)
        sub.behind_since = self._clock()
        message = (
            f"plugin {sub.name!r} fell {sub.limit} calls behind: until it catches up, a newer "
            "state of an order, position or balance replaces the one queued for it (delivery "
            "policy 'latest')"
        )
        log.warning(message)
        self._report(error_info("plugin_behind", message, plugin=sub.name), None)

    def _queue_behind(self, sub: Subscriber, hook: str, args: dict[str, Any]) -> None:
        """Queue one call for a ``latest`` plugin that is behind."""
        backlog = sub.backlog
        assert backlog is not None
        key = state_key(hook, args) if hook in STATE_HOOKS else None
        if key is not None:
            if backlog.pop(key, None) is not None:
                sub.merged += 1  # the newer state goes in at its own place
            backlog[key] = (hook, args)
        elif hook == "on_error" and sub.errors_queued >= self.error_burst:
            error = args["error"]
            sub.suppressed[error["kind"]] += error.get("count", 1)
            sub.summarised += 1
        else:
            if sub.unmergeable >= self.queue_size:
                if sub.stalled:
                    self._drop(sub, hook)
                    return
                self._block(sub)
            backlog[("event", next(self._tokens))] = (hook, args)
            sub.unmergeable += 1
            if hook == "on_error":
                sub.errors_queued += 1
        n = len(backlog)
        sub.peak = max(sub.peak, n)
        if n == 1:
            sub.wakeup.set()

    def _block(self, sub: Subscriber) -> None:
        if sub.blocking or sub.stalled:
            return
        sub.blocking = True
        sub.blocked_since = self._clock()
        sub.blocked_episodes += 1
        self._full.add(sub.name)
        if self._writable is not None:
            self._writable.clear()
        if sub.blocked_episodes == 1:  # the first time; stats() counts every episode
            log.info(
                "plugin %s is %d calls behind (delivery policy %r): ingestion waits for it",
                sub.name,
                len(sub),
                sub.policy,
            )

    def _unblock(self, sub: Subscriber) -> None:
        sub.blocking = False
        if sub.blocked_since is not None:
            sub.blocked_seconds += self._clock() - sub.blocked_since
            sub.blocked_since = None
        self._full.discard(sub.name)
        if not self._full and self._writable is not None:
            self._writable.set()

    def _drop(self, sub: Subscriber, hook: str) -> None:
        sub.dropped += 1
        if not sub.dropping:
            sub.dropping = True
            message = (
                f"plugin {sub.name!r} stalled and is {self.queue_size} events behind: its "
                f"events beyond that are dropped and counted (first: {hook}); states still "
                "merge, so it keeps the final state of every object"
            )
            log.warning(message)
            self._report(error_info("queue_overflow", message, plugin=sub.name), None)

    def _stall(self, sub: Subscriber, now: float) -> None:
        sub.stalled = True
        was = sub.policy
        sub.policy = "latest"
        sub.limit = min(sub.limit, self.conflate_after)
        if sub.blocking:
            self._unblock(sub)
        message = (
            f"plugin {sub.name!r} made no progress for {now - sub.last_progress:.0f} s with "
            f"{len(sub)} calls queued (in {sub.busy_hook or 'its queue'}): switched from "
            f"delivery policy {was!r} to 'latest' for the rest of the run; it no longer "
            "holds ingestion"
        )
        log.error(message)
        self._report(error_info("plugin_stalled", message, plugin=sub.name), None)
        if sub.backlog is None and len(sub.queue) >= sub.limit:
            self._pressure(sub)

    def _report(self, error: ErrorInfo, event: Any) -> None:
        if self._reporter is not None:
            self._reporter(error, event)

    # -- the worker -----------------------------------------------------------------------

    def _calls(self, sub: Subscriber) -> Iterator[Call]:
        return iter(sub.backlog.values()) if sub.backlog is not None else iter(sub.queue)

    def _peek_async(self, sub: Subscriber) -> bool:
        """Is the next queued call for an async implementation?"""
        hook = sub.queue[0][0] if sub.backlog is None else next(iter(sub.backlog.values()))[0]
        return sub.impls[hook].is_async

    def _pop(self, sub: Subscriber) -> Call:
        backlog = sub.backlog
        if backlog is None:
            return sub.queue.popleft()
        key, call = backlog.popitem(last=False)
        if key[0] == "event" and call[0] != MARK:
            sub.unmergeable -= 1
            if call[0] == "on_error":
                sub.errors_queued -= 1
        return call

    def _caught_up(self, sub: Subscriber) -> None:
        """``sub``'s queue is empty: end a merging episode (its summary goes out first)."""
        sub.dropping = False
        if sub.backlog is not None:
            sub.backlog = None
            sub.unmergeable = sub.errors_queued = 0
            since = sub.behind_since or self._clock()
            log.warning(
                "plugin %s caught up after %.1f s; %d queued states were replaced by newer ones",
                sub.name,
                self._clock() - since,
                sub.merged,
            )
            sub.behind_since = None
            for kind, count in sorted(sub.suppressed.items()):
                message = f"{count} more {kind} while plugin {sub.name!r} was behind"
                summary = error_info(kind, message, plugin=sub.name)
                summary["count"] = count
                sub.queue.append(("on_error", {"error": summary, "event": None}))
            sub.suppressed.clear()

    def _progress(self, sub: Subscriber) -> None:
        """A call finished while ``sub`` holds ingestion: let go at half the bound."""
        if sub.blocking:
            # resume ingestion at half the bound, not at every call: readers wake in bursts
            held = sub.unmergeable if sub.backlog is not None else len(sub.queue)
            if held <= self.queue_size // 2:
                self._unblock(sub)

    async def _work(self, sub: Subscriber) -> None:
        # The hot path (a plugin that keeps up) is inlined on purpose: a nested coroutine
        # per call cost about 2 µs an event (bench_dispatch, 1 async plugin).
        queue = sub.queue
        clock = self._clock
        while True:
            if sub.backlog is None:
                if not queue:
                    await self._idle(sub)
                    continue
                hook, kwargs = queue.popleft()
            elif sub.backlog:
                hook, kwargs = self._pop(sub)
            else:
                await self._idle(sub)
                continue
            impl = sub.impls[hook]
            now = clock()
            sub.busy_since = sub.last_progress = now
            sub.busy_hook, sub.slow_reported = hook, False
            if impl.is_async:
                try:
                    await impl.function(*[kwargs[a] for a in impl.argnames])
                except asyncio.CancelledError:
                    raise
                except BaseException as exc:  # SystemExit from a plugin stops only its call
                    self._failed(sub, hook, kwargs, exc)
                else:
                    if hook != MARK:
                        sub.delivered += 1
            else:
                batch = [(hook, kwargs)]
                while len(batch) < SYNC_BATCH and len(sub) and not self._peek_async(sub):
                    batch.append(self._pop(sub))
                await self._run_sync(sub, batch)
            sub.busy_since = None
            if hook != MARK:  # a mark is not a call: no on_idle for it
                sub.idle_pending = True
            if sub.blocking:
                self._progress(sub)

    async def _idle(self, sub: Subscriber) -> None:
        """``sub``'s queue is empty: end a merging episode (its summary is queued), tell
        the plugin (``on_idle``) once after a burst, then sleep until the next call."""
        self._caught_up(sub)
        if sub.queue:
            return  # the summary of what was left out while behind
        if sub.idle_pending and "on_idle" in sub.impls:
            sub.idle_pending = False
            impl = sub.impls["on_idle"]
            sub.busy_since = sub.last_progress = self._clock()
            sub.busy_hook, sub.slow_reported = "on_idle", False
            if impl.is_async:
                try:
                    await impl.function()
                except asyncio.CancelledError:
                    raise
                except BaseException as exc:
                    self._failed(sub, "on_idle", {}, exc)
            else:
                await self._run_sync(sub, [("on_idle", {})])
            sub.busy_since = None
            return
        sub.wakeup.clear()
        await sub.wakeup.wait()

    async def _run_sync(self, sub: Subscriber, batch: list[Call]) -> None:
        """Run consecutive sync calls as one batch in the plugin's thread."""
        assert sub.thread is not None
        results = await sub.thread.submit(lambda: _run_batch(sub, batch, self._clock))
        for (hook, kwargs), failure in zip(batch, results, strict=True):
            if failure is not None:
                self._failed(sub, hook, kwargs, failure)
            elif hook != "on_idle":
                sub.delivered += 1

    def _failed(
        self, sub: Subscriber, hook: str, kwargs: dict[str, Any], exc: BaseException
    ) -> None:
        sub.errors += 1
        message = f"plugin {sub.name!r} raised in {hook}: {type(exc).__name__}: {exc}"
        log.error(message, exc_info=(type(exc), exc, exc.__traceback__))
        if hook != "on_error":  # an on_error handler that raises is logged, never re-sent
            self._report(error_info("plugin_error", message, plugin=sub.name), kwargs.get("event"))

    async def _watch(self) -> None:
        intervals = [t / 2 for t in (self.slow_after, self.stall_after) if t > 0]
        interval = min(max(min(intervals), 0.05), 1.0)
        while True:
            await asyncio.sleep(interval)
            self.check(self._clock())

    def check(self, now: float) -> None:
        """The watchdog's rounds (run every second or so; tests call it on a fake clock):
        report a handler running longer than ``slow_after`` (once per call), and stall a
        plugin whose handler has made no progress for ``stall_after``."""
        for sub in self._subscribers.values():
            since = sub.busy_since
            if since is None:
                continue  # not running a handler: its worker is on its way
            if self.slow_after > 0 and not sub.slow_reported and now - since > self.slow_after:
                sub.slow_reported = True
                message = (
                    f"plugin {sub.name!r} has been running {sub.busy_hook} for more than "
                    f"{self.slow_after:g} s; its later events wait in its own queue"
                )
                log.warning(message)
                self._report(error_info("plugin_slow", message, plugin=sub.name), None)
            if (
                self.stall_after > 0
                and not sub.stalled
                and now - sub.last_progress > self.stall_after
            ):
                self._stall(sub, now)


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


def _run_batch(
    sub: Subscriber, batch: list[Call], clock: Callable[[], float]
) -> list[BaseException | None]:
    """Run consecutive sync calls in the plugin's thread; collect each call's outcome.
    Each finished call is progress (a slow plugin working through a batch is not stalled)."""
    results: list[BaseException | None] = []
    for hook, kwargs in batch:
        impl = sub.impls[hook]
        try:
            impl.function(*[kwargs[a] for a in impl.argnames])
        except BaseException as exc:  # even SystemExit: it must not end the thread
            results.append(exc)
        else:
            results.append(None)
        sub.last_progress = clock()
    return results


async def _run_mark(callback: Callable[[], None]) -> None:
    callback()
