"""The account over REST: orders (``create_order``, ``cancel_order``, ``cancel_all_orders``,
``fetch_order``, ``fetch_open_orders``), positions (``fetch_positions``, ``close_position``,
``close_all_positions``), settings (leverage, position mode), ``fetch_balance`` and
``fetch_my_trades``.

An order is sent once and never retried. When its answer does not come, the exception
says what is known: not sent at all (``NetworkError``: nothing was placed), or sent and
unanswered (``RequestTimeout``, or ``ExchangeNotAvailable`` for a server error): then the
order may exist, and the stream (``watch_orders``) and ``fetch_open_orders`` settle it.
"""

from __future__ import annotations

import asyncio
import logging
import re
from typing import Any

from ccxt.base.errors import (
    ArgumentsRequired,
    BadRequest,
    BadSymbol,
    ExchangeError,
    ExchangeNotAvailable,
    InvalidOrder,
    NetworkError,
    NotSupported,
    OrderNotFound,
    RequestTimeout,
)
from ccxt.base.precise import Precise

from bitmusa_plugin._core import build, wire
from bitmusa_plugin._core import errors as bm
from bitmusa_plugin._core import market as bm_market
from bitmusa_plugin._core import orders as bm_orders
from bitmusa_plugin._core.fills import history_trade, record_time, side_of
from bitmusa_plugin._core.numbers import Reject
from bitmusa_plugin._engine.rest import HISTORY_PAGE, HISTORY_PAGES, NotSentError, TimedOutError

from .errors import raise_for, text_of
from .streams import Streams

log = logging.getLogger(__name__)

#: ``create_order`` params Bitmusa has no field for: refused, never silently dropped
UNSUPPORTED_ORDER_PARAMS = (
    "triggerPrice",
    "stopPrice",
    "stopLossPrice",
    "takeProfitPrice",
    "trailingAmount",
    "trailingPercent",
    "trailingTriggerPrice",
    "clientOrderId",
    "cost",
    "leverage",  # per symbol (set_leverage): sent with the order, the server ignores it
)
#: unified ``create_order`` params read here; anything else goes into the body as is
UNIFIED_ORDER_PARAMS = (
    "reduceOnly",
    "postOnly",
    "timeInForce",
    "marginMode",
    "takeProfit",
    "stopLoss",
)
#: how an order id embeds its creation time (TRADING.md §0, inferred)
#: What a take-profit or stop-loss spec may hold (ccxt's names); anything else is refused
#: fetch_my_trades(since=...) walks back this many full answers at most
_HISTORY_ROUNDS = 10
_TRIGGER_KEYS = frozenset(("triggerPrice", "stopPrice", "price", "type", "priceType"))
_ID_TIME = re.compile(r"^[A-Z](\d{13})")
_DAY_MS = 86_400_000


