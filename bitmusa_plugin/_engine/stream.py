"""The asyncio shell of one account's stream: sockets, tasks and timers, nothing else.

Every decision lives in :class:`~bitmusa_plugin._core.machine.AccountMachine`; this module
feeds it what happened (REST answers, connections opening and closing, each frame, readers
pausing for backpressure) and carries out the actions it returns, with a ``match`` that
ends in ``assert_never``. Per account there is one supervisor task (the machine's loop), at
most two connection tasks (two only during a rotation), a resync task while a snapshot is
fetched, and one REST call at a time per kind. A frame goes from its connection's reader
through ``machine.frame`` straight to the pipeline, never through the supervisor.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Any

import httpx
import websockets
from typing_extensions import assert_never
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed, InvalidStatus

from bitmusa_hookspecs import StreamState, error_info
from bitmusa_plugin._core import machine as lc
from bitmusa_plugin._core import resync, urls
from bitmusa_plugin._core.errors import BitmusaError, Failure
from bitmusa_plugin._engine.aio import within
from bitmusa_plugin._engine.history import DEFAULT_HISTORY_BUDGET, GapHistory, read_gap_history
from bitmusa_plugin._engine.inbox import Inbox
from bitmusa_plugin._engine.limiter import RateLimiter
from bitmusa_plugin._engine.pipeline import Pipeline
from bitmusa_plugin._engine.rest import (
    DEFAULT_REST_URL,
    AccountClient,
    ListenKeyClient,
    http_client,
    network_reason,
    tls_context,
)
from bitmusa_plugin._engine.secrets import (
    REDACTOR,
    Credentials,
    RedactingLogger,
    redact,
    require_secure,
)
from bitmusa_plugin._engine.sides import DEFAULT_SIDE_WAIT, SideGate, rest_lookup

log = logging.getLogger(__name__)

DEFAULT_WS_URL = "wss://websocket.bitmusa.com:60002"
#: How long a stopping stream waits for the server's close while it delivers what it
#: still reads (the closing handshake; the worker's self-fence leaves a tick after it)
CLOSE_DRAIN_TIMEOUT = 0.5
#: websockets closes a connection on a frame larger than this (1009); our own, smaller
#: limit (``wire.DEFAULT_MAX_FRAME_BYTES``) rejects and reports a frame and goes on.
WS_MAX_FRAME_BYTES = 1 << 20
#: GET wallet, positions and open orders
SNAPSHOT_CALLS = 3
#: how far before a gap's start its trade history is read: its times are whole seconds
GAP_HISTORY_MARGIN_MS = 5_000
#: ``--record`` reaches the disk this soon after a frame, seconds.
RECORD_FLUSH_INTERVAL = 0.1
_WS_LOGGER = RedactingLogger(logging.getLogger("websockets.client"), {})
#: The jitter of every stream's timers (keep-alive, reconnect backoff, rotation): one
#: generator for the process, not one each (a ``random.Random`` holds 2.9 KiB of state,
#: a tenth of an idle stream). Not a secret: it only spreads deadlines.
_JITTER = random.Random()

Event = Callable[[float], list[lc.Action]]


#: what a probe's ping may take to be sent, beyond its wait for the pong (seconds)
PING_SEND = 0.5


@dataclass(frozen=True)
class Heartbeat:
    """Protocol pings: a connection whose pong does not arrive within ``timeout`` after a
    ping sent every ``interval`` is dead (about 40 s with the defaults). A quiet account is
    not: the server answers pings whether or not it has events to send."""

    interval: float = 20.0
    timeout: float = 20.0

    def scaled(self, factor: float) -> Heartbeat:
        return Heartbeat(self.interval / factor, self.timeout / factor)


#: The defaults, one for the process: both are frozen, and a stream made without them held
#: its own copy of each (0.4 KiB with their dicts, issue 21). A session passes its own.
_HEARTBEAT = Heartbeat()
_TIMING = lc.Timing()


@dataclass
class AccountConfig:
    """One account to stream. ``credentials`` never appear in a repr.

    ``ws_path`` and ``keepalive_prefix`` are the API's two open readings (the user stream at
    ``/ws/future/<key>`` or ``/ws/future/wallet/<key>``; PUT/DELETE of the key under
    ``/api/v2`` or ``/api/v1``); with ``fallback``, a 404 from the one configured makes the
    stream try the other once (``_core/urls.py``)."""

    label: str
    credentials: Credentials
    rest_url: str = DEFAULT_REST_URL
    ws_url: str = DEFAULT_WS_URL
    insecure: bool = False  # allow plaintext to a host other than this machine
    ws_path: urls.WsPath = "documented"
    keepalive_prefix: urls.KeepalivePrefix = "v2"
    fallback: bool = True

    def __post_init__(self) -> None:
        urls.check_url(self.rest_url, "rest")
        urls.check_url(self.ws_url, "ws")
        if self.ws_path not in urls.WS_PATHS:
            raise urls.UrlError(f"ws_path {self.ws_path!r}: one of {', '.join(urls.WS_PATHS)}")
        if self.keepalive_prefix not in urls.KEEPALIVE_PREFIXES:
            raise urls.UrlError(
                f"keepalive_prefix {self.keepalive_prefix!r}: one of "
                f"{', '.join(urls.KEEPALIVE_PREFIXES)}"
            )
        require_secure(self.rest_url, insecure=self.insecure)
        require_secure(self.ws_url, insecure=self.insecure)


@dataclass(slots=True)
class _Connection:
    conn_id: int
    task: asyncio.Task[None] | None = None
    ws: ClientConnection | None = None
    planned_close: bool = False
    last_alive: float = 0.0
    resync: asyncio.Task[None] | None = None
    #: the heartbeat between pings is a timer, not a sleeping task: a task, its coroutine
    #: and its sleep held 1.9 KiB of every idle stream (issue 21); a ping is a task while
    #: its pong is awaited
    beat: asyncio.TimerHandle | None = None
    ping: asyncio.Task[None] | None = None
    #: the reader waits for a lossless plugin (backpressure): it reads nothing meanwhile,
    #: pongs included, so the heartbeat does not count that time against the link
    paused: bool = False
    pauses: int = 0
    #: closing on a stop: every frame read until the server's close is delivered
    draining: bool = False


class AccountStream:
    """Streams one account into a :class:`~bitmusa_plugin._engine.pipeline.Pipeline` until
    stopped. ``http`` (a shared pool) and ``limiter`` come from the session; without them
    the stream has its own."""

    # Slots, not an instance dict: about 30 fields, 1 KiB of dict an idle stream (issue 21)
    __slots__ = (
        "_clock",
        "_conns",
        "_creating",
        "_http",
        "_inbox",
        "_logged",
        "_owns_http",
        "_record_flush",
        "_rest_tasks",
        "_wall",
        "_ws_settled",
        "account",
        "config",
        "gap_delivered",
        "heartbeat",
        "history_budget",
        "last_error",
        "listen_key",
        "machine",
        "open_timeout",
        "pipeline",
        "reason",
        "record",
        "result",
        "resume_since_ms",
        "side_wait",
        "snapshots",
        "status",
        "trace",
        "ws_path",
    )

    #: ``gap_delivered(since_ms)``, called once a gap's resync has published every record
    #: it has (what it recovered of the gap since then): the worker's sink learns, in its
    #: queue's order, when a takeover may resume past that gap (``_scale/worker.py``);
    #: None (the default) for a stream nobody hands over
    gap_delivered: Callable[[int], None] | None

    def __init__(
        self,
        config: AccountConfig,
        pipeline: Pipeline,
        *,
        timing: lc.Timing | None = None,
        heartbeat: Heartbeat | None = None,
        keep_listen_key: bool = False,
        resync: bool = True,
        limiter: RateLimiter | None = None,
        http: httpx.AsyncClient | None = None,
        rng: random.Random | None = None,
        open_timeout: float = 10.0,
        rest_timeout: float = 10.0,
        record: IO[str] | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        resume_since_ms: int | None = None,
        history_budget: float = DEFAULT_HISTORY_BUDGET,
        side_wait: float = DEFAULT_SIDE_WAIT,
        trace: Callable[[str, str | None], None] | None = None,
    ) -> None:
        self.config = config
        self.gap_delivered = None
        #: how long a gap's trade-history read may take, seconds (its pages are paced by
        #: the shared limiter; past it, what the history did not give is estimated)
        self.history_budget = history_budget
        #: how long this account's events may wait for an unknown order's side, seconds
        #: (``_engine/sides.py``; 0: never wait)
        self.side_wait = side_wait
        #: ``trace(event, text)`` for each websocket event (``connected``, ``message``,
        #: ``on_close``): ccxt.pro's ``verbose`` (the session's ``frame_trace``)
        self.trace = trace
        self.account = config.label
        self.pipeline = pipeline
        self.heartbeat = heartbeat or _HEARTBEAT
        self.machine = lc.AccountMachine(
            timing=timing or _TIMING,
            rng=rng or _JITTER,
            keep_listen_key=keep_listen_key,
            resync=resync,
        )
        # one pool for both clients: the session's, or the stream's own
        self._owns_http = http is None
        self._http = http or http_client(rest_timeout)
        self.listen_key = ListenKeyClient(
            config.credentials,
            config.rest_url,
            keepalive_prefix=config.keepalive_prefix,
            fallback=config.fallback,
            label=config.label,
            timeout=rest_timeout,
            limiter=limiter,
            client=self._http,
        )
        self.snapshots = AccountClient(
            config.credentials,
            config.rest_url,
            timeout=rest_timeout,
            limiter=limiter,
            client=self._http,
            auth=self.listen_key.auth,
        )
        self.open_timeout = open_timeout
        self.record = record
        self.status: str = "idle"
        self.result: lc.Finish | None = None
        #: the last REST failure, for callers that map it (the ccxt drop-in)
        self.last_error: BitmusaError | None = None
        #: the last state's reason (why it is not connected, when it is not), for status
        self.reason: str | None = None
        #: the user stream's path, as configured, or the other reading once it answered
        self.ws_path: urls.WsPath = config.ws_path
        self._ws_settled = False  # a connection opened: the path is known
        self._logged: tuple[str, float] | None = None  # the last retry logged, and when
        self._clock = clock
        self._wall = wall
        #: taking over from another worker: the last event it delivered (wall ms)
        self.resume_since_ms = resume_since_ms
        self._inbox: Inbox[Event] = Inbox()
        self._conns: dict[int, _Connection] = {}
        #: None while no REST call runs (an idle stream): an emptied set stays 216 B
        self._rest_tasks: set[asyncio.Task[None]] | None = None
        self._record_flush: asyncio.TimerHandle | None = None
        self._creating: asyncio.Task[None] | None = None  # the POST under way, if any

    def __repr__(self) -> str:
        return f"AccountStream({self.account!r}, status={self.status!r})"

    # -- public -----------------------------------------------------------------------------

    async def run(self) -> lc.Finish:
        """Run until :meth:`stop` or a permanent failure; returns how it ended."""
        self.pipeline.mapper(self.account)  # registers the account's counters
        if self.side_wait > 0:
            # Without a wait a gate holds nothing (``SideGate.hold``): none is made, and its
            # maps and lookup closure (0.9 KiB) are not kept per idle account (issue 21).
            self.pipeline.side_gates[self.account] = SideGate(
                self.pipeline,
                self.account,
                rest_lookup(self.snapshots, self.pipeline, self.account),
                self.side_wait,
            )
        try:
            now = self._clock()
            since = None
            if self.resume_since_ms is not None:
                since = now - max(0.0, self._wall() - self.resume_since_ms / 1000)
            await self._execute(self.machine.start(now, gap_since=since))
            while self.result is None:
                deadline = self.machine.next_deadline()
                timeout = None if deadline is None else max(0.0, deadline - self._clock())
                event = await self._next_event(timeout)
                now = self._clock()
                actions = event(now) if event is not None else []
                # every event reported so far reaches the machine before it decides on time
                # (a reader that just paused must not see its connection closed under it)
                while not self._inbox.empty():
                    actions += self._inbox.get_nowait()(now)
                actions += self.machine.tick(now)
                await self._execute(actions)
        finally:
            await self._teardown()
        return self.result

    def unfinished_gap_ms(self) -> int | None:
        """The wall ms since which this stream's fills may not all be delivered yet (an
        outage, or a resync not done), or None: where a successor's history read starts
        when this stream hands its account over or dies (worker mode). Before it runs,
        the gap it was added to read (``resume_since_ms``)."""
        if self.machine.phase == "idle" and self.resume_since_ms is not None:
            return self.resume_since_ms
        return self._wall_ms(self.machine.unfinished_gap())

    async def unproven_since_ms(self, timeout: float) -> int | None:
        """Where a successor's history read must start if this stream hands its account
        over now (worker mode): its unfinished gap; else, unless a ping of the delivering
        connection is answered within ``timeout``, the last moment that connection was
        known alive (a link that died silently, not noticed yet, delivers nothing); else
        None. A stream not connected yet has nothing to prove. ``timeout`` 0: no ping
        (there is no time for one), the last sign of life; else the ping's own send takes
        PING_SEND at most on top."""
        gap = self.unfinished_gap_ms()
        if gap is not None:
            return gap
        primary = self.machine.primary
        conn = self._conns.get(primary) if primary is not None else None
        if conn is None or conn.ws is None:
            return None
        if timeout <= 0:
            return self._wall_ms(conn.last_alive)
        ws = conn.ws

        async def answered() -> None:
            await within(await ws.ping(), timeout, cancel=False)

        try:  # the ping's own send (a full socket buffer) counts against the timeout too
            await within(answered(), timeout + PING_SEND)
        except Exception:  # no pong, closed, or anything else: nothing proves it delivers
            return self._wall_ms(conn.last_alive)
        conn.last_alive = self._clock()
        return self.unfinished_gap_ms()  # one may have opened meanwhile

    def stop(self) -> None:
        """Ask the stream to close: DELETE the key (unless kept) and end ``run``."""
        self._post(self.machine.stop)

    def stats(self) -> dict[str, Any]:
        """The machine's position and every counter: events per stream, rejected frames by
        kind, reconnects, gaps, rotations, keep-alives, the last event's age, and per
        plugin its delivery counters and queue depth."""
        c = self.machine.counters
        plugins = self.pipeline.dispatcher.stats()
        return {
            "status": self.status,
            "connections": len(self._conns),
            "reconnects": c.reconnects,
            "gaps": c.gaps,
            "rotations": c.rotations,
            "keepalives": c.keepalives,
            "keepalive_failures": c.keepalive_failures,
            "resyncs": c.resyncs,
            "resync_failures": c.resync_failures,
            **self.pipeline.accounts[self.account].as_dict(self._wall()),
            "handler_errors": sum(p["errors"] for p in plugins.values()),
            "queue_depth": max((p["queued"] for p in plugins.values()), default=0),
            "plugins": plugins,
        }

    # -- the supervisor -------------------------------------------------------------------

    async def _next_event(self, timeout: float | None) -> Event | None:
        """The next event, or None after ``timeout`` (see :meth:`Inbox.get`: not
        ``asyncio.wait_for``, which on Python 3.11 can swallow a cancellation)."""
        return await self._inbox.get(timeout)

    def _post(self, event: Event) -> None:
        self._inbox.put(event)

    def _wake(self) -> None:
        """The machine wants to tick before its next deadline (a rotation joined)."""
        self._post(lambda now: [])

    async def _execute(self, actions: list[lc.Action]) -> None:
        for action in actions:
            match action:
                case lc.Deliver(frames):
                    for text in frames:  # synchronous: nothing overtakes them
                        self._deliver(text)
                case lc.EmitState():
                    self._emit(action)
                case lc.CreateKey():
                    self._creating = self._rest(self._create_key())
                case lc.KeepAlive():
                    self._rest(self._keepalive())
                case lc.Connect(conn_id, key):
                    conn = _Connection(conn_id, last_alive=self._clock())
                    self._conns[conn_id] = conn
                    conn.task = asyncio.get_running_loop().create_task(
                        self._connection(conn, key), name=f"bitmusa:{self.account}:ws"
                    )
                case lc.Fetch(conn_id, gap_since):
                    await self._execute(self._start_resync(conn_id, gap_since))
                case lc.Close(conn_id, reason):
                    await self._close(conn_id, reason)
                case lc.DeleteKey():
                    await self._delete_key()
                case lc.Finish():
                    self.result = action
                case _:
                    assert_never(action)

    def _emit(self, action: lc.EmitState) -> None:
        self.status = action.status
        state: StreamState = {
            "account": self.account,
            "status": action.status,
            "since": self._wall_ms(action.since),
            "until": self._wall_ms(action.until),
            "reason": action.reason,
        }
        if action.status in ("gap", "failed", "closed", "rotated"):
            state["stats"] = self.stats()
        self.reason = action.reason
        if self._should_log(action):
            retrying = action.status == "connecting" and action.reason not in (None, "reconnecting")
            level = (
                logging.WARNING
                if action.status in ("gap", "disconnected", "failed") or retrying
                else logging.INFO
            )
            log.log(
                level,
                "%s: %s%s",
                self.account,
                action.status,
                f" ({action.reason})" if action.reason else "",
                extra={"bitmusa_status": action.status},
            )
        self.pipeline.stream_state(state)

    def _should_log(self, action: lc.EmitState) -> bool:
        """Every state is logged, except a retry that says what the last one said: that is
        logged once a minute (a stream that stays down is never silent, nor noisy)."""
        if action.status != "connecting" or action.reason in (None, "reconnecting"):
            return True
        assert action.reason is not None
        what = action.reason.rsplit("; retrying in ", 1)[0]
        now = self._clock()
        if self._logged is not None and self._logged[0] == what and now - self._logged[1] < 60:
            return False
        self._logged = (what, now)
        return True

    def _wall_ms(self, mono: float | None) -> int | None:
        if mono is None:
            return None
        return int((self._wall() - (self._clock() - mono)) * 1000)

    # -- REST -------------------------------------------------------------------------------

    def _rest(self, coro: Any) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coro)
        if self._rest_tasks is None:
            self._rest_tasks = set()
        self._rest_tasks.add(task)
        task.add_done_callback(self._rest_done)
        return task

    def _rest_done(self, task: asyncio.Task[None]) -> None:
        if self._rest_tasks is not None:
            self._rest_tasks.discard(task)
            if not self._rest_tasks:
                self._rest_tasks = None
        if task is self._creating:  # a finished task holds its coroutine: 0.6 KiB
            self._creating = None
        if not task.cancelled() and task.exception() is not None:
            # A bug of ours, not a REST failure (those are handled in the task): say so
            # loudly, and stop, rather than wait forever for an answer that will not come.
            exc = task.exception()
            log.error("%s: internal error in a REST task: %r", self.account, exc, exc_info=exc)
            self._post(lambda now: self.machine.key_failed(now, "permanent", f"internal: {exc!r}"))

    def _report_rest(self, what: str, exc: BitmusaError) -> None:
        self.last_error = exc
        message = redact(f"{what} failed: {exc.message}")
        self.pipeline.report(error_info("rest_error", message, account=self.account))

    async def _create_key(self) -> None:
        try:
            key = await self.listen_key.create()
        except BitmusaError as exc:
            # One record per failure: the state the machine emits for it (``connecting``
            # with the reason and the next try, or ``failed``) is that record.
            self.last_error = exc
            failure, reason = exc.failure, redact(exc.message)  # ``exc`` is unbound after
            self._post(lambda now: self.machine.key_failed(now, failure, reason))
            return
        REDACTOR.add(key)  # a listenKey is a secret: it never reaches a log
        self._post(lambda now: self.machine.key_created(now, key))

    async def _keepalive(self) -> None:
        try:
            await self.listen_key.keepalive()
        except BitmusaError as exc:
            self._report_rest("keeping the listenKey alive", exc)
            failure, reason = exc.failure, exc.message
            self._post(lambda now: self.machine.keepalive_failed(now, failure, reason))
            return
        self._post(self.machine.keepalive_ok)

    async def _delete_key(self) -> None:
        creating = self._creating
        if creating is not None and not creating.done():
            # the POST under way would create a key after our DELETE: wait for it first
            await asyncio.wait({creating}, timeout=1.0)
        try:
            await within(self.listen_key.close_key(timeout=1.0), 1.2)
        except (BitmusaError, asyncio.TimeoutError) as exc:
            # Shutdown does not wait for it (many accounts share the REST allowance): the
            # key lapses by itself within 60 minutes.
            message = exc.message if isinstance(exc, BitmusaError) else "timed out"
            log.info(
                "%s: listenKey not deleted (%s); it lapses within 60 minutes",
                self.account,
                redact(message),
            )

    # -- resync -----------------------------------------------------------------------------

    def _start_resync(self, conn_id: int, gap_since: float | None) -> list[lc.Action]:
        """Start the resync's task; what the connection holds goes out first (the actions
        returned) unless the snapshot can go at once."""
        conn = self._conns.get(conn_id)
        if conn is None:
            return []
        if conn.resync is not None:
            conn.resync.cancel()
        now = self._clock()
        if self.snapshots.ready(SNAPSHOT_CALLS):
            # the allowance is there: hold from now, so that the snapshot comes before the
            # new connection's first event (the task starts a loop turn later)
            actions = self.machine.hold(now, conn_id)
        else:  # its turn may take long: the connection's events flow meanwhile
            actions = self.machine.unhold(now, conn_id)
        conn.resync = asyncio.get_running_loop().create_task(self._resync(conn, gap_since))
        return actions

    async def _resync(self, conn: _Connection, gap_since: float | None) -> None:
        conn_id = conn.conn_id
        try:
            # When the shared REST allowance makes the snapshot wait (many accounts
            # starting or reconnecting at once), frames flow live meanwhile; they are held
            # only for the snapshot's round trip.
            await self.snapshots.reserve(SNAPSHOT_CALLS)
            self.machine.hold(self._clock(), conn_id)
            wallet, positions, orders = await asyncio.gather(
                self.snapshots.wallet(),
                self.snapshots.positions(),
                self.snapshots.open_orders(size=resync.OPEN_ORDERS_PAGE),
            )
        except BitmusaError as exc:
            self._report_rest("resync", exc)  # the held frames go out; the machine retries
            failure = exc.failure
            self._post(lambda now: self.machine.snapshot_failed(now, conn_id, failure))
        else:
            try:
                history: GapHistory | None = None
                if gap_since is not None:
                    history = await self._gap_history(gap_since, orders)
                gate = self.pipeline.side_gates.get(self.account)
                if gate is not None:  # the frames it holds are older than the snapshot
                    # each hold ends within its wait; new holds that keep coming (another
                    # client's orders, one after another) must not keep the account in
                    # its gap
                    with contextlib.suppress(asyncio.TimeoutError):
                        await within(gate.idle(), gate.wait + 1.0)
                self._apply_snapshot(conn_id, wallet, positions, orders, history, gap=gap_since)
            except Exception as exc:
                # A bug of ours, not a REST failure: say so loudly, and never leave the
                # connection's frames held (and the gap open) for ever: they go out, and
                # the machine retries the resync
                log.error("%s: internal error in the resync: %r", self.account, exc, exc_info=exc)
                self._post(lambda now: self.machine.snapshot_failed(now, conn_id, "transient"))
                return
            if gap_since is not None and self.gap_delivered is not None:
                since_ms = self._wall_ms(gap_since)
                assert since_ms is not None
                self.gap_delivered(since_ms)
            self._post(lambda now: self.machine.snapshot_done(now, conn_id))
        finally:
            if conn.resync is asyncio.current_task():
                conn.resync = None

    async def _gap_history(
        self, gap_since: float, orders: list[dict[str, Any]]
    ) -> GapHistory | None:
        """The account's fills from a margin before the gap (the history's times are whole
        seconds), read back that far within ``history_budget`` (``_engine/history.py``),
        or None when not one page could be read (the fills are then estimated, and
        reported)."""
        since_ms = self._wall_ms(gap_since)
        assert since_ms is not None
        window = since_ms - GAP_HISTORY_MARGIN_MS
        history = await read_gap_history(
            self.snapshots,
            window,
            orders,
            budget=self.history_budget,
            clock=self._clock,
            open_orders=lambda: self.snapshots.open_orders(size=resync.OPEN_ORDERS_PAGE),
        )
        if history.failures:
            why = history.failures[-1]
            what = f"the trade history of the gap ({len(history.failures)} failed page reads)"
            self.pipeline.report(
                error_info("rest_error", redact(f"{what}: {why}"), account=self.account)
            )
        if history.pages == 0 and history.cut is not None:
            return None
        return history

    def _apply_snapshot(
        self,
        conn_id: int,
        wallet: list[dict[str, Any]],
        positions: list[dict[str, Any]],
        orders: list[dict[str, Any]],
        history: GapHistory | None,
        *,
        gap: float | None,
    ) -> None:
        account = self.account
        mapper, ledger = self.pipeline.mapper(account), self.pipeline.ledgers[account]
        fills = self.pipeline.fills[account]
        plan = resync.plan(
            ledger,
            mapper.assets,
            mapper.symbols,
            wallet=wallet,
            positions=positions,
            orders=orders,
            held=resync.held_keys(self.machine.held(conn_id)),
            orders_complete=len(orders) < resync.OPEN_ORDERS_PAGE,
        )
        if gap is not None:  # at start-up, what filled before is history, not news
            plan = resync.plan_fills(
                plan,
                ledger,
                fills,
                None if history is None else history.records,
                window_start_ms=None if history is None else history.window_start_ms,
                gap_ms=self._wall_ms(gap),
                bases=None if history is None else history.bases,
                cut=None if history is None else history.cut,
            )
        for d in plan.deliveries:
            self.pipeline.deliver(account, d.hook, d.key, d.obj, d.data, stream="resync")
        resync.apply(plan, ledger, mapper, fills)
        if plan.vanished_orders:
            ends = "; ".join(
                f"{o}: {plan.unknown_end.get(o, 'filled or cancelled, unknown')}"
                for o in plan.vanished_orders
            )
            self.pipeline.report(
                error_info(
                    "resync_incomplete",
                    f"orders no longer open after the outage, their end unknown: {ends}",
                    account,
                )
            )
        if history is not None and history.cut is not None:
            self.pipeline.report(
                error_info(
                    "resync_incomplete",
                    f"the trade history of the gap could not be read back to its start "
                    f"({history.cut}): fills of orders no snapshot lists may be missing; "
                    "open orders' fills are completed by estimated trades",
                    account,
                )
            )
        if plan.estimated:
            ids = ", ".join(plan.estimated)
            if history is None:
                why = "could not be fetched"
            elif history.cut is not None:
                why = f"could not be read back to the gap's start ({history.cut})"
            elif plan.unproven:
                why = (
                    f"cannot place the fills of {', '.join(plan.unproven)}, which filled "
                    "again while it was read"
                )
            else:
                why = "does not show them (yet)"
            self.pipeline.report(
                error_info(
                    "trade_estimated",
                    f"fills of {ids} during the outage were delivered as one estimated trade "
                    f"each (the difference, at its average price, no fee): the trade history "
                    f"{why}",
                    account,
                )
            )
        for problem in plan.rejected:
            self.pipeline.report(error_info("invalid_field", f"resync {problem}", account))

    # -- connections ----------------------------------------------------------------------

    async def _open(self, key: str) -> ClientConnection:
        """Open the user stream on ``key``. With ``fallback``, a 404 on the configured path
        before any connection has opened makes it try the other path once; the one that
        answers is kept for the rest of the run. Raises :class:`_ConnectFailed`."""
        base = self.config.ws_url
        try:
            return await self._handshake(urls.ws_stream_url(base, self.ws_path, key))
        except _ConnectFailed as first:
            alternative = urls.other(self.ws_path)
            if self._ws_settled or not self.config.fallback or first.status != 404:
                raise
            try:
                ws = await self._handshake(urls.ws_stream_url(base, alternative, key))
            except _ConnectFailed as second:
                if second.failure != "misconfigured":
                    raise
                shown = [
                    urls.ws_stream_url(base, p, urls.KEY_PLACEHOLDER)
                    for p in (self.ws_path, alternative)
                ]
                raise _ConnectFailed(
                    f"the websocket handshake at {shown[0]} and at {shown[1]} both answered "
                    f"HTTP {first.status}/{second.status}: {urls.ws_hint(base)}",
                    "misconfigured",
                    second.status,
                ) from None
            log.warning(
                "%s: the user stream answered 404 at %s but opened at %s (ws_path %s): "
                "using that for the rest of the run",
                self.account,
                urls.ws_stream_url(base, self.ws_path, urls.KEY_PLACEHOLDER),
                urls.ws_stream_url(base, alternative, urls.KEY_PLACEHOLDER),
                alternative,
            )
            self.ws_path = alternative
            return ws

    async def _handshake(self, url: str) -> ClientConnection:
        shown = urls.shown(url.replace(url.rsplit("/", 1)[-1], urls.KEY_PLACEHOLDER))
        try:
            return await websockets.connect(
                url,
                ssl=tls_context() if url.startswith("wss:") else None,  # verifying, shared
                open_timeout=self.open_timeout,
                ping_interval=None,  # our own heartbeat records when the peer was alive
                ping_timeout=None,
                close_timeout=0.5,
                max_size=WS_MAX_FRAME_BYTES,
                compression=None,  # halves the memory of an idle connection
                user_agent_header=None,
                logger=_WS_LOGGER,  # its DEBUG request line holds the listenKey
            )
        except InvalidStatus as exc:
            status = exc.response.status_code
            if status in (400, 404):
                raise _ConnectFailed(
                    f"the websocket handshake at {shown} answered HTTP {status}: "
                    f"{urls.ws_hint(self.config.ws_url)}",
                    "misconfigured",
                    status,
                ) from None
            raise _ConnectFailed(
                f"the websocket handshake at {shown} answered HTTP {status}", "transient", status
            ) from None
        except asyncio.TimeoutError:
            raise _ConnectFailed(
                f"websocket {shown}: no handshake within {self.open_timeout:g} s", "unreachable"
            ) from None
        except OSError as exc:
            raise _ConnectFailed(
                f"websocket {shown}: {network_reason(exc)}", "unreachable"
            ) from None
        except websockets.exceptions.WebSocketException as exc:
            # InvalidMessage, InvalidURI, ...: what answers does not speak websocket
            raise _ConnectFailed(
                f"websocket {shown}: not a websocket server ({type(exc).__name__}: {exc}): "
                f"{urls.ws_hint(self.config.ws_url)}",
                "misconfigured",
            ) from None

    async def _connection(self, conn: _Connection, key: str) -> None:
        conn_id = conn.conn_id
        try:
            ws = await self._open(key)
        except _ConnectFailed as exc:
            reason, failure = redact(exc.reason), exc.failure
            self._post(lambda now: self.machine.connect_failed(now, conn_id, reason, failure))
            self._conns.pop(conn_id, None)
            return
        self._ws_settled = True
        conn.ws = ws
        conn.last_alive = self._clock()
        # The handshake's request and response headers are start-up-only data that
        # websockets keeps for the connection's life: 2.2 KiB of an idle stream (issue 21).
        # The response stays, its headers emptied in place: websockets reads an unset
        # response as "the handshake is still under way" (and would take the next frame
        # for it), and its parser's frame holds the same object.
        ws.request = None
        if ws.response is not None:
            ws.response.headers.clear()
        self._post(lambda now: self.machine.connected(now, conn_id))
        self._schedule_beat(conn, ws)
        reason = "closed"
        machine, dispatcher, trace = self.machine, self.pipeline.dispatcher, self.trace
        if trace is not None:
            trace("connected", None)
        try:
            async for message in ws:
                conn.last_alive = self._clock()
                if isinstance(message, str):
                    if trace is not None:
                        trace("message", message)
                    if machine.frame(conn_id, message) or conn.draining:
                        self._deliver(message)
                    if machine.urgent:
                        self._wake()
                    if dispatcher.blocked:
                        await self._wait_for_plugins(conn)
                else:
                    self.pipeline.report(
                        error_info(
                            "binary_frame",
                            f"binary frame of {len(message)} bytes "
                            "ignored (the user stream sends text)",
                            self.account,
                            message[:64],
                        )
                    )
            reason = _close_reason(ws)
        except ConnectionClosed:
            reason = _close_reason(ws)
        finally:
            self._stop_beats(conn)
            if conn.resync is not None:
                conn.resync.cancel()  # the next gap brings its own resync
            if not conn.planned_close:
                last_alive = conn.last_alive
                self._conns.pop(conn_id, None)
                why = redact(reason)
                self._post(lambda now: self.machine.closed(now, conn_id, why, last_alive))
            with contextlib.suppress(Exception):
                await ws.close()
            if trace is not None:  # last: the connection's bookkeeping is done
                trace("on_close", redact(reason))

    async def _wait_for_plugins(self, conn: _Connection) -> None:
        """A lossless plugin is a whole queue behind: stop reading until it catches up.
        websockets then stops reading the socket, and TCP carries the backpressure to the
        server. The machine is told: a paused reader holds frames it has not read."""
        conn.paused = True
        conn.pauses += 1
        self._post(functools.partial(self.machine.reader_paused, conn_id=conn.conn_id))
        try:
            await self.pipeline.dispatcher.writable()
        finally:
            conn.paused = False
            conn.last_alive = self._clock()
            self._post(functools.partial(self.machine.reader_resumed, conn_id=conn.conn_id))

    def _schedule_beat(self, conn: _Connection, ws: ClientConnection) -> None:
        """The next ping, ``heartbeat.interval`` from now."""
        conn.beat = asyncio.get_running_loop().call_later(
            self.heartbeat.interval, self._beat, conn, ws
        )

    def _beat(self, conn: _Connection, ws: ClientConnection) -> None:
        conn.beat = None
        if conn.paused:  # we are not reading: no pong could be seen
            self._schedule_beat(conn, ws)
            return
        conn.ping = asyncio.get_running_loop().create_task(self._ping(conn, ws))

    async def _ping(self, conn: _Connection, ws: ClientConnection) -> None:
        """One ping: a pong within ``heartbeat.timeout`` or the connection is dead. The
        next is scheduled when this one is answered (as the loop of sleeps it replaces
        did)."""
        pauses = conn.pauses
        try:
            pong = await ws.ping()
            try:
                await within(pong, self.heartbeat.timeout, cancel=False)
            except asyncio.TimeoutError:
                if not (conn.paused or conn.pauses != pauses):
                    log.warning(
                        "%s: no pong within %.1f s: connection is dead",
                        self.account,
                        self.heartbeat.timeout,
                    )
                    ws.transport.abort()  # the reader ends with ConnectionClosed
                    return
                # the reader paused meanwhile: not evidence of a dead link
            else:
                conn.last_alive = self._clock()
        except ConnectionClosed:
            return
        finally:
            if conn.ping is asyncio.current_task():
                conn.ping = None
        self._schedule_beat(conn, ws)

    @staticmethod
    def _stop_beats(conn: _Connection) -> None:
        if conn.beat is not None:
            conn.beat.cancel()
            conn.beat = None
        if conn.ping is not None:
            conn.ping.cancel()
            conn.ping = None

    def _deliver(self, text: str) -> None:
        if self.record is not None:
            # Lossless and in order (written here, before mapping); buffered, and flushed
            # within 100 ms rather than once per frame.
            self.record.write(text.replace("\n", " ").replace("\r", " ") + "\n")
            if self._record_flush is None:
                self._record_flush = asyncio.get_running_loop().call_later(
                    RECORD_FLUSH_INTERVAL, self._flush_record
                )
        self.pipeline.ingest(self.account, text)

    def _flush_record(self) -> None:
        self._record_flush = None
        if self.record is not None and not self.record.closed:
            self.record.flush()

    async def _close(self, conn_id: int, reason: str) -> None:
        conn = self._conns.pop(conn_id, None)
        if conn is None:
            return
        conn.planned_close = True
        drain = (
            self.machine.phase == "stopped"
            and conn_id == self.machine.primary
            and conn.ws is not None
            and conn.task is not None
        )
        try:
            if conn.resync is not None:
                conn.resync.cancel()
            if drain:
                await self._drain(conn, reason)
            elif conn.ws is not None and not conn.paused:  # a paused reader reads no reply
                with contextlib.suppress(Exception):
                    await within(conn.ws.close(reason=reason[:60]), 1.0)
        finally:
            # Whatever happens above (our own cancellation included), the connection's
            # task is cancelled: a connection that nobody tracks any more must not live on.
            if conn.task is not None and not conn.task.done():
                conn.task.cancel()
        if conn.task is not None:
            # asyncio.wait, not ``await conn.task``: a CancelledError from awaiting the task
            # could not be told apart from our own cancellation, and swallowing ours left
            # the supervisor running forever (a hang seen in CI at loop shutdown).
            await asyncio.wait({conn.task}, timeout=1.0)

    async def _drain(self, conn: _Connection, reason: str) -> None:
        """Letting the account go (a stop: a worker's self-fence, hand-back or shutdown):
        send our close, and let the reader deliver every frame it reads until the server's
        close ends it. A frame that reached the socket is the exchange's word that it was
        sent to us; cancelling the reader at once dropped those still in flight (issue 20).
        Bounded by :data:`CLOSE_DRAIN_TIMEOUT`, so that a self-fence still ends well
        before the lease can lapse (a tick later)."""
        assert conn.ws is not None
        assert conn.task is not None
        conn.draining = True
        closing = asyncio.get_running_loop().create_task(conn.ws.close(reason=reason[:60]))
        try:
            await asyncio.wait({conn.task}, timeout=CLOSE_DRAIN_TIMEOUT)
        finally:
            if not closing.done():
                closing.cancel()
            await asyncio.wait({closing}, timeout=0.1)
            if closing.done() and not closing.cancelled():
                closing.exception()  # retrieved: a close that failed is the reader's to tell

    async def _teardown(self) -> None:
        if self._record_flush is not None:
            self._record_flush.cancel()
            self._flush_record()
        for conn_id in list(self._conns):
            await self._close(conn_id, "shutdown")
        gate = self.pipeline.side_gates.get(self.account)
        if gate is not None:  # what waits for a side goes out (with it, or None) first
            with contextlib.suppress(asyncio.TimeoutError):
                await within(gate.idle(), gate.wait + 1.0)
            gate.close()
            del self.pipeline.side_gates[self.account]
        running = list(self._rest_tasks or ())
        for task in running:
            task.cancel()
        if running:
            await asyncio.wait(running, timeout=0.5)
        await self.listen_key.aclose()
        await self.snapshots.aclose()
        if self._owns_http:
            await self._http.aclose()


class _ConnectFailed(Exception):
    """A connection could not be opened: the reason (a URL, never a key), and what it
    means for the stream."""

    def __init__(self, reason: str, failure: Failure, status: int | None = None) -> None:
        super().__init__(reason)
        self.reason, self.failure, self.status = reason, failure, status


def _close_reason(ws: ClientConnection) -> str:
    code, text = ws.close_code, ws.close_reason
    if code is None or code == 1006:
        return "connection lost (no close frame)"
    return f"closed by server: {code}{' ' + text if text else ''}"
