"""The REST routes of the account, trading and market data: parse, call, render.

Parameters are read wherever either SDK puts them (TRADING.md §0): the query string, and a
JSON body (on GET too, as node-bitmusa-api sends one; on POST a body that is not a JSON
object is 1014). Business errors are HTTP 200 with ``code != 0``. Every route but
``/api/health`` checks both auth headers.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web

from . import _params as p
from . import _records as records
from ._engine import ApiError
from ._market import BOOK_LEVELS, PERIODS, TRADES_KEPT, Spec

if TYPE_CHECKING:
    from . import SimAccount, Simulator

V2 = "/api/v2"
OPEN_ORDERS_MAX = 1000
HISTORY_MAX = 1000
KLINES_MAX = 1500  # rows per kline call (ours: no source gives a maximum)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Action = Callable[["SimAccount", dict[str, Any]], Awaitable[Any]]


def add_routes(app: web.Application, sim: Simulator) -> None:
    api = Routes(sim)
    get, post = app.router.add_get, app.router.add_post
    app.router.add_get("/api/health", api.health)
    get(V2 + "/future/market", api.wrap(api.ticker))
    get(V2 + "/future/market/orderbook", api.wrap(api.orderbook))
    get(V2 + "/future/market/trade", api.wrap(api.trades))
    get(V2 + "/future/market/kline/history", api.wrap(api.kline_history))
    get(V2 + "/future/market/kline/current", api.wrap(api.kline_current))
    get(V2 + "/future/market/kline", api.wrap(api.kline))
    get(V2 + "/future/market/exchange-info", api.wrap(api.exchange_info))
    get(V2 + "/future/wallet", api.wrap(api.wallet, snapshot="wallet"))
    get(V2 + "/future/wallet/noposition", api.wrap(api.wallet_noposition))
    get(V2 + "/future/position", api.wrap(api.positions, snapshot="position"))
    get(V2 + "/future/order", api.wrap(api.open_orders, snapshot="order"))
    get(V2 + "/future/trade/history", api.wrap(api.trade_history))
    get(V2 + "/future/leverage", api.wrap(api.get_leverage))
    get(V2 + "/future/position/mode", api.wrap(api.get_mode))
    post(V2 + "/future/order", api.wrap(api.create_order))
    post(V2 + "/future/order/cancel/all", api.wrap(api.cancel_all))
    post(V2 + "/future/order/cancel/{orderId}", api.wrap(api.cancel))
    post(V2 + "/future/position/close/all", api.wrap(api.close_all))
    post(V2 + "/future/leverage", api.wrap(api.set_leverage))
    post(V2 + "/future/leverage/hedge", api.wrap(api.set_hedge_leverage))
    post(V2 + "/future/position/mode", api.wrap(api.set_mode))


class _Action:
    """An action endpoint's answer: ``{code: 0, message: "success"}`` with no ``data``."""


ACTION = _Action()