class Trading(Streams):
    """The trading half of :class:`bitmusa` (its orders reach ``watch_orders``)."""

    # -- orders ------------------------------------------------------------------------------

    async def create_order(  # noqa: PLR0917 (ccxt's signature)
        self,
        symbol: str,
        type: str,
        side: str,
        amount: float,
        price: float | None = None,
        params: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """POST /future/order, once. ``type`` market or limit; ``params``: ``reduceOnly``,
        ``postOnly`` or ``timeInForce: 'PO'``, ``takeProfit`` / ``stopLoss`` as
        ``{triggerPrice, price?, type?, priceType?: 'mark'|'last'}``, ``marginMode``;
        anything else goes into the body as is. The answer is only the id: the order comes
        back as sent, status ``open``, or as the stream already shows it."""
        params = dict(params or {})
        await self.load_markets()
        market = self.market(symbol)
        kind, side = str(type).lower(), str(side).lower()
        if kind not in ("market", "limit"):
            raise InvalidOrder(f"bitmusa create_order type {type!r}: 'market' or 'limit'")
        if side not in ("buy", "sell"):
            raise InvalidOrder(f"bitmusa create_order side {side!r}: 'buy' or 'sell'")
        for key in UNSUPPORTED_ORDER_PARAMS:
            if params.get(key) is not None:
                raise NotSupported(
                    f"bitmusa create_order: no {key!r} (Bitmusa's order has no such field; "
                    "take-profit and stop-loss attach to an order as params['takeProfit'] "
                    "and params['stopLoss'])"
                )
        tif = self.safe_string_upper(params, "timeInForce")
        if tif not in (None, "GTC", "PO"):
            raise NotSupported(
                f"bitmusa create_order timeInForce {tif!r}: Bitmusa's order has no "
                "time-in-force field (a limit order rests until cancelled; 'PO' is post-only)"
            )
        post_only = self.is_post_only(kind == "market", False, params)
        reduce_only = bool(self.safe_bool(params, "reduceOnly", False))
        margin_mode, params = self.handle_margin_mode_and_params("createOrder", params, "isolated")
        if margin_mode not in ("isolated", "cross"):
            raise BadRequest(f"bitmusa marginMode {margin_mode!r}: 'isolated' or 'cross'")
        for key in ("amount", "price"):
            # a market named in options['markets'] that no list describes: rounding would
            # be a guess, and an unrounded quantity a rejected (or wrong) order
            if market["precision"].get(key) is None:
                raise BadSymbol(
                    f"bitmusa {symbol} has no {key} precision (no market list describes it): "
                    "add it to options['fallbackMarkets'] or serve exchange-info"
                )
        try:
            positive = float(amount) > 0
        except (TypeError, ValueError):
            positive = False
        if not positive:
            raise InvalidOrder(f"bitmusa create_order amount {amount!r}: a positive number")
        amount_text = self.amount_to_precision(symbol, amount)
        price_text = None
        if kind == "limit":
            if price is None:
                raise InvalidOrder("bitmusa create_order: a limit order needs a price")
            price_text = self.price_to_precision(symbol, price)
        take_profit = self._trigger(symbol, params.get("takeProfit"), "takeProfit")
        stop_loss = self._trigger(symbol, params.get("stopLoss"), "stopLoss")
        body = bm_orders.order_body(
            market["id"],
            side,  # type: ignore[arg-type]
            kind,  # type: ignore[arg-type]
            amount_text,
            price_text,
            reduce_only=reduce_only,
            post_only=post_only,
            margin_mode=margin_mode,
            close_side=self._close_side(),
            reduce_only_as=self._choice("reduceOnly", bm_orders.REDUCE_ONLY_AS),
            market_price=self._choice("marketOrderPrice", bm_orders.MARKET_PRICES),
            take_profit=take_profit,
            stop_loss=stop_loss,
        )
        body = self.extend(body, self.omit(params, list(UNIFIED_ORDER_PARAMS)))
        client = self._client()
        await self._ensure_stream()
        try:
            order_id = await client.create_order(body)
        except NotSentError as exc:
            raise NetworkError(
                f"{text_of(exc)}; the order was not sent: nothing was placed"
            ) from None
        except (bm.NetworkError, bm.ServerError) as exc:
            unknown = (
                f"{text_of(exc)}; the order may or may not have been placed: it is not retried; "
                "if it was, watch_orders() and fetch_open_orders() will show it"
            )
            if isinstance(exc, TimedOutError):
                raise RequestTimeout(unknown) from None
            if isinstance(exc, bm.NetworkError):
                raise NetworkError(unknown) from None
            raise ExchangeNotAvailable(unknown) from None
        except bm.BitmusaError as exc:
            raise_for(self, exc, "createOrder")
        self._learn(order_id, side)
        sent = self.safe_order(
            {
                "info": {"data": order_id, "request": body},
                "id": order_id,
                "clientOrderId": None,
                "timestamp": self._id_time(order_id),
                "datetime": self.iso8601(self._id_time(order_id)),
                "lastTradeTimestamp": None,
                "symbol": market["symbol"],
                "type": kind,
                "timeInForce": "PO" if post_only else "IOC" if kind == "market" else "GTC",
                "postOnly": post_only,
                "reduceOnly": reduce_only,
                "side": side,
                "price": price_text,
                "triggerPrice": None,
                "takeProfitPrice": None if take_profit is None else take_profit.trigger_price,
                "stopLossPrice": None if stop_loss is None else stop_loss.trigger_price,
                "amount": amount_text,
                "cost": None,
                "average": None,
                "filled": None,
                "remaining": None,
                "status": "open",
                "fee": None,
                "trades": None,
            },
            market,
        )
        return self._with_stream(sent)

    def _trigger(self, symbol: str, spec: Any, name: str) -> bm_orders.Trigger | None:
        """``params['takeProfit']`` / ``['stopLoss']``: ccxt's ``{triggerPrice, price?,
        type?, priceType?}`` (a bare number is the trigger price); prices on the grid."""
        if spec is None:
            return None
        if not isinstance(spec, dict):
            spec = {"triggerPrice": spec}
        unknown = sorted(set(spec) - _TRIGGER_KEYS)
        if unknown:  # an amount above all: a partial take-profit sent whole is a loss
            raise NotSupported(
                f"bitmusa create_order: params['{name}'] {', '.join(map(repr, unknown))}: "
                "Bitmusa's take-profit and stop-loss close the order's whole amount; they take "
                "triggerPrice, price, type and priceType only"
            )
        trigger = self.safe_string_2(spec, "triggerPrice", "stopPrice")
        if trigger is None:
            raise InvalidOrder(f"bitmusa create_order: params['{name}'] needs a triggerPrice")
        kind = self.safe_string_lower(spec, "type")
        limit_price = self.safe_string(spec, "price")
        if kind == "limit" and limit_price is None:
            raise InvalidOrder(f"bitmusa create_order: a limit {name} needs a price")
        if kind not in (None, "limit", "market"):
            raise InvalidOrder(f"bitmusa create_order: params['{name}']['type'] {kind!r}")
        if kind == "market":
            limit_price = None
        price_type = self.safe_string_lower(
            spec, "priceType", self.safe_string(self.options, "triggerPriceType", "last")
        )
        if price_type not in bm_orders.TRIGGER_PRICE_TYPES:
            raise InvalidOrder(
                f"bitmusa create_order: {name} priceType {price_type!r}: 'mark' or 'last'"
            )
        return bm_orders.Trigger(
            self.price_to_precision(symbol, trigger),
            None if limit_price is None else self.price_to_precision(symbol, limit_price),
            price_type,
        )

    def _id_time(self, order_id: str) -> int | None:
        """The creation time an order id embeds (``F`` + 13-digit ms + digits; inferred,
        TRADING.md §0), when it is plausible (within a day of now)."""
        found = _ID_TIME.match(order_id)
        if found is None:
            return None
        ms = int(found.group(1))
        return ms if abs(ms - self.milliseconds()) < _DAY_MS else None

    def _with_stream(self, order: dict[str, Any]) -> dict[str, Any]:
        """``order`` completed with what the stream says of it (status, fills, times)."""
        seen = self._cached_order(order["id"])
        if seen is None:
            return order
        known = {k: v for k, v in seen.items() if v is not None and k != "info"}
        # the call's own answer (and the order's request) stays; the stream's event beside it
        info = {**order["info"], "stream": seen["info"]}
        return self.extend(order, known, {"info": info})  # type: ignore[no-any-return]

    async def cancel_order(
        self, id: str, symbol: str | None = None, params: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """POST /future/order/cancel/{id} (no symbol needed). The answer has no order: it
        comes back ``canceled``, completed from the stream when it has seen it. An
        unknown or finished order is ``OrderNotFound``."""
        market = None
        if symbol is not None:
            await self.load_markets()
            market = self.market(symbol)
        response = await self._rest(self._client().cancel_order(str(id)), "cancelOrder")
        order = self._with_stream(
            self.safe_order({"info": response, "id": str(id), "status": "canceled"}, market)
        )
        order["status"] = "canceled"
        return order

    async def cancel_all_orders(
        self, symbol: str | None = None, params: dict[str, Any] | None = None
    ) -> list[dict[str, Any]]:
        """POST /future/order/cancel/all for the symbol, or every one. Bitmusa does not say
        which orders it cancelled: the list is empty; ``watch_orders`` shows them."""
        ticker = await self._ticker_or_all(symbol)
        await self._rest(self._client().cancel_all(ticker), "cancelAllOrders")
        return []

    async def fetch_open_orders(
        self,
        symbol: str | None = None,
        since: int | None = None,
        limit: int | None = None,
        params: dict[str, Any] | None = None,
    ) -> list[dict[str, Any]]:
        """GET /future/order, mapped like the stream's orders; a closing order's side read
        as ``options['closeSide']`` says."""
        ticker = None
        if symbol is not None:
            await self.load_markets()
            ticker = self.market(symbol)["id"]
        records = await self._rest(self._client().open_orders(ticker=ticker, size=limit or 500))
        close_side = self._close_side()
        orders = []
        for record in records:
            order = dict(build.order(wire.rest_order_fields(record), None, self._symbols, record))
            order["side"] = side_of(record.get("position"), record.get("direction"), close_side)
            orders.append(order)
        orders = self.sort_by(orders, "timestamp")
        return self.filter_by_symbol_since_limit(orders, symbol, since, limit)  # type: ignore[no-any-return]

    async def fetch_order(
        self, id: str, symbol: str | None = None, params: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """An open order from GET /future/order; else the stream's last word on it (this
        process's); else ``OrderNotFound``: Bitmusa has no single-order or order-history
        endpoint, so a finished order is known only to a stream that saw it."""
        for order in await self.fetch_open_orders(symbol, None, 1000):
            if order["id"] == id:
                return order
        seen = self._cached_order(str(id))
        if seen is not None:
            return seen
        raise OrderNotFound(
            f"bitmusa order {id} is not open, and this process's user stream has not seen it "
            "(Bitmusa has no order-history endpoint: a finished order is known only to the "
            "stream of a process that was watching)"
        )

    # -- positions ---------------------------------------------------------------------------

    async def fetch_positions(
        self, symbols: list[str] | None = None, params: dict[str, Any] | None = None
    ) -> list[dict[str, Any]]:
        """GET /future/position, mapped like the stream's positions."""
        records = await self._rest(self._client().positions())
        positions = []
        for record in records:
            fields = wire.rest_position_fields(record)
            position = dict(build.position(fields, None, self._symbols, record))
            # what REST says and the stream does not (TRADING.md §3): the margins, and the
            # mark price where the record carries one
            for key, field in (
                ("markPrice", "mark_price"),
                ("maintenanceMargin", "maintenance_margin"),
                ("positionMargin", "position_margin"),
            ):
                if position.get(key) is None:
                    position[key] = self.safe_number(record, field)
            # ccxt's collateral is the margin plus the unrealized PnL (not the bare margin)
            margin = self.safe_string(record, "position_margin")
            pnl = self.safe_string(record, "unpnl")  # the record's own text: exact
            if position.get("collateral") is None and margin is not None and pnl is not None:
                position["collateral"] = self.parse_number(Precise.string_add(margin, pnl))
            positions.append(position)
        return self.filter_by_array_positions(positions, "symbol", symbols)  # type: ignore[no-any-return]

    async def close_position(
        self, symbol: str, side: str | None = None, params: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """POST /future/position/close/all for the symbol: every side of it, at the market.
        One side of a hedged symbol cannot be closed alone (``side`` is refused): use a
        reduce-only market order. The answer has no order: the stream shows it."""
        if side is not None:
            raise NotSupported(
                "bitmusa close_position closes every side of the symbol; close one side "
                "with create_order(symbol, 'market', side, amount, None, {'reduceOnly': True})"
            )
        await self.load_markets()
        market = self.market(symbol)
        response = await self._rest(self._client().close_all(market["id"]), "closePosition")
        return self.safe_order(  # type: ignore[no-any-return]
            {"info": response, "symbol": market["symbol"], "type": "market", "reduceOnly": True},
            market,
        )

    async def close_all_positions(
        self, params: dict[str, Any] | None = None
    ) -> list[dict[str, Any]]:
        """POST /future/position/close/all for every ticker. Bitmusa does not say which it
        closed: the list is empty; ``watch_positions`` shows them."""
        await self._rest(self._client().close_all("all"), "closeAllPositions")
        return []

    # -- settings ----------------------------------------------------------------------------

    async def set_leverage(
        self, leverage: float, symbol: str | None = None, params: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """POST /future/leverage, 1-125, per symbol. ``params['side']`` ``long``/``short``
        sets one side of a hedge-mode symbol (``leverage_type`` 1/2), else ONEWAY (0)."""
        if symbol is None:
            raise ArgumentsRequired("bitmusa set_leverage needs a symbol (it is per market)")
        low, high = bm_market.LEVERAGE_RANGE
        try:
            number = float(leverage)  # ccxt callers pass 8, 8.0 or "8"
        except (TypeError, ValueError):
            number = float("nan")
        if not (low <= number <= high and number == int(number)):
            raise BadRequest(f"bitmusa leverage {leverage!r}: a whole number from {low} to {high}")
        kinds = {None: 0, "long": 1, "short": 2}
        side = self.safe_string_lower(params or {}, "side")
        if side not in kinds:
            raise BadRequest(f"bitmusa set_leverage side {side!r}: 'long' or 'short'")
        await self.load_markets()
        market = self.market(symbol)
        client = self._client()
        return await self._rest(
            client.set_leverage(market["id"], int(number), kinds[side]), "setLeverage"
        )

    async def fetch_leverage(self, symbol: str, params: dict[str, Any] | None = None) -> Any:
        """GET /future/leverage with the symbol's position mode: one-way reads ONEWAY for
        both sides, hedge mode HEDGE_BUY and HEDGE_SELL. Margin mode: not said."""
        await self.load_markets()
        market = self.market(symbol)
        client = self._client()
        records, mode = await asyncio.gather(
            self._rest(client.leverage(market["id"])),
            self._rest(client.position_mode(market["id"])),
        )
        by_type = {
            self.safe_string_upper(r, "type"): self.safe_integer(r, "leverage") for r in records
        }
        hedged = wire.HEDGED.get(mode)
        return {
            "info": records,
            "symbol": market["symbol"],
            "marginMode": None,
            "longLeverage": by_type.get("HEDGE_BUY" if hedged else "ONEWAY"),
            "shortLeverage": by_type.get("HEDGE_SELL" if hedged else "ONEWAY"),
        }

    async def set_position_mode(
        self, hedged: bool, symbol: str | None = None, params: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """POST /future/position/mode, per symbol; without one, for every market in turn
        (a failure names the markets already changed)."""
        await self.load_markets()
        chosen = [symbol] if symbol is not None else list(self.symbols)
        client = self._client()
        answers: dict[str, Any] = {}
        for name in chosen:
            market = self.market(name)
            try:
                answers[name] = await self._rest(
                    client.set_position_mode(market["id"], bool(hedged)), "setPositionMode"
                )
            except Exception as exc:
                if answers:
                    exc.args = (f"{exc} (already changed: {', '.join(answers)})",)
                raise
        return {"info": answers if symbol is None else answers[symbol]}

    async def fetch_position_mode(
        self, symbol: str | None = None, params: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """GET /future/position/mode: the mode is per symbol, so one is needed."""
        if symbol is None:
            raise ArgumentsRequired("bitmusa fetch_position_mode needs a symbol (it is per market)")
        await self.load_markets()
        market = self.market(symbol)
        data = await self._rest(self._client().position_mode(market["id"]))
        return {"info": data, "hedged": wire.HEDGED.get(data)}

    # -- balance and fills -------------------------------------------------------------------

    async def fetch_balance(self, params: dict[str, Any] | None = None) -> dict[str, Any]:
        """GET /future/wallet: free = available, used = wallet - available."""
        records = await self._rest(self._client().wallet())
        assets = dict(build.asset(wire.rest_wallet_fields(record)) for record in records)
        balance: dict[str, Any] = dict(build.balance(assets, records, None))
        return balance

    async def fetch_my_trades(
        self,
        symbol: str | None = None,
        since: int | None = None,
        limit: int | None = None,
        params: dict[str, Any] | None = None,
    ) -> list[dict[str, Any]]:
        """GET /future/trade/history (page after page): one trade per record, with fee and
        role; its id is the history's (``watch_my_trades`` ids are ``"<order>:<filled>"``:
        a lone record does not know its order's cumulative fill). Oldest first."""
        ticker = None
        if symbol is not None:
            await self.load_markets()
            ticker = self.market(symbol)["id"]
        client = self._client()
        if since is None:
            records = await self._rest(client.trade_history(ticker, limit=limit))
        else:
            records = await self._history_since(client, ticker, since)
        close_side = self._close_side()
        trades = []
        for record in reversed(records):  # oldest first; the sort below keeps ties so
            try:
                trades.append(dict(history_trade(record, self._symbols, close_side)))
            except Reject as exc:
                log.warning("bitmusa: a trade-history record skipped (%s)", exc.message)
        trades = self.sort_by(trades, "timestamp")
        return self.filter_by_symbol_since_limit(trades, symbol, since, limit, since is None)  # type: ignore[no-any-return]

    async def _history_since(self, client: Any, ticker: str | None, since: int) -> list[Any]:
        """Every record from ``since`` on (the first ``limit`` after it are wanted, and
        the history comes newest first, ``HISTORY_PAGE * HISTORY_PAGES`` a call): when a
        call comes back full, the next asks for what is not newer than its oldest record,
        until ``since`` is reached; records seen twice (the shared second) count once.
        Never a silently cut answer."""
        full = HISTORY_PAGE * HISTORY_PAGES
        records: dict[Any, Any] = {}
        until: int | None = None
        for _ in range(_HISTORY_ROUNDS):
            batch = await self._rest(client.trade_history(ticker, since_ms=since, until_ms=until))
            for record in batch:
                records.setdefault(record.get("id") or id(record), record)
            if len(batch) < full:
                return list(records.values())
            oldest = min((t for t in map(record_time, batch) if t is not None), default=None)
            # the server wants an end after the start; the oldest second is read again
            narrower = None if oldest is None else max(oldest, since + 1)
            if narrower is None or narrower == until:
                break  # a full answer within one second: the times cannot narrow it
            until = narrower
        raise ExchangeError(
            f"bitmusa fetch_my_trades: more than {len(records)} fills since {since} "
            "(the history is read newest first): ask for a later since, or one symbol"
        )

    # -- helpers -----------------------------------------------------------------------------

    async def _ticker_or_all(self, symbol: str | None) -> str:
        if symbol is None:
            return "all"
        await self.load_markets()
        return str(self.market(symbol)["id"])

    async def edit_order(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """Not supported: Bitmusa cannot amend an order, and ccxt's emulation (cancel, then
        create) is not atomic: cancel, then create, yourself."""
        raise NotSupported(
            "bitmusa edit_order: Bitmusa cannot amend an order; cancel it and create another"
        )
