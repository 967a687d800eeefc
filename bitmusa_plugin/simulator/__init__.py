"""A Bitmusa-compatible futures exchange on loopback: REST, the user stream, faults.

REST under ``{rest_url}`` (``/api/v2``): the listenKey (``/future/userDataStream``), the
account (wallet, positions, open orders, trade history), trading (orders, cancels, close
all, leverage, position mode) and market data (ticker, order book, trades, klines,
exchange-info), with the documented envelope, error codes and an auth check on both
headers. The user stream (``{ws_url}/ws/future/<listenKey>``) follows the documented key
rules: valid 60 minutes, PUT extends, POST returns the active key, DELETE closes the
stream, connections cut at 24 hours. Time is scaled for those rules (``time_scale=3600``
makes a simulated hour pass in a second); events carry real wall-clock times.

Every account is an :class:`~bitmusa_plugin.simulator._engine.Engine` (orders matched
against a moving :class:`~bitmusa_plugin.simulator._market.Market`); every REST action
and every market move sends the user-stream frames it causes. A seeded
:class:`~bitmusa_plugin.simulator._scenario.Scenario` trades in the background (``script``).

Faults, as methods (for tests) and CLI flags (``bitmusa-plugin simulate``): :meth:`drop`
(TCP reset, optionally mid-frame), :meth:`stall` (no data, no pongs), :meth:`garbage`,
:meth:`refuse` (handshake rejected or reset mid-handshake), :meth:`fail_rest` (5xx, 429,
1011, timeouts; optionally only for one method or path), :meth:`reject_orders`,
:meth:`expire_key`, :meth:`cut` (the 24-hour cut, early), :meth:`close_key` (a DELETE from
elsewhere); on the public market stream :meth:`drop_public`, :meth:`stall_public`,
:meth:`garbage_public`.

Ground truth for tests: :attr:`Simulator.sent` lists every frame with the connections it
was written to while they were live; ``sim.account().engine`` holds the account's orders,
fills, positions and balance (``.scenario`` keeps the older names).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import secrets as _secrets
import socket
import struct
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Literal

import orjson
from aiohttp import WSMsgType, web

from ._engine import START_BALANCE, CloseSide, Engine, Frame
from ._market import Market
from ._scenario import Scenario

log = logging.getLogger(__name__)

DEMO_API_KEY = "demo-api-key-0001"
DEMO_AUTH_KEY = "demo-auth-key-0001"
KEY_VALIDITY_MS = 60 * 60 * 1000
MAX_CONNECTION_MS = 24 * 60 * 60 * 1000
#: ``timeout``: the request is never answered and has no effect. ``timeout_after``: it is
#: carried out (an order is placed, its frames sent), and then never answered.
RestFault = Literal[
    "500",
    "503",
    "429",
    "404",
    "1011",
    "timeout",
    "timeout_after",
    "1001",
    "1002",
    "1005",
    "999",
]
WsPath = Literal["documented", "wallet", "both"]
KeepalivePrefix = Literal["v2", "v1", "both"]
HistoryShape = Literal["array", "paged"]
#: The documented limits (8 a second, 200 a minute), for ``rate_limits=``.
DOCUMENTED_RATE_LIMITS = ((8, 1.0), (200, 60.0))


@dataclass
class SimAccount:
    api_key: str
    auth_key: str
    scenario: Scenario
    key: str | None = None
    key_expires_ms: int = 0
    connections: dict[int, SimConnection] = field(default_factory=dict)
    puts: list[int] = field(default_factory=list)  # sim time of every successful PUT
    posts: int = 0
    deletes: int = 0
    expiries: int = 0  # keys that lapsed for want of a PUT
    forced_expiries: int = 0  # keys expired by the expire_key fault
    issued_keys: list[str] = field(default_factory=list)
    max_concurrent: int = 0  # most connections open at once
    outbox: deque[str] = field(default_factory=deque)  # frames made, not yet written
    send_lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def engine(self) -> Engine:
        """The account: orders, fills, positions, wallet (the ground truth)."""
        return self.scenario.engine


@dataclass
class SimConnection:
    conn_id: int
    account: SimAccount
    key: str
    ws: web.WebSocketResponse
    transport: asyncio.Transport | None
    opened_ms: int
    stalled_until: float = 0.0  # real monotonic time
    closed: bool = False
    last_pong: float = field(default_factory=time.monotonic)

    @property
    def stalled(self) -> bool:
        return time.monotonic() < self.stalled_until


@dataclass
class SentFrame:
    seq: int
    text: str
    conns: list[int]
    garbage: bool = False
    account: str = ""  # the account's API key
    at: float = 0.0  # when it was written (time.monotonic())


@dataclass(frozen=True)
class PendingFault:
    fault: RestFault
    method: str | None = None
    path: str | None = None  # "/future/order" exactly, or "/future/order/*" and below

    def matches(self, method: str, path: str) -> bool:
        if self.method is not None and self.method != method:
            return False
        if self.path is None:
            return True
        if self.path.endswith("/*"):
            return path == self.path[:-2] or path.startswith(self.path[:-1])
        return path == self.path


def event_ms() -> int:
    """Events carry real wall-clock times, as the exchange's would."""
    return int(time.time() * 1000)


