"""A Bitmusa-compatible user-stream server on loopback, with faults on demand.

REST (``{rest_url}/future/userDataStream``, POST/PUT/DELETE) and the websocket
(``{ws_url}/ws/future/<listenKey>``) follow the documented rules: the same envelope and
error codes, an auth check on both headers, keys valid 60 minutes, PUT extends, POST
returns the active key, DELETE closes the stream, connections cut at 24 hours. Time is
scaled (``time_scale=3600`` makes a simulated hour pass in a second). A seeded
:class:`~bitmusa_plugin.simulator.scenario.Scenario` produces the trading session.

Faults, as methods (for tests) and CLI flags (``bitmusa-plugin simulate``): :meth:`drop`
(TCP reset, optionally mid-frame), :meth:`stall` (no data, no pongs), :meth:`garbage`,
:meth:`refuse` (handshake rejected or reset mid-handshake), :meth:`fail_rest` (5xx, 429,
1011, timeouts; optionally only for one method, e.g. the keep-alive PUT), :meth:`expire_key`,
:meth:`cut` (the 24-hour cut, early), :meth:`close_key` (a DELETE from elsewhere).

Ground truth for tests: :attr:`Simulator.sent` lists every frame with the connections it
was written to while they were live.
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
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson
from aiohttp import WSMsgType, web

from bitmusa_plugin.simulator.scenario import Scenario

log = logging.getLogger(__name__)

DEMO_API_KEY = "demo-api-key-0001"
DEMO_AUTH_KEY = "demo-auth-key-0001"
KEY_VALIDITY_MS = 60 * 60 * 1000
MAX_CONNECTION_MS = 24 * 60 * 60 * 1000
RestFault = Literal["500", "503", "429", "1011", "timeout", "1001", "1002", "1005", "999"]


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
        self._start_real = time.monotonic()
        self._start_ms = start_ms if start_ms is not None else int(time.time() * 1000)
        creds = accounts or {DEMO_API_KEY: DEMO_AUTH_KEY}
        self.accounts = {
            api: SimAccount(api, auth, Scenario(seed + i))
            for i, (api, auth) in enumerate(creds.items())
        }
        self.sent: list[SentFrame] = []
        self.connections_opened = 0
        self.rest_calls: list[tuple[str, int]] = []  # (method, code)
        self.snapshots: list[str] = []  # GET wallet / position / order served
        self._rest_faults: list[tuple[RestFault, str | None]] = []  # (fault, method)
        self._refuse: list[Literal["reject", "reset"]] = []
        self._conn_ids = itertools.count(1)
        self._seq = itertools.count(1)
        self._runner: web.AppRunner | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.paused = False

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> Simulator:
        app = web.Application()
        app.router.add_route("*", "/api/v2/future/userDataStream", self._rest)
        app.router.add_get("/api/v2/future/wallet", self._snapshot)
        app.router.add_get("/api/v2/future/position", self._snapshot)
        app.router.add_get("/api/v2/future/order", self._snapshot)
        app.router.add_get("/ws/future/{key}", self._websocket)
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
        return self

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for account in self.accounts.values():
            for conn in list(account.connections.values()):
                self._abort(conn)
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
        """Simulated wall-clock time, ms."""
        return self._start_ms + int((time.monotonic() - self._start_real) * 1000 * self.time_scale)

    def account(self, api_key: str = DEMO_API_KEY) -> SimAccount:
        return self.accounts[api_key]

    # -- events -----------------------------------------------------------------------------

    async def emit(self, account: SimAccount | None = None, count: int = 1) -> None:
        """Produce ``count`` scenario events now and send them to every live connection.
        Events carry real wall-clock times, as the exchange's would; only the listenKey
        and connection-age rules run on the scaled clock."""
        account = account or next(iter(self.accounts.values()))
        for _ in range(count):
            for frame in account.scenario.step(int(time.time() * 1000)):
                await self.send_text(account, orjson.dumps(frame).decode())

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
            for account in self.accounts.values():
                if account.key is not None:
                    await self.emit(account)

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

    def refuse(self, count: int = 1, how: Literal["reject", "reset"] = "reject") -> None:
        """The next ``count`` handshakes fail: HTTP 503, or a reset mid-handshake."""
        self._refuse.extend([how] * count)

    def fail_rest(self, fault: RestFault, count: int = 1, *, method: str | None = None) -> None:
        """The next ``count`` REST calls (of ``method`` only: ``"PUT"`` is the keep-alive,
        ``"GET"`` a snapshot) fail this way."""
        self._rest_faults.extend([(fault, method)] * count)

    def _take_fault(self, method: str) -> RestFault | None:
        for i, (fault, only) in enumerate(self._rest_faults):
            if only is None or only == method:
                del self._rest_faults[i]
                return fault
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

    async def _rest(self, request: web.Request) -> web.Response:
        fault = self._take_fault(request.method)
        if fault is not None:
            self.rest_calls.append((request.method, -1))
            if fault == "timeout":
                await asyncio.sleep(3600)
            if fault in ("500", "503", "429"):
                return web.Response(status=int(fault), text="simulated failure")
            return self._envelope(int(fault), None, "simulated failure")
        account, error = self._authenticate(request)
        if account is None:
            return error  # type: ignore[return-value]
        self._sweep(account)
        method = request.method
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

    async def _snapshot(self, request: web.Request) -> web.Response:
        """GET wallet / position / order, served from the scenario's state."""
        if any(only in (None, "GET") for _, only in self._rest_faults):
            return await self._rest(request)
        account, error = self._authenticate(request)
        if account is None:
            return error  # type: ignore[return-value]
        ticker = request.query.get("ticker") or None
        kind = request.path.rsplit("/", 1)[-1]
        self.snapshots.append(kind)
        scenario = account.scenario
        if kind == "wallet":
            data = scenario.rest_wallet()
        elif kind == "position":
            data = scenario.rest_positions(ticker)
        else:
            data = scenario.rest_open_orders(ticker)
        return self._envelope(0, data, record=f"GET {kind}")

    def _authenticate(self, request: web.Request) -> tuple[SimAccount | None, web.Response | None]:
        api_key = request.headers.get("x-api-key", "")
        auth = request.headers.get("Authorization", "")
        if not api_key:
            return None, self._envelope(1003, None, "EMPTY API KEY", record=request.method)
        account = self.accounts.get(api_key)
        if account is None or auth != f"Bearer {account.auth_key}":
            return None, self._envelope(1001, None, "API KEY NOT FOUND", record=request.method)
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


from bitmusa_plugin.simulator.thread import SimulatorThread  # noqa: E402 (it builds on Simulator)

__all__ = [
    "DEMO_API_KEY",
    "DEMO_AUTH_KEY",
    "RestFault",
    "Scenario",
    "Simulator",
    "SimulatorThread",
    "simulated",
]
