"""The one way in: a :class:`Session` owns everything a run of the engine shares.

Shaped like ``httpx.AsyncClient`` (one object owns the pool, the TLS context, the limits and
the shutdown; everything else borrows from it)::

    async with Session([MyPlugin()]) as session:
        session.add(AccountConfig("main", Credentials.from_env("API", "AUTH")))
        await session.wait()

It owns the plugin registry, the pipeline (decode, map, deliver), one REST connection pool
with the process's one verifying TLS context, the REST rate limiter the accounts share, and
the shutdown: leaving the ``async with`` stops every stream (each DELETEs its listenKey
unless told to keep it), delivers what is queued, sends ``on_shutdown`` and closes the pool,
in under two seconds even offline. The CLI, the ccxt drop-in, worker mode, replay and the
test helpers all go through it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import signal
import time
from collections.abc import Callable, Coroutine, Iterable, Mapping
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, Any

from bitmusa_hookspecs import DeliveryPolicy
from bitmusa_plugin._core import machine as lc
from bitmusa_plugin._core.fills import CloseSide
from bitmusa_plugin._engine.dispatch import (
    DEFAULT_CONFLATE_AFTER,
    DEFAULT_ERROR_BURST,
    DEFAULT_QUEUE_SIZE,
    DEFAULT_SLOW_AFTER,
    DEFAULT_STALL_AFTER,
)
from bitmusa_plugin._engine.history import DEFAULT_HISTORY_BUDGET
from bitmusa_plugin._engine.limiter import RateLimiter
from bitmusa_plugin._engine.pipeline import Pipeline
from bitmusa_plugin._engine.plugins import PluginRegistry
from bitmusa_plugin._engine.sides import DEFAULT_SIDE_WAIT

if TYPE_CHECKING:  # httpx and websockets load when a stream starts: replay never needs them
    import httpx

    from bitmusa_plugin._engine.public import PublicConfig, PublicHub
    from bitmusa_plugin._engine.rest import AccountClient
    from bitmusa_plugin._engine.stream import AccountConfig, AccountStream, Heartbeat

log = logging.getLogger(__name__)

#: Bitmusa's documented REST allowance: per second, per minute.
DOCUMENTED_RATE = (8, 200)
#: ``(source, event, text)``: see :attr:`Session.frame_trace`
FrameTrace = Callable[[str, str, "str | None"], None]


@dataclass(frozen=True)
class DeliveryOptions:
    """How plugins get their calls (docs/plugins.md, "Delivery policies")."""

    queue_size: int = DEFAULT_QUEUE_SIZE
    conflate_after: int = DEFAULT_CONFLATE_AFTER
    error_burst: int = DEFAULT_ERROR_BURST
    slow_after: float = DEFAULT_SLOW_AFTER
    stall_after: float = DEFAULT_STALL_AFTER
    #: give every plugin this policy whatever it declares (replay: ``"all"``)
    override: DeliveryPolicy | None = None


@dataclass
class RunResult:
    """How a run ended: the accounts that failed for good, with the reason."""

    failed: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.failed


class Session:
    """Plugins, delivery, one REST pool and TLS context, the shared limiter, shutdown.

    ``plugins`` are plugin objects (named after their class, or ``__name__`` for a module),
    a mapping of name to plugin, or a :class:`PluginRegistry` built elsewhere (the CLI's,
    with the installed entry points). ``rest_rate`` is the REST allowance every account of
    the session shares (``limiter`` to share one across sessions). ``history_budget``: how
    long, in seconds, a gap's trade-history read may take (docs/stream.md, resync);
    ``side_wait``: how long an order another client placed may wait for its side, the
    account's other objects flowing on past it (0, the default: it goes out at once with
    side None; docs/hooks.md, on_order)."""

    def __init__(
        self,
        plugins: Iterable[object] | Mapping[str, object] | PluginRegistry = (),
        *,
        command: str = "session",
        accounts: Iterable[AccountConfig] = (),
        rest_rate: tuple[int, int] = DOCUMENTED_RATE,
        limiter: RateLimiter | None = None,
        timing: lc.Timing | None = None,
        heartbeat: Heartbeat | None = None,
        resync: bool = True,
        keep_listen_key: bool = False,
        record: IO[str] | None = None,
        markets: Mapping[str, str] | None = None,
        close_side: CloseSide = "trade",
        delivery: DeliveryOptions | None = None,
        rest_timeout: float = 10.0,
        open_timeout: float = 10.0,
        connections: int = 16,
        history_budget: float = DEFAULT_HISTORY_BUDGET,
        side_wait: float = DEFAULT_SIDE_WAIT,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.registry = _registry(plugins)
        self.command = command
        self.timing = timing
        self.heartbeat = heartbeat
        self.resync = resync
        self.keep_listen_key = keep_listen_key
        self.record = record
        self.rest_timeout = rest_timeout
        self.open_timeout = open_timeout
        self.history_budget = history_budget
        self.side_wait = side_wait
        self.limiter = limiter or RateLimiter(((rest_rate[0], 1.0), (rest_rate[1], 60.0)))
        d = delivery or DeliveryOptions()
        self.pipeline = Pipeline(
            self.registry,
            command=command,
            markets=markets,
            close_side=close_side,
            queue_size=d.queue_size,
            conflate_after=d.conflate_after,
            error_burst=d.error_burst,
            slow_after=d.slow_after,
            stall_after=d.stall_after,
            policy_override=d.override,
            clock=wall,
            monotonic=clock,
        )
        self.streams: dict[str, AccountStream] = {}
        #: ``frame_trace(source, event, text)``: every websocket's events (``connected``,
        #: ``message`` with the frame's text, ``on_close`` with the reason), ``source``
        #: ``user:<account>`` for a user stream (any other stream of the session calls it
        #: too, with its own source). ccxt.pro's ``verbose`` sets it; set it before
        #: streams are added. It must not raise; the text is as received (mask it).
        self.frame_trace: FrameTrace | None = None
        self._initial = list(accounts)
        self._connections = connections
        self._clock = clock
        self._wall = wall
        self._http: httpx.AsyncClient | None = None
        self._tasks: dict[str, asyncio.Task[lc.Finish]] = {}
        self._clients: dict[str, AccountClient] = {}
        self._started = False
        self._closed = False

    def __repr__(self) -> str:
        return f"Session({self.command!r}, accounts={sorted(self.streams)})"

    # -- lifecycle --------------------------------------------------------------------------

    async def __aenter__(self) -> Session:
        self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def start(self, replaying: Iterable[str] = ()) -> None:
        """Start delivery (``on_startup``, naming the accounts given to the constructor and
        those ``replaying``) and stream the accounts given. Call on the running loop;
        ``async with`` does it (a second call does nothing)."""
        if self._started:
            return
        self._started = True
        self.pipeline.start([a.label for a in self._initial] + list(replaying))
        for config in self._initial:
            self.add(config)

    @property
    def http(self) -> httpx.AsyncClient:
        """The session's one REST pool (verifying TLS, the process's one context)."""
        if self._http is None:
            from bitmusa_plugin._engine.rest import http_client

            self._http = http_client(self.rest_timeout, connections=self._connections)
        return self._http

    def add(
        self,
        config: AccountConfig,
        *,
        resume_since_ms: int | None = None,
        keep_listen_key: bool | None = None,
    ) -> AccountStream:
        """Start streaming one account. ``resume_since_ms``: taking over from another
        process whose last delivered event was then (the first connection reports that
        gap). Returns the stream (``status``, ``stats()``)."""
        from bitmusa_plugin._engine.stream import AccountStream

        if config.label in self.streams:
            raise ValueError(f"account {config.label!r} is streaming already")
        self.start()
        stream = AccountStream(
            config,
            self.pipeline,
            timing=self.timing,
            heartbeat=self.heartbeat,
            keep_listen_key=self.keep_listen_key if keep_listen_key is None else keep_listen_key,
            resync=self.resync,
            limiter=self.limiter,
            http=self.http,
            open_timeout=self.open_timeout,
            rest_timeout=self.rest_timeout,
            record=self.record,
            clock=self._clock,
            wall=self._wall,
            resume_since_ms=resume_since_ms,
            history_budget=self.history_budget,
            side_wait=self.side_wait,
            trace=None
            if self.frame_trace is None
            else functools.partial(self.frame_trace, f"user:{config.label}"),
        )
        self.streams[config.label] = stream
        task = asyncio.get_running_loop().create_task(stream.run(), name=f"bitmusa:{config.label}")
        self._tasks[config.label] = task
        return stream

    def finished(self, label: str) -> asyncio.Task[lc.Finish]:
        """The task of ``label``'s stream: done when it ended (stopped or failed)."""
        return self._tasks[label]

    async def remove(self, label: str, timeout: float = 5.0) -> lc.Finish | None:
        """Stop one account's stream and wait for it (up to ``timeout``); how it ended."""
        stream, task = self.streams.pop(label, None), self._tasks.pop(label, None)
        if stream is None or task is None:
            return None
        stream.stop()
        await asyncio.wait({task}, timeout=timeout)
        if not task.done():
            task.cancel()
            await asyncio.wait({task}, timeout=1.0)
        return _outcome(label, task)[1]

    def stop(self) -> None:
        """Ask every stream to stop (safe from a signal handler; idempotent)."""
        for stream in self.streams.values():
            stream.stop()

    async def wait(self) -> RunResult:
        """Until every stream has ended; the accounts that failed, with the reason."""
        tasks = list(self._tasks.values())
        if tasks:
            await asyncio.wait(tasks)
        return self._result()

    async def run(
        self,
        *,
        until: Callable[[list[AccountStream]], Coroutine[Any, Any, Any]] | None = None,
        stop_on: asyncio.Event | None = None,
        handle_signals: bool = False,
    ) -> RunResult:
        """Stream until a signal (with ``handle_signals``), ``until(streams)`` returning,
        ``stop_on`` being set (the output was closed), or every stream ending."""
        loop = asyncio.get_running_loop()
        installed: list[signal.Signals] = []
        if handle_signals:
            for sig in (signal.SIGINT, signal.SIGTERM):
                with contextlib.suppress(NotImplementedError, RuntimeError):
                    loop.add_signal_handler(sig, self.stop)
                    installed.append(sig)
        waits: list[asyncio.Task[Any]] = []
        if until is not None:
            waits.append(loop.create_task(until(list(self.streams.values()))))
        if stop_on is not None:
            waits.append(loop.create_task(stop_on.wait()))
        try:
            pending: set[asyncio.Future[Any]] = {*self._tasks.values(), *waits}
            while any(not t.done() for t in self._tasks.values()):
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for task in [w for w in waits if w in done]:
                    if not task.cancelled() and task.exception() is not None:
                        log.error("the run's script failed", exc_info=task.exception())
                    self.stop()  # the script is over (or broken): stop cleanly either way
                    waits.remove(task)
        finally:
            for sig in installed:
                loop.remove_signal_handler(sig)
            for task in waits:
                task.cancel()
        return self._result()

    async def aclose(self) -> None:
        """Stop every stream, deliver what is queued, ``on_shutdown``, close the pool."""
        if self._closed:
            return
        self._closed = True
        self.stop()
        tasks = list(self._tasks.values())
        if tasks:
            await asyncio.wait(tasks, timeout=3.0)
            for task in tasks:
                if not task.done():
                    task.cancel()
            await asyncio.wait(tasks, timeout=1.0)
        if self._started:
            await self.pipeline.dispatcher.drain(1.0)
            await self.pipeline.stop(timeout=0.5)
        for client in self._clients.values():
            await client.aclose()
        if self._http is not None:
            from bitmusa_plugin._engine.rest import close_pool

            await close_pool(self._http)

    # -- borrowing the session's resources -----------------------------------------------

    def public(self, config: PublicConfig) -> PublicHub:
        """The public market stream for ``config``: one per process and event loop, shared
        by every session and subscriber (``_engine/public.py``). Lazy: nothing connects
        before the first subscription, and it never spends the REST allowance."""
        from bitmusa_plugin._engine.public import hub_for

        return hub_for(config)

    def account_client(self, config: AccountConfig) -> AccountClient:
        """A REST client for ``config``'s account on the session's pool and limiter."""
        from bitmusa_plugin._engine.rest import AccountClient

        client = self._clients.get(config.label)
        if client is None:
            client = self._clients[config.label] = AccountClient(
                config.credentials,
                config.rest_url,
                timeout=self.rest_timeout,
                limiter=self.limiter,
                client=self.http,
            )
        return client

    # -- replay -----------------------------------------------------------------------------

    def ingest(self, account: str, raw: str | bytes, received_at: int | None = None) -> bool:
        """Feed one recorded frame through the same path live frames take; False when it
        was rejected (and reported). Await :meth:`writable` when :attr:`blocked`."""
        return self.pipeline.ingest(account, raw, received_at)

    @property
    def blocked(self) -> bool:
        """A lossless plugin is a whole queue behind: a producer should wait."""
        return self.pipeline.dispatcher.blocked

    async def writable(self) -> None:
        """Return when no plugin holds ingestion."""
        await self.pipeline.dispatcher.writable()

    async def drain(self, timeout: float | None = None) -> bool:
        """Wait until every plugin has handled everything queued; False on timeout."""
        return await self.pipeline.dispatcher.drain(timeout)

    def stats(self) -> dict[str, Any]:
        """Every counter: per account and per plugin (``Pipeline.stats``), and per stream."""
        return {
            **self.pipeline.stats(),
            "streams": {label: s.stats() for label, s in self.streams.items()},
        }

    def _result(self) -> RunResult:
        failed = {}
        for label, task in self._tasks.items():
            reason, finish = _outcome(label, task)
            if reason is not None:
                failed[label] = reason
            elif finish is not None and finish.failed:
                failed[label] = finish.reason
        return RunResult(failed)


def _outcome(label: str, task: asyncio.Task[lc.Finish]) -> tuple[str | None, lc.Finish | None]:
    """(an internal failure's reason, or None; how the stream ended, or None)."""
    if not task.done() or task.cancelled():
        return None, None
    exc = task.exception()
    if exc is not None:  # a bug of ours: report it as a failure, never a traceback dump
        log.error("%s: the stream crashed", label, exc_info=exc)
        return f"internal error: {exc!r}", None
    return None, task.result()


def _registry(plugins: Iterable[object] | Mapping[str, object] | PluginRegistry) -> PluginRegistry:
    if isinstance(plugins, PluginRegistry):
        return plugins
    registry = PluginRegistry(strict=True)  # a plugin given by code that fails is a bug
    items = plugins.items() if isinstance(plugins, Mapping) else ((_name(p), p) for p in plugins)
    for name, plugin in items:
        registry.register(plugin, name)
    return registry


def _name(plugin: object) -> str:
    name = getattr(plugin, "__name__", None)  # a module, or a class given uninstantiated
    return name if isinstance(name, str) else type(plugin).__name__