class Simulator:
    """Start with ``await sim.start()`` (or ``async with Simulator() as sim``)."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        time_scale: float = 1.0,
        seed: int = 1,
        event_interval: float | None = 0.2,
        accounts: dict[str, str] | None = None,
        start_ms: int | None = None,
        key_validity_ms: int = KEY_VALIDITY_MS,
        max_connection_ms: int = MAX_CONNECTION_MS,
        server_ping: tuple[float, float] | None = None,
        script: bool = True,
        market_interval: float | None = None,
        balance: Decimal | int | str = START_BALANCE,
        close_side: CloseSide = "trade",
        trade_history: HistoryShape = "array",
        ws_path: WsPath = "documented",
        keepalive_prefix: KeepalivePrefix = "v2",
        keepalive_refusal: Literal[404, 405] = 404,
        rate_limits: tuple[tuple[int, float], ...] | None = None,
        public_ws_path: Literal["both", "stream", "public", "none"] = "both",
    ) -> None:
        #: (interval, timeout), real seconds: the server pings every connection and drops
        #: one whose pong is late, as exchanges do (None: the server only answers pings)
        self.server_ping = server_ping
        self.pong_timeouts = 0
        self.key_validity_ms = key_validity_ms
        self.max_connection_ms = max_connection_ms
        self.host = host
        self.port = port
        self.time_scale = time_scale
        self.event_interval = event_interval
        self.seed = seed
        self.script = script
        self.market_interval = market_interval
        self.close_side: CloseSide = close_side
        self.trade_history: HistoryShape = trade_history
        self.ws_path: WsPath = ws_path
        self.keepalive_prefix: KeepalivePrefix = keepalive_prefix
        #: what a PUT or DELETE under ``/api/v2`` answers when the keep-alive lives under
        #: ``/api/v1``: 404, or 405 (the path is there, for POST only)
        self.keepalive_refusal: Literal[404, 405] = keepalive_refusal
        self.rate_limits = rate_limits
        self._start_real = time.monotonic()
        self._start_ms = start_ms if start_ms is not None else int(time.time() * 1000)
        #: the market every account trades against (prices, candles, public trades)
        self.market = Market(seed, start_ms=event_ms())
        creds = accounts or {DEMO_API_KEY: DEMO_AUTH_KEY}
        self.accounts = {
            api: SimAccount(
                api,
                auth,
                Scenario(
                    seed + i,
                    market=self.market,
                    balance=Decimal(str(balance)),
                    close_side=close_side,
                    member_id=79010 + i,
                ),
            )
            for i, (api, auth) in enumerate(creds.items())
        }
        self.sent: list[SentFrame] = []
        self.connections_opened = 0
        self.rest_calls: list[tuple[str, int]] = []  # (method or "METHOD /path", code)
        self.snapshots: list[str] = []  # GET wallet / position / order served
        self._rest_faults: list[PendingFault] = []
        self._rejections: list[tuple[int, str]] = []
        self._refuse: list[Literal["reject", "reset"]] = []
        self._calls: dict[str, deque[float]] = {}  # rate limiting: request times per IP
        self._conn_ids = itertools.count(1)
        self._seq = itertools.count(1)
        self._runner: web.AppRunner | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.public_connections: set[web.WebSocketResponse] = set()  # the market stream
        #: which readings of the public stream's path are served (the others answer 404)
        self.public_ws_path = public_ws_path
        self.public_live: dict[web.WebSocketResponse, Any] = {}  # for the faults
        self.public_opened: list[str] = []  # the path and query of every public handshake
        self.public_stalled_until = 0.0  # loop time: connections opened before it are silent
        #: stops the background: the script, the market's moves (and so the fills,
        #: triggers and liquidations they cause). REST calls still act.
        self.paused = False

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> Simulator:
        from . import _public_ws as public_ws
        from . import _routes as routes

        app = web.Application(middlewares=[self._faults_middleware])
        routes.add_routes(app, self)
        for prefix in ("/api/v2", "/api/v1"):
            app.router.add_route("*", prefix + "/future/userDataStream", self._rest)
        public_ws.add_routes(app, self)
        if self.ws_path in ("documented", "both"):
            app.router.add_get("/ws/future/{key}", self._websocket)
        if self.ws_path in ("wallet", "both"):
            app.router.add_get("/ws/future/wallet/{key}", self._websocket)
        # a short shutdown: a "timeout" fault leaves a handler sleeping on purpose
        self._runner = web.AppRunner(
            app, access_log=None, handle_signals=False, shutdown_timeout=0.5
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, reuse_address=True)
        await site.start()
        server = site._server
        assert server is not None
        sockets = getattr(server, "sockets", None) or []
        self.port = sockets[0].getsockname()[1]
        loop = asyncio.get_running_loop()
        self._tasks.append(loop.create_task(self._sweeper()))
        if self.event_interval:
            self._tasks.append(loop.create_task(self._pump(self.event_interval)))
        if self.market_interval:
            self._tasks.append(loop.create_task(self._market_pump(self.market_interval)))
        return self

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for account in self.accounts.values():
            for conn in list(account.connections.values()):
                self._abort(conn)
        from . import _public_ws as public_ws

        await public_ws.close_all(self)
        if self._runner is not None:
            await self._runner.cleanup()

    async def __aenter__(self) -> Simulator:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def rest_url(self) -> str:
        return f"http://{self.host}:{self.port}/api/v2"

    @property
    def ws_url(self) -> str:
        return f"ws://{self.host}:{self.port}"

    def now_ms(self) -> int:
        """Simulated wall-clock time, ms (the listenKey and connection-age rules)."""
        return self._start_ms + int((time.monotonic() - self._start_real) * 1000 * self.time_scale)

    def account(self, api_key: str = DEMO_API_KEY) -> SimAccount:
        return self.accounts[api_key]

    def resting(self, ticker: str) -> list[tuple[str, Decimal, Decimal]]:
        """Every account's resting orders on ``ticker``, as (side, price, quantity left):
        the order book shows them."""
        return [
            (o.side, o.price, o.left)
            for account in self.accounts.values()
            for o in account.engine.open_orders.values()
            if o.ticker == ticker and o.price > 0
        ]

    def engine(self, api_key: str = DEMO_API_KEY) -> Engine:
        """The account's engine: ``orders``, ``open_orders``, ``fills``, ``positions``,
        ``free``, ``locked``, ``balance``."""
        return self.accounts[api_key].engine

    # -- events -----------------------------------------------------------------------------

    async def emit(self, account: SimAccount | None = None, count: int = 1) -> None:
        """Produce ``count`` events now and send them to every live connection: each a
        market move (unless the market has its own ``market_interval``) and what it did to
        the account, or, if it did nothing, a scripted action."""
        account = account or next(iter(self.accounts.values()))
        for _ in range(count):
            changed = await self.tick_market() if self.market_interval is None else set()
            await self._step(account, changed)

    async def _step(self, account: SimAccount, changed: set[str]) -> None:
        """The account's event of this step: what the market's move did to it, if
        anything, else a scripted action (one event per step, as the session always had)."""
        if account.api_key not in changed or not account.scenario.started:
            await self.publish(account, account.scenario.step(event_ms()))

    async def act(self, account: SimAccount, action: Callable[[Engine, int], list[Frame]]) -> None:
        """Run ``action(engine, now_ms)`` on the account and send the frames it returns."""
        await self.publish(account, action(account.engine, event_ms()))

    async def publish(self, account: SimAccount, frames: list[Frame]) -> None:
        """Send ``frames`` to the account's live connections, after every frame made
        before them (the engine's order is the wire's order)."""
        account.outbox.extend(orjson.dumps(frame).decode() for frame in frames)
        await self._drain(account)

    async def _drain(self, account: SimAccount) -> None:
        async with account.send_lock:
            while account.outbox:
                await self.send_text(account, account.outbox.popleft())

    async def tick_market(self) -> set[str]:
        """One random move of every ticker; every account's orders, triggers and
        positions react to it. The API keys of the accounts it changed."""
        now = event_ms()
        volumes = self.market.walk(now)
        changed = set()
        for account in self.accounts.values():
            frames = account.engine.on_tick(now, volumes)
            if frames:
                changed.add(account.api_key)
                account.outbox.extend(orjson.dumps(frame).decode() for frame in frames)
        for account in self.accounts.values():
            if account.outbox:
                await self._drain(account)
        return changed

    async def set_price(
        self,
        ticker: str,
        price: Decimal | int | str,
        *,
        mark: Decimal | int | str | None = None,
        volume: Decimal | int | str | None = None,
    ) -> None:
        """Move ``ticker``'s last price (and mark price: ``mark``, or the same) now; every
        account reacts. ``volume`` is what traded: resting orders fill from it (None: as
        much as they need)."""
        now = event_ms()
        self.market.set_price(
            ticker,
            Decimal(str(price)),
            now,
            mark=None if mark is None else Decimal(str(mark)),
            volume=None if volume is None else Decimal(str(volume)),
        )
        amount = None if volume is None else Decimal(str(volume))
        for account in self.accounts.values():
            frames = account.engine.on_tick(now, {ticker: amount}, tickers=[ticker])
            account.outbox.extend(orjson.dumps(frame).decode() for frame in frames)
        for account in self.accounts.values():
            if account.outbox:
                await self._drain(account)

    async def send_text(self, account: SimAccount, text: str, *, garbage: bool = False) -> None:
        delivered: list[int] = []
        for conn in list(account.connections.values()):
            if conn.closed or conn.stalled:
                continue  # a stalled link delivers nothing: not sent while live
            try:
                await conn.ws.send_str(text)
            except (ConnectionError, RuntimeError):
                continue
            delivered.append(conn.conn_id)
        self.sent.append(
            SentFrame(next(self._seq), text, delivered, garbage, account.api_key, time.monotonic())
        )

    async def send_binary(self, data: bytes, account: SimAccount | None = None) -> None:
        """A binary frame (the user stream sends text: a client must report and skip it)."""
        account = account or next(iter(self.accounts.values()))
        for conn in self.live(account):
            if not conn.stalled:
                with contextlib.suppress(ConnectionError, RuntimeError):
                    await conn.ws.send_bytes(data)

    async def _pump(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            if self.paused:
                continue
            changed = await self.tick_market() if self.market_interval is None else set()
            if not self.script:
                continue
            for account in self.accounts.values():
                if account.key is not None and not self.paused:
                    await self._step(account, changed)

    async def _market_pump(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            if not self.paused:
                await self.tick_market()

    # -- faults -----------------------------------------------------------------------------

    def live(self, account: SimAccount | None = None) -> list[SimConnection]:
        account = account or next(iter(self.accounts.values()))
        return [c for c in account.connections.values() if not c.closed]

    def drop(self, account: SimAccount | None = None, *, mid_frame: bool = False) -> int:
        """TCP-reset every live connection (after half a frame, with ``mid_frame``)."""
        conns = self.live(account)
        for conn in conns:
            if mid_frame and conn.transport is not None:
                # a text frame header announcing 256 bytes, and only a few of them
                conn.transport.write(b"\x81\x7e\x01\x00" + b'{"data": {"orderId"')
            self._abort(conn)
        return len(conns)

    def stall(self, seconds: float, account: SimAccount | None = None) -> None:
        """Live connections go silent for ``seconds`` (real time): no data, no pongs."""
        for conn in self.live(account):
            conn.stalled_until = time.monotonic() + seconds

    async def garbage(self, count: int = 1, account: SimAccount | None = None) -> None:
        """Send frames no decoder can accept, between the good ones."""
        samples = [
            "not json at all",
            '{"data": {"orderId": "X"}, "stream": "future_order"',
            '["an", "array"]',
            '{"stream": "future_trade", "data": {}, "eventTime": 1}',
            '{"stream": "future_order", "data": {"orderId": "G", "ticker": "XRPUSDT", '
            '"price": "abc"}, "eventTime": 1}',
            '{"stream": "future_wallet", "data": {"asset": "USDT"}, "eventTime": 1}',
        ]
        account = account or next(iter(self.accounts.values()))
        for i in range(count):
            await self.send_text(account, samples[i % len(samples)], garbage=True)

    def drop_public(self) -> int:
        """TCP-reset every public market-stream connection; how many."""
        from . import _public_ws as public_ws

        return public_ws.drop(self)

    def stall_public(self, seconds: float) -> None:
        """The public stream goes silent for ``seconds`` (real time): its live connections
        and those opened meanwhile."""
        from . import _public_ws as public_ws

        public_ws.stall(self, seconds)

    async def garbage_public(self, count: int = 1) -> None:
        """Send ``count`` frames no decoder accepts on every public connection."""
        from . import _public_ws as public_ws

        await public_ws.garbage(self, count)

    def refuse(self, count: int = 1, how: Literal["reject", "reset"] = "reject") -> None:
        """The next ``count`` handshakes fail: HTTP 503, or a reset mid-handshake."""
        self._refuse.extend([how] * count)

    def accept(self) -> None:
        """Handshakes succeed again: the refusals still pending are dropped."""
        self._refuse.clear()

    def fail_rest(
        self,
        fault: RestFault,
        count: int = 1,
        *,
        method: str | None = None,
        path: str | None = None,
    ) -> None:
        """The next ``count`` REST calls fail this way: all of them, or only those of
        ``method`` (``"PUT"`` is the keep-alive, ``"GET"`` a snapshot) and of ``path``
        (after ``/api/v2``, e.g. ``"/future/order"``; ``"/future/order/*"`` also covers
        the paths below it)."""
        self._rest_faults.extend([PendingFault(fault, method, path)] * count)

    def reject_orders(
        self, count: int = 1, code: int = 4001, message: str = "INSUFFICIENT BALANCE"
    ) -> None:
        """The next ``count`` POST /future/order are refused with ``code`` and ``message``
        (HTTP 200), whatever they ask for; nothing is placed."""
        self._rejections.extend([(code, message)] * count)

    def take_rejection(self) -> tuple[int, str] | None:
        return self._rejections.pop(0) if self._rejections else None

    def _take_fault(self, method: str, path: str) -> RestFault | None:
        for i, pending in enumerate(self._rest_faults):
            if pending.matches(method, path):
                del self._rest_faults[i]
                return pending.fault
        return None

    def expire_key(self, account: SimAccount | None = None) -> None:
        """The account's key lapses now, as if no PUT had come for 60 minutes (counted in
        ``forced_expiries``, apart from the lapses a client caused)."""
        account = account or next(iter(self.accounts.values()))
        if account.key is not None:
            account.forced_expiries += 1
            self._invalidate(account)

    def close_key(self, account: SimAccount | None = None) -> None:
        """A DELETE from elsewhere (another process sharing the account): the key is gone
        and its connections are closed."""
        account = account or next(iter(self.accounts.values()))
        if account.key is not None:
            account.deletes += 1
            self._invalidate(account)

    async def cut(self, account: SimAccount | None = None) -> None:
        """The 24-hour cut, now: a clean close from the server."""
        for conn in self.live(account):
            conn.closed = True
            with contextlib.suppress(Exception):
                await conn.ws.close(code=1000, message=b"connection max age reached")

    def _abort(self, conn: SimConnection) -> None:
        conn.closed = True
        transport = conn.transport
        if transport is None or transport.is_closing():
            return
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):  # linger 0: close sends RST, not FIN
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()

    # -- REST -------------------------------------------------------------------------------

    @web.middleware
    async def _faults_middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        """REST faults and the rate limit, before any route (websockets excepted)."""
        path = request.path
        if path.startswith("/ws/"):
            return await handler(request)
        relative = path[len("/api/v2") :] if path.startswith(("/api/v2/", "/api/v1/")) else path
        fault = self._take_fault(request.method, relative)
        if fault is not None:
            # the listenKey calls are recorded by method alone, the rest by method and path
            stream = relative.endswith("/userDataStream")
            self.rest_calls.append(
                (request.method if stream else f"{request.method} {relative}", -1)
            )
            if fault == "timeout":
                await asyncio.sleep(3600)
            if fault == "timeout_after":
                await handler(request)  # carried out: only the answer is lost
                await asyncio.sleep(3600)
            if fault in ("500", "503", "429", "404"):
                return web.Response(status=int(fault), text="simulated failure")
            return self._envelope(int(fault), None, "simulated failure")
        if self.rate_limits and self._limited(request):
            return self._envelope(1011, None, "TOO MANY REQUESTS", record=request.method)
        return await handler(request)

    def _limited(self, request: web.Request) -> bool:
        """The documented limits count per IP (DH@f133909)."""
        assert self.rate_limits is not None
        now = time.monotonic()
        calls = self._calls.setdefault(request.remote or "", deque())
        longest = max(window for _, window in self.rate_limits)
        while calls and calls[0] <= now - longest:
            calls.popleft()
        for limit, window in self.rate_limits:
            if sum(1 for t in calls if t > now - window) >= limit:
                return True
        calls.append(now)
        return False

    async def _rest(self, request: web.Request) -> web.StreamResponse:
        """POST / PUT / DELETE userDataStream. POST is served under ``/api/v2``; PUT and
        DELETE under the ``keepalive_prefix`` (``/api/v2`` as documented, ``/api/v1`` as
        node-bitmusa-api sends them, or both); elsewhere: HTTP 404, or ``keepalive_refusal``
        (405) for a PUT or DELETE on ``/api/v2``, where the path exists for POST."""
        method = request.method
        v1 = request.path.startswith("/api/v1/")
        if method in ("PUT", "DELETE"):
            served = {"v2": not v1, "v1": v1, "both": True}[self.keepalive_prefix]
        else:
            served = not v1
        if not served:
            if method != "POST" and not v1 and self.keepalive_refusal == 405:
                raise web.HTTPMethodNotAllowed(method, ["POST"])
            raise web.HTTPNotFound()
        account, error = self._authenticate(request)
        if account is None:
            assert error is not None
            return error
        self._sweep(account)
        if method == "POST":
            account.posts += 1
            if account.key is None:
                account.key = _secrets.token_urlsafe(33)
                account.issued_keys.append(account.key)
            account.key_expires_ms = self.now_ms() + self.key_validity_ms
            return self._envelope(0, {"listenKey": account.key}, record=method)
        if method == "PUT":
            if account.key is None:
                return self._envelope(3022, None, "EMPTY LISTEN KEY", record=method)
            account.key_expires_ms = self.now_ms() + self.key_validity_ms
            account.puts.append(self.now_ms())
            return self._envelope(0, None, record=method)
        if method == "DELETE":
            account.deletes += 1
            if account.key is None:
                return self._envelope(3022, None, "EMPTY LISTEN KEY", record=method)
            self._invalidate(account)
            return self._envelope(0, None, record=method)
        return web.Response(status=405)

    def _authenticate(
        self, request: web.Request, record: str | None = None
    ) -> tuple[SimAccount | None, web.Response | None]:
        api_key = request.headers.get("x-api-key", "")
        auth = request.headers.get("Authorization", "")
        label = record or request.method
        if not api_key:
            return None, self._envelope(1003, None, "EMPTY API KEY", record=label)
        account = self.accounts.get(api_key)
        if account is None or auth != f"Bearer {account.auth_key}":
            return None, self._envelope(1001, None, "API KEY NOT FOUND", record=label)
        return account, None

    def _envelope(
        self, code: int, data: Any, message: str = "success", record: str | None = None
    ) -> web.Response:
        if record is not None:
            self.rest_calls.append((record, code))
        body: dict[str, Any] = {"code": code, "message": message}
        if data is not None:
            body["data"] = data
        return web.Response(body=orjson.dumps(body), content_type="application/json")

    # -- websocket ------------------------------------------------------------------------

    async def _websocket(self, request: web.Request) -> web.StreamResponse:
        transport = request.transport
        if self._refuse:
            how = self._refuse.pop(0)
            if how == "reset" and transport is not None:
                transport.abort()
                return web.Response(status=400)
            return web.Response(status=503, text="simulated refusal")
        key = request.match_info["key"]
        account = next((a for a in self.accounts.values() if a.key == key), None)
        if account is not None:
            self._sweep(account)
        if account is None or account.key != key:
            return web.Response(status=401, text="unknown or expired listenKey")
        ws = web.WebSocketResponse(autoping=False, heartbeat=None, compress=False)
        await ws.prepare(request)
        conn = SimConnection(next(self._conn_ids), account, key, ws, transport, self.now_ms())
        account.connections[conn.conn_id] = conn
        self.connections_opened += 1
        account.max_concurrent = max(account.max_concurrent, len(self.live(account)))
        pinger = (
            asyncio.get_running_loop().create_task(self._ping(conn))
            if self.server_ping is not None
            else None
        )
        try:
            async for msg in ws:
                if msg.type == WSMsgType.PING:
                    if not conn.stalled:
                        await ws.pong(msg.data)
                elif msg.type == WSMsgType.PONG:
                    conn.last_pong = time.monotonic()
                elif msg.type == WSMsgType.CLOSE:
                    break
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            if pinger is not None:
                pinger.cancel()
            conn.closed = True
            account.connections.pop(conn.conn_id, None)
        return ws

    async def _ping(self, conn: SimConnection) -> None:
        """Server-side heartbeat: a connection that leaves a ping unanswered is dropped."""
        assert self.server_ping is not None
        interval, timeout = self.server_ping
        while not conn.closed:
            await asyncio.sleep(interval)
            sent = time.monotonic()
            if not conn.stalled:
                with contextlib.suppress(ConnectionError, RuntimeError):
                    await conn.ws.ping(b"sim")
            await asyncio.sleep(timeout)
            if conn.closed or conn.stalled:
                continue
            if conn.last_pong < sent:
                log.warning("simulator: no pong within %.1f s: dropping the connection", timeout)
                self.pong_timeouts += 1
                self._abort(conn)
                return

    # -- time-driven rules -----------------------------------------------------------------

    async def _sweeper(self) -> None:
        interval = max(0.005, min(1.0, 60.0 / self.time_scale))  # a simulated minute
        while True:
            await asyncio.sleep(interval)
            for account in self.accounts.values():
                self._sweep(account)
                now = self.now_ms()
                for conn in self.live(account):
                    if now - conn.opened_ms >= self.max_connection_ms:
                        conn.closed = True
                        with contextlib.suppress(Exception):
                            await conn.ws.close(code=1000, message=b"connection max age reached")

    def _sweep(self, account: SimAccount) -> None:
        if account.key is not None and self.now_ms() > account.key_expires_ms:
            log.info("simulator: listenKey expired")
            account.expiries += 1
            self._invalidate(account)

    def _invalidate(self, account: SimAccount) -> None:
        account.key = None
        for conn in list(account.connections.values()):
            conn.closed = True
            asyncio.get_running_loop().create_task(
                conn.ws.close(code=1008, message=b"listenKey closed")
            )


def simulated(scale: float) -> Callable[[float], float]:
    """Seconds of simulated time -> seconds of real time, for a given ``time_scale``."""
    return lambda seconds: seconds / scale


from bitmusa_plugin.simulator._thread import SimulatorThread  # noqa: E402 (it builds on Simulator)

__all__ = [
    "DEMO_API_KEY",
    "DEMO_AUTH_KEY",
    "DOCUMENTED_RATE_LIMITS",
    "Engine",
    "Market",
    "RestFault",
    "Scenario",
    "Simulator",
    "SimulatorThread",
    "simulated",
]
