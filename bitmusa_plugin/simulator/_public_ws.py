"""The draft public market stream (REFERENCE.md §8, unpublished DMW): full snapshots only.

``{ws_url}/ws/future/stream?<stream>/<stream>...`` (DMW) and node-bitmusa-api's
``/ws/future/public?stream=<stream>/<stream>``, each or both (``Simulator(public_ws_path=
"stream" | "public" | "both" | "none")``: a reading not served answers HTTP 404), with these
streams:

* ``<ticker>@depth<5|10|20>@<1s|100ms>`` (level 5 and 1s by default): every period, the
  whole top-N book, ``{updateTime, bids: [{price, amount}], asks: [...]}``, both sides best
  first, numbers. No deltas and no sequence numbers, as in the draft.
* ``<ticker>@kline_<interval>`` (``1min`` ... ``1M``): every 250 ms, the candle now forming,
  ``{s, o, h, l, c, t, T, i, q, v, u}`` with ``s`` as ``BTC/USDT`` (as the draft shows) and
  ``T`` the candle's last ms.

An unknown stream name refuses the handshake (HTTP 400). Nothing is pushed while the
simulator is paused. The user stream's faults have public twins: ``drop_public`` (TCP
reset), ``stall_public`` (silence) and ``garbage_public`` (frames no decoder accepts).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import WSMsgType, web

from ._market import QUOTE, WS_INTERVALS, bucket_start, period_length

if TYPE_CHECKING:
    from . import Simulator

DEPTH = re.compile(r"^([A-Z0-9]+)@depth(5|10|20)?(?:@(1s|100ms))?$")
KLINE = re.compile(r"^([A-Z0-9]+)@kline_([0-9A-Za-z]+)$")
TICK = 0.05  # the pusher's resolution, real seconds


@dataclass
class PublicConnection:
    """One public websocket, for the faults."""

    ws: web.WebSocketResponse
    transport: asyncio.BaseTransport | None
    stalled_until: float = 0.0  # loop time

    def stalled(self, now: float) -> bool:
        return now < self.stalled_until


@dataclass
class Subscription:
    name: str
    ticker: str
    every: float  # real seconds between pushes
    level: int = 0  # depth
    interval: str = ""  # kline
    due: float = 0.0


def parse(names: list[str], tickers: set[str]) -> list[Subscription] | str:
    """The subscriptions, or what is wrong with the first bad name."""
    out = []
    for name in names:
        depth, kline = DEPTH.match(name), KLINE.match(name)
        if depth and depth.group(1) in tickers:
            every = 0.1 if depth.group(3) == "100ms" else 1.0
            out.append(Subscription(name, depth.group(1), every, level=int(depth.group(2) or 5)))
        elif kline and kline.group(1) in tickers and kline.group(2) in WS_INTERVALS:
            out.append(Subscription(name, kline.group(1), 0.25, interval=kline.group(2)))
        else:
            return f"unknown stream {name!r}"
    return out or "no stream"


def add_routes(app: web.Application, sim: Simulator) -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        raw = request.query.get("stream") or request.query.get("streams") or request.query_string
        names = [n for n in raw.split("/") if n]
        subscriptions = parse(names, set(sim.market.specs))
        if isinstance(subscriptions, str):
            return web.Response(status=400, text=subscriptions)
        ws = web.WebSocketResponse(heartbeat=None, compress=False)
        await ws.prepare(request)
        conn = PublicConnection(ws, request.transport, sim.public_stalled_until)
        sim.public_connections.add(ws)
        sim.public_live[ws] = conn
        sim.public_opened.append(request.path_qs)
        pusher = asyncio.get_running_loop().create_task(_push(sim, conn, subscriptions))
        try:
            async for msg in ws:
                if msg.type == WSMsgType.CLOSE:
                    break
        finally:
            pusher.cancel()
            sim.public_connections.discard(ws)
            sim.public_live.pop(ws, None)
        return ws

    async def not_served(request: web.Request) -> web.StreamResponse:
        return web.Response(status=404, text="no such stream path")

    # before /ws/future/{key}: these names are never listenKeys (a reading not served
    # answers 404, as a server with the other reading would)
    served = sim.public_ws_path
    for reading, path in (("stream", "/ws/future/stream"), ("public", "/ws/future/public")):
        on = served in (reading, "both")
        app.router.add_get(path, handler if on else not_served)


async def _push(sim: Simulator, conn: PublicConnection, subscriptions: list[Subscription]) -> None:
    loop = asyncio.get_running_loop()
    ws = conn.ws
    while not ws.closed:
        now = loop.time()
        if not sim.paused and not conn.stalled(now):
            for sub in subscriptions:
                if now >= sub.due:
                    sub.due = now + sub.every
                    payload = depth(sim, sub) if sub.level else kline(sim, sub)
                    with contextlib.suppress(ConnectionError, RuntimeError):
                        await ws.send_str(orjson.dumps(payload).decode())
        await asyncio.sleep(TICK)


def depth(sim: Simulator, sub: Subscription) -> dict[str, Any]:
    market = sim.market
    bids, asks = market.book(sub.ticker, sim.resting(sub.ticker))
    return {
        "stream": sub.name,
        "eventTime": market.now,
        "data": {
            "updateTime": market.updated[sub.ticker],
            "bids": [{"price": float(b.price), "amount": float(b.qty)} for b in bids[: sub.level]],
            "asks": [{"price": float(a.price), "amount": float(a.qty)} for a in asks[: sub.level]],
        },
    }


def kline(sim: Simulator, sub: Subscription) -> dict[str, Any]:
    market = sim.market
    now = market.updated[sub.ticker]
    start = bucket_start(sub.interval, now)
    candles = market.candles_for(sub.ticker, sub.interval, start, now)
    price = market.prices[sub.ticker]
    last = candles[-1] if candles else None
    return {
        "stream": sub.name,
        "eventTime": market.now,
        "data": {
            "s": f"{market.specs[sub.ticker].coin}/{QUOTE}",
            "o": float(last.open if last else price),
            "h": float(last.high if last else price),
            "l": float(last.low if last else price),
            "c": float(last.close if last else price),
            "t": start,
            "T": start + period_length(sub.interval, start) - 1,
            "i": sub.interval,
            "q": float(last.qty if last else 0),
            "v": float(last.value if last else 0),
            "u": now,
        },
    }


GARBAGE = (
    "not json at all",
    '{"stream": "BTCUSDT@depth5@1s", "data": {"bids": [{"price": "abc", "amount": 1}]}',
    '["an", "array"]',
    '{"stream": "BTCUSDT@nothing", "data": {}, "eventTime": 1}',
    '{"stream": "BTCUSDT@kline_1min", "data": {"t": 1, "o": "x"}, "eventTime": 1}',
    '{"stream": "BTCUSDT@depth5@1s", "data": {"bids": [{"price": "-1", "amount": 1}]}}',
)


def drop(sim: Simulator) -> int:
    """TCP-reset every public connection."""
    conns = list(sim.public_live.values())
    for conn in conns:
        if conn.transport is not None:
            conn.transport.abort()
    return len(conns)


def stall(sim: Simulator, seconds: float) -> None:
    """Silence for ``seconds``: the live connections, and those opened meanwhile."""
    until = asyncio.get_running_loop().time() + seconds
    sim.public_stalled_until = until
    for conn in sim.public_live.values():
        conn.stalled_until = until


async def garbage(sim: Simulator, count: int) -> None:
    for i in range(count):
        for conn in list(sim.public_live.values()):
            with contextlib.suppress(ConnectionError, RuntimeError):
                await conn.ws.send_str(GARBAGE[i % len(GARBAGE)])


async def close_all(sim: Simulator) -> None:
    closing = [ws.close(code=1001, message=b"server shutdown") for ws in sim.public_connections]
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(asyncio.gather(*closing, return_exceptions=True), 1.0)