class Routes:
    def __init__(self, sim: Simulator) -> None:
        self.sim = sim

    @property
    def specs(self) -> dict[str, Spec]:
        return self.sim.market.specs

    def wrap(self, action: Action, *, snapshot: str | None = None) -> Handler:
        """Authenticate, read the parameters, run ``action``, answer in the envelope."""

        async def handler(request: web.Request) -> web.StreamResponse:
            path = request.path[len(V2) :]
            label = f"GET {snapshot}" if snapshot else f"{request.method} {path}"
            if snapshot:
                account, error = self.sim._authenticate(request)
            else:
                account, error = self.sim._authenticate(request, label)
            if account is None:
                assert error is not None
                return error
            try:
                values = await _read(request)
                if snapshot:
                    self.sim.snapshots.append(snapshot)
                data = await action(account, values)
            except ApiError as exc:
                return self.sim._envelope(exc.code, None, exc.message, record=label)
            return self.sim._envelope(0, None if data is ACTION else data, record=label)

        return handler

    async def health(self, request: web.Request) -> web.StreamResponse:
        return self.sim._envelope(0, "OK", record="GET /health")

    # -- market data ----------------------------------------------------------------------------

    async def ticker(self, account: SimAccount, q: dict[str, Any]) -> Any:
        return records.ticker_24h(self.sim.market, p.ticker(q, self.specs, "symbol", "ticker"))

    async def orderbook(self, account: SimAccount, q: dict[str, Any]) -> Any:
        name = p.ticker(q, self.specs)
        size = p.size(q, "size", BOOK_LEVELS, BOOK_LEVELS)
        return records.orderbook(self.sim.market, name, size, self.sim.resting(name))

    async def trades(self, account: SimAccount, q: dict[str, Any]) -> Any:
        name = p.ticker(q, self.specs, "symbol", "ticker")
        return records.public_trades(self.sim.market, name, p.size(q, "size", 100, TRADES_KEPT))

    def _period(self, q: dict[str, Any], name: str, default: str | None = None) -> str:
        value = q.get(name, default)
        if not isinstance(value, str) or value.strip() not in PERIODS:
            raise ApiError(1016, f"{name}={value!r}")
        return value.strip()

    async def kline_history(self, account: SimAccount, q: dict[str, Any]) -> Any:
        """DF's endpoint: ``period`` and both times required; rows newest first."""
        name = p.ticker(q, self.specs)
        period = self._period(q, "period")
        start, end = p.time_range(q, required=True)
        assert start is not None
        assert end is not None
        candles = self.sim.market.candles_for(name, period, start, end)[:KLINES_MAX]
        return [records.kline_row(c) for c in reversed(candles)]

    async def kline(self, account: SimAccount, q: dict[str, Any]) -> Any:
        """The SDKs' path: ``interval`` (any vocabulary; 1min by default), optional times,
        ``size`` (100): the oldest ``size`` from ``startTime``, else the newest up to
        ``endTime``; rows as on /kline/history, newest first."""
        name = p.ticker(q, self.specs)
        period = self._period(q, "interval", "1min")
        start, end = p.time_range(q, required=False)
        size = p.size(q, "size", 100, KLINES_MAX)
        market = self.sim.market
        end = market.now if end is None else end
        candles = market.candles_for(name, period, 0 if start is None else start, end)
        candles = candles[:size] if start is not None else candles[-size:]
        return [records.kline_row(c) for c in reversed(candles)]

    async def kline_current(self, account: SimAccount, q: dict[str, Any]) -> Any:
        name = p.ticker(q, self.specs)
        period = self._period(q, "period")
        return records.kline_current(self.sim.market, name, period, self.sim.market.now)

    async def exchange_info(self, account: SimAccount, q: dict[str, Any]) -> Any:
        return records.exchange_info(self.sim.market)

    # -- the account ------------------------------------------------------------------------------

    async def wallet(self, account: SimAccount, q: dict[str, Any]) -> Any:
        return records.wallet(account.engine)

    async def wallet_noposition(self, account: SimAccount, q: dict[str, Any]) -> Any:
        return records.wallet(account.engine, with_positions=False)

    def _optional_ticker(self, q: dict[str, Any]) -> str | None:
        return None if p.missing(q.get("ticker")) else p.ticker(q, self.specs)

    async def positions(self, account: SimAccount, q: dict[str, Any]) -> Any:
        """Every position, or one ticker's (``position_mode``, which DF lists, is read but
        changes nothing: a ticker has one mode)."""
        if not p.missing(q.get("position_mode")):
            p.position_mode(q)
        return records.positions(account.engine, self._optional_ticker(q))

    async def open_orders(self, account: SimAccount, q: dict[str, Any]) -> Any:
        since = None if p.missing(q.get("start_time")) else p.millis(q["start_time"])
        size = p.size(q, "size", 50, OPEN_ORDERS_MAX)
        return records.open_orders(account.engine, self._optional_ticker(q), since, size)

    async def trade_history(self, account: SimAccount, q: dict[str, Any]) -> Any:
        """Filters apply when given (none is required); ``page`` from 1, ``size`` 10."""
        name = self._optional_ticker(q)
        position = p.history_filter(q, "position")
        direction = p.history_filter(q, "direction")
        otype = p.history_filter(q, "order_type")
        start, end = p.time_range(q, required=False)
        size = p.size(q, "size", 10, HISTORY_MAX)
        page = p.size(q, "page", 1, 10**9)
        engine = account.engine
        chosen = [
            f
            for f in reversed(engine.fills)
            if (name is None or f.ticker == name)
            and (
                position is None
                or records.record_side(engine, f.side, f.position_side, f.direction) == position
            )
            and (direction is None or f.direction == direction)
            and (otype is None or f.otype == otype)
            and (start is None or f.time >= start)
            and (end is None or f.time <= end)
        ]
        rows = [records.trade(engine, f) for f in chosen[(page - 1) * size : page * size]]
        if self.sim.trade_history == "array":
            return rows
        pages = (len(chosen) + size - 1) // size
        return {
            "content": rows,
            "totalElements": len(chosen),
            "totalPages": pages,
            "size": size,
            "number": page - 1,
            "numberOfElements": len(rows),
            "first": page == 1,
            "last": page >= pages,
            "empty": not rows,
        }

    async def get_leverage(self, account: SimAccount, q: dict[str, Any]) -> Any:
        return records.leverage(account.engine, p.ticker(q, self.specs))

    async def get_mode(self, account: SimAccount, q: dict[str, Any]) -> Any:
        return account.engine.mode(p.ticker(q, self.specs))

    # -- trading ----------------------------------------------------------------------------------

    async def create_order(self, account: SimAccount, q: dict[str, Any]) -> Any:
        rejection = self.sim.take_rejection()
        if rejection is not None:
            error = ApiError(rejection[0])
            error.message = rejection[1]
            raise error
        request = p.order(q, self.specs, self.sim.close_side)
        placed: list[str] = []

        def place(engine: Any, now: int) -> Any:
            order_id, frames = engine.place(request, now)
            placed.append(order_id)
            return frames

        await self.sim.act(account, place)
        return placed[0]

    async def cancel(self, account: SimAccount, q: dict[str, Any]) -> Any:
        order_id = q.get("orderId") or ""
        if p.missing(order_id):
            raise ApiError(1007)
        await self.sim.act(account, lambda engine, now: engine.cancel(str(order_id), now))
        return ACTION

    async def cancel_all(self, account: SimAccount, q: dict[str, Any]) -> Any:
        name = p.ticker_or_all(q, self.specs)
        await self.sim.act(account, lambda engine, now: engine.cancel_all(name, now))
        return ACTION

    async def close_all(self, account: SimAccount, q: dict[str, Any]) -> Any:
        name = p.ticker_or_all(q, self.specs)
        await self.sim.act(account, lambda engine, now: engine.close_all(name, now))
        return ACTION

    async def set_leverage(self, account: SimAccount, q: dict[str, Any]) -> Any:
        name = p.ticker(q, self.specs)
        leverage = p.leverage(q)
        account.engine.set_leverage(name, leverage, p.leverage_type(q))
        return ACTION

    async def set_hedge_leverage(self, account: SimAccount, q: dict[str, Any]) -> Any:
        name = p.ticker(q, self.specs)
        buy = p.leverage(q, "buy_leverage", 3020)
        sell = p.leverage(q, "sell_leverage", 3021)
        account.engine.set_leverage(name, buy, "HEDGE_BUY")
        account.engine.set_leverage(name, sell, "HEDGE_SELL")
        return ACTION

    async def set_mode(self, account: SimAccount, q: dict[str, Any]) -> Any:
        name = p.ticker(q, self.specs)
        account.engine.set_mode(name, p.position_mode(q))
        return ACTION


async def _read(request: web.Request) -> dict[str, Any]:
    """The query, then the JSON body over it; a path value (``orderId``) last."""
    values: dict[str, Any] = dict(request.query)
    raw = await request.read() if request.body_exists else b""
    if raw.strip():
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            body = None
        if isinstance(body, dict):
            values.update(body)
        elif request.method != "GET":  # a GET's body is a courtesy copy; a POST's is not
            raise ApiError(1014, "the body is not a JSON object")
    values.update(request.match_info)
    return values


__all__ = ["add_routes"]
