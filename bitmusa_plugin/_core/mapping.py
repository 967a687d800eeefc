"""Bitmusa user-stream frames -> ccxt unified structures. Pure: no I/O, no ccxt import.

One :class:`Mapper` per account turns a raw text frame into a :class:`Mapped` (which hook
to call with which unified object) or a :class:`Rejected` (one error report). It never
raises. It holds the only per-account state the mapping needs: the cumulative wallet.

Derived fields follow ccxt's ``safe_order`` / ``safe_balance`` / ``safe_position`` to the
letter, on exact decimals (see ``_numbers``); ``tests/test_mapping_exact.py`` checks every
output against ccxt itself. The decisions are tabled in ``docs/mapping.md``.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import orjson

from bitmusa_hookspecs import Balance, ErrorInfo, Event, Order, Position, error_info
from bitmusa_plugin._core.numbers import (
    MAX_TIMESTAMP,
    MISSING_STRINGS,
    Pair,
    Reject,
    add,
    div,
    is_missing,
    iso8601,
    mul,
    norm,
    number,
    pair,
    sub,
    timestamp,
    to_float,
    to_str,
    utc_timestamp,
)

log = logging.getLogger(__name__)

#: Frames longer than this (bytes or characters) are rejected unread. User-stream
#: frames are a few hundred bytes; 64 KiB leaves room for any real payload.
DEFAULT_MAX_FRAME_BYTES = 65536
#: Quote currencies recognised at the end of a ticker, longest first.
QUOTES = ("USDT", "USDC", "USD")

STREAM_HOOKS = {
    "future_order": ("on_order", "order"),
    "future_wallet": ("on_wallet", "balance"),
    "future_position": ("on_position", "position"),
}

# Enum tables. Keys are the documented strings and numeric codes (as int and as digit
# string); anything else passes through lowercased (see _enum).
ORDER_STATUS: dict[object, str] = {
    "TRADING": "open",
    "PARTIAL": "open",
    "FILLED": "closed",
    "CANCELLED": "canceled",
    "CANCELED": "canceled",
    0: "open",
    4: "open",
    1: "closed",
    3: "closed",
    2: "canceled",
}
ORDER_TYPE: dict[object, str] = {
    "MARKET": "market",
    "LIMIT": "limit",
    "TAKE_PROFIT": "take_profit",
    "STOP_LOSS": "stop_loss",
    "LIQUIDATION": "liquidation",
    0: "market",
    1: "limit",
    2: "take_profit",
    3: "stop_loss",
    4: "liquidation",
}
ORDER_SIDE: dict[object, str] = {"BUY": "buy", "SELL": "sell", 0: "buy", 1: "sell"}
REDUCE_ONLY: dict[object, bool] = {"OPEN": False, "CLOSE": True, 0: False, 1: True}
TIME_IN_FORCE: dict[object, str] = {
    "GTC": "GTC",
    "IOC": "IOC",
    "FOK": "FOK",
    0: "GTC",
    1: "IOC",
    2: "FOK",
}
POSITION_SIDE: dict[object, str] = {"BUY": "long", "SELL": "short", 0: "long", 1: "short"}
MARGIN_MODE: dict[object, str] = {
    "ISOLATED": "isolated",
    "CROSSED": "cross",
    "CROSS": "cross",
    0: "isolated",
    1: "cross",
}
HEDGED: dict[object, bool] = {"HEDGE": True, "ONEWAY": False, 0: False, 1: True}
#: Position statuses that mean the position is now flat.
CLOSING_STATUSES = frozenset(("USER_CLOSE", "FORCE_CLOSE", "TAKE_PROFIT", "STOP_LOSS"))

# Codes also arrive as digit strings ("4"): index those too.
for _table in (ORDER_STATUS, ORDER_TYPE, ORDER_SIDE, TIME_IN_FORCE, POSITION_SIDE, MARGIN_MODE):
    _table.update({str(k): v for k, v in list(_table.items()) if type(k) is int})
for _flags in (REDUCE_ONLY, HEDGED):
    _flags.update({str(k): v for k, v in list(_flags.items()) if type(k) is int})

#: Every key of a unified order, in ccxt's order; each order starts as a copy of this.
_ORDER_TEMPLATE: dict[str, Any] = dict.fromkeys(Order.__annotations__)
_POSITION_TEMPLATE: dict[str, Any] = dict.fromkeys(Position.__annotations__)

_ONE: Pair = (1, 0)
_INVERSE: dict[Pair, float | None] = {}  # leverage -> initialMarginPercentage
_MISSING: Any = object()
_ZERO: Pair = (0, 0)
_TRAILING_COMMA = re.compile(rb",(\s*[}\]])")


class Mapped(NamedTuple):
    """An accepted frame: call ``hook`` with ``{key: obj, "event": event}``."""

    hook: str
    key: str
    obj: dict[str, Any]
    event: Event


_new_mapped = tuple.__new__


class Rejected(NamedTuple):
    """A frame that could not be accepted, as its one error report."""

    error: ErrorInfo


def _enum(value: object, table: Mapping[object, Any], name: str) -> Any:
    """Look a documented value up; pass an unknown one through lowercased."""
    if type(value) is str:
        s = value
        found = table.get(s)
        if found is not None:
            return found
        if len(s) <= 4 and s.lower() in MISSING_STRINGS:
            return None
        found = table.get(s.upper())
        return found if found is not None else s.lower()
    if type(value) is int:  # exact type: a JSON true must not pass for code 1
        found = table.get(value)
        return found if found is not None else str(value)
    if value is None:
        return None
    raise Reject("invalid_field", f"{name}: expected a string or code, got {type(value).__name__}")


def _required_str(data: Mapping[str, Any], key: str) -> str:
    value = data.get(key)
    if type(value) is str:
        s = value
        if len(s) > 4 or s.lower() not in MISSING_STRINGS:  # "", "null", "none"
            return s
        raise Reject("missing_field", f"{key} is missing")
    if type(value) is int:
        return str(value)
    if value is None:
        raise Reject("missing_field", f"{key} is missing")
    raise Reject("invalid_field", f"{key}: expected a string, got {type(value).__name__}")


def _non_negative(value: float | None, name: str) -> None:
    if value is not None and value < 0:
        raise Reject("invalid_value", f"{name}: {value} is negative")


class SymbolMap:
    """Bitmusa tickers -> ccxt symbols (``XRPUSDT`` -> ``XRP/USDT:USDT``), cached.

    ``markets`` (ticker -> unified symbol) overrides the rule. A ticker that ends in no
    known quote passes through unchanged, with one warning per ticker.
    """

    __slots__ = ("known",)

    def __init__(self, markets: Mapping[str, str] | None = None) -> None:
        #: ticker -> symbol for every ticker seen (and every one given); read it directly
        #: on hot paths, call the map for a ticker not in it yet.
        self.known: dict[str, str] = dict(markets or {})

    def __call__(self, ticker: str) -> str:
        symbol = self.known.get(ticker)
        if symbol is None:
            symbol = self._derive(ticker)
            self.known[ticker] = symbol
        return symbol

    @staticmethod
    def _derive(ticker: str) -> str:
        upper = ticker.upper()
        for quote in QUOTES:
            if upper.endswith(quote) and len(upper) > len(quote):
                return f"{upper[: -len(quote)]}/{quote}:{quote}"
        log.warning("unknown ticker %r: no known quote currency, passing it through", ticker)
        return ticker


class _Asset(NamedTuple):
    free: float
    used: float
    total: float


class Mapper:
    """Maps one account's frames. ``feed`` never raises."""

    __slots__ = ("_assets", "_clock", "_dispatch", "account", "max_frame_bytes", "symbols")

    def __init__(
        self,
        account: str = "default",
        markets: Mapping[str, str] | None = None,
        *,
        symbols: SymbolMap | None = None,
        max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.account = account
        self.symbols = symbols if symbols is not None else SymbolMap(markets)
        self.max_frame_bytes = max_frame_bytes
        self._clock = clock
        self._assets: dict[str, _Asset] = {}
        self._dispatch: dict[str, Callable[[dict[str, Any], int | None], dict[str, Any]]] = {
            "future_order": self.order,  # type: ignore[dict-item]
            "future_wallet": self.wallet,  # type: ignore[dict-item]
            "future_position": self.position,  # type: ignore[dict-item]
        }

    # -- frames --------------------------------------------------------------------------

    def feed(self, raw: str | bytes, received_at: int | None = None) -> Mapped | Rejected:
        """Decode and map one text frame."""
        if received_at is None:
            received_at = int(self._clock() * 1000)
        try:
            if len(raw) > self.max_frame_bytes:
                raise Reject(
                    "oversize", f"frame of {len(raw)} bytes exceeds {self.max_frame_bytes}"
                )
            try:
                frame = orjson.loads(raw)
            except orjson.JSONDecodeError:
                frame = self._lenient(raw)
            if type(frame) is not dict:
                raise Reject("not_an_object", f"frame is a JSON {type(frame).__name__}")
            stream = frame.get("stream")
            if type(stream) is not str or (build := self._dispatch.get(stream)) is None:
                raise Reject("unknown_stream", f"unknown stream {stream!r:.64}")
            data = frame.get("data")
            if type(data) is not dict:
                raise Reject(
                    "missing_field" if is_missing(data) else "invalid_field",
                    f"{stream}: data must be an object",
                )
            event_time = frame.get("eventTime")
            if type(event_time) is not int or not 0 <= event_time <= MAX_TIMESTAMP:
                event_time = timestamp(event_time, "eventTime")
            obj = build(data, event_time)
        except Reject as exc:
            return Rejected(error_info(exc.kind, exc.message, self.account, raw))
        except Exception as exc:  # a bug of ours must not stop the stream either
            log.exception("bitmusa mapping failed unexpectedly")
            return Rejected(error_info("internal", repr(exc), self.account, raw))
        hook, key = STREAM_HOOKS[stream]
        event: Event = {
            "account": self.account,
            "stream": stream,
            "eventTime": event_time,
            "receivedAt": received_at,
            "data": data,
        }
        return _new_mapped(Mapped, (hook, key, obj, event))  # NamedTuple.__new__ is slow

    @staticmethod
    def _lenient(raw: str | bytes) -> Any:
        # The documented position example has a trailing comma; retry once without them.
        text = raw.encode("utf-8", "surrogateescape") if isinstance(raw, str) else raw
        repaired = _TRAILING_COMMA.sub(rb"\1", text)
        try:
            if repaired != text:
                return orjson.loads(repaired)
        except orjson.JSONDecodeError:
            pass
        raise Reject("malformed_json", "frame is not valid JSON")

    # -- structures ------------------------------------------------------------------------

    def order(self, data: dict[str, Any], event_time: int | None) -> Order:
        """``future_order`` data -> ccxt order, with ``safe_order``'s derivations."""
        g = data.get
        order_id = g("orderId")
        if type(order_id) is not str or len(order_id) <= 4:  # "", "null", "none", or ints
            order_id = _required_str(data, "orderId")
        v = g("ticker")
        symbol = self.symbols.known.get(v) if type(v) is str else None
        if symbol is None:
            symbol = self.symbols(_required_str(data, "ticker"))
        # enum fast path: a documented string is one dict lookup; anything else -> _enum
        v = g("status")
        status = ORDER_STATUS.get(v) if type(v) is str else None
        if status is None:
            status = _enum(v, ORDER_STATUS, "status")
        v = g("type")
        otype = ORDER_TYPE.get(v) if type(v) is str else None
        if otype is None:
            otype = _enum(v, ORDER_TYPE, "type")
        v = g("position")
        side = ORDER_SIDE.get(v) if type(v) is str else None
        if side is None:
            side = _enum(v, ORDER_SIDE, "position")
        v = g("direction")
        reduce_only = REDUCE_ONLY.get(v) if type(v) is str else None
        if reduce_only is None and not is_missing(v):
            reduce_only = REDUCE_ONLY.get(_enum_key(v))
        v = g("tif")
        tif = TIME_IN_FORCE.get(v) if type(v) is str else None
        if tif is None and v is not None:
            tif = _enum(v, TIME_IN_FORCE, "tif")
            if tif is not None:
                tif = tif.upper()
        raw_price, raw_amount, raw_filled, raw_cost = (
            g("price"),
            g("amount"),
            g("tradedAmount"),
            g("value"),
        )
        price = number(raw_price, "price")
        amount = number(raw_amount, "amount")
        filled = number(raw_filled, "tradedAmount")
        cost = number(raw_cost, "value")
        if (
            (price is not None and price < 0)
            or (amount is not None and amount < 0)
            or (filled is not None and filled < 0)
            or (cost is not None and cost < 0)
        ):
            raise Reject("invalid_value", "price, amount, tradedAmount and value must be >= 0")
        created = g("createdTime")
        if type(created) is not int or not 0 <= created <= MAX_TIMESTAMP:
            created = timestamp(created, "createdTime")
        completed = g("completedTime")
        if completed is not None:
            completed = timestamp(completed, "completedTime")

        # safe_order: a zero price or amount means none was given.
        if not price:
            price = None
        amount_p: Pair | None = None
        if amount:
            amount_p = pair(raw_amount)
        else:
            amount = None
        filled_p = None if filled is None else pair(raw_filled)
        closed = status == "closed"
        if amount is None and closed:
            amount, amount_p = filled, filled_p
        if filled is None and closed and amount is not None:
            filled, filled_p = amount, amount_p
        remaining: float | None = None
        if amount_p is not None and filled_p is not None:
            remaining_p = sub(amount_p, filled_p)
            if remaining_p[0] < 0:
                raise Reject("invalid_value", "tradedAmount exceeds amount")
            remaining = to_float(remaining_p)
        elif closed:
            remaining = 0.0
        average: float | None = None
        if filled_p is not None:
            # safe_order re-reads filled * contractSize (1) from its string: norm()
            if cost is not None:
                if filled_p[0] > 0:
                    average = to_float(div(pair(raw_cost), norm(filled_p)))
            elif price is not None:
                cost = to_float(mul(norm(filled_p), pair(raw_price)))
        if price is None and otype == "market":
            price = average
        post_only = None
        if tif is None:
            if otype == "market":
                tif = "IOC"
        else:
            post_only = tif == "PO"
        # A template copy plus assignments is twice as fast as a 28-key dict literal.
        result = _ORDER_TEMPLATE.copy()
        result["info"] = data
        result["id"] = order_id
        result["timestamp"] = created
        result["datetime"] = iso8601(created)
        result["lastTradeTimestamp"] = completed
        result["lastUpdateTimestamp"] = event_time
        result["symbol"] = symbol
        result["type"] = otype
        result["timeInForce"] = tif
        result["postOnly"] = post_only
        result["reduceOnly"] = reduce_only
        result["side"] = side
        result["price"] = price
        result["amount"] = amount
        result["cost"] = cost
        result["average"] = average
        result["filled"] = filled
        result["remaining"] = remaining
        result["status"] = status
        result["fees"] = []
        result["trades"] = []
        return result  # type: ignore[return-value]

    def wallet(self, data: dict[str, Any], event_time: int | None) -> Balance:
        """``future_wallet`` data -> the whole account balance after this update."""
        asset = _required_str(data, "asset")
        raw_free, raw_used = data.get("free"), data.get("locked")
        free = number(raw_free, "free")
        used = number(raw_used, "locked")
        if free is None or used is None:
            raise Reject("missing_field", "free and locked are required")
        _non_negative(free, "free")
        _non_negative(used, "locked")
        total = to_float(add(pair(raw_free), pair(raw_used)))
        self._assets[asset] = _Asset(free, used, total)
        return self.balance(data, event_time)

    def balance(self, info: dict[str, Any] | None = None, event_time: int | None = None) -> Balance:
        """The cumulative balance, as a fresh ccxt ``Balances`` structure."""
        result: dict[str, Any] = {
            "info": info if info is not None else {},
            "timestamp": event_time,
            "datetime": iso8601(event_time),
        }
        frees: dict[str, float] = {}
        useds: dict[str, float] = {}
        totals: dict[str, float] = {}
        for code, a in self._assets.items():
            result[code] = {"free": a.free, "used": a.used, "total": a.total}
            frees[code], useds[code], totals[code] = a.free, a.used, a.total
        result["free"], result["used"], result["total"] = frees, useds, totals
        return result  # type: ignore[return-value]

    def asset(self, code: str) -> tuple[float, float] | None:
        """The last (free, used) of ``code`` in the cumulative wallet."""
        entry = self._assets.get(code)
        return None if entry is None else (entry.free, entry.used)

    def vanished_order(self, order_id: str, last: Mapping[str, Any], info: dict[str, Any]) -> Order:
        """An order no longer open whose end is unknown (resync): last facts, status None."""
        result = _ORDER_TEMPLATE.copy()
        result.update(last)
        result["id"] = order_id
        result["status"] = None  # filled or cancelled: the snapshot cannot say which
        result["remaining"] = None
        result["info"] = info
        result["fees"] = []
        result["trades"] = []
        return result  # type: ignore[return-value]

    def flat_position(self, last: Mapping[str, Any], info: dict[str, Any]) -> Position:
        """A position known to be flat now, from its last known facts (resync)."""
        result = _POSITION_TEMPLATE.copy()
        for key in ("symbol", "side", "marginMode", "hedged", "leverage", "entryPrice"):
            result[key] = last.get(key)
        result["contracts"] = 0.0
        result["notional"] = 0.0
        result["contractSize"] = 1.0
        result["info"] = info
        return result  # type: ignore[return-value]

    def position(self, data: dict[str, Any], event_time: int | None) -> Position:
        """``future_position`` data -> ccxt position, with ``safe_position``'s derivations."""
        g = data.get
        v = g("ticker")
        symbol = self.symbols.known.get(v) if type(v) is str else None
        if symbol is None:
            symbol = self.symbols(_required_str(data, "ticker"))
        # enum fast paths, as for orders: one lookup for a documented string
        v = g("position")
        side = POSITION_SIDE.get(v) if type(v) is str else None
        if side is None:
            side = _enum(v, POSITION_SIDE, "position")
        v = g("marginMode")
        margin_mode = MARGIN_MODE.get(v) if type(v) is str else None
        if margin_mode is None:
            margin_mode = _enum(v, MARGIN_MODE, "marginMode")
        mode = g("positionMode")
        hedged = HEDGED.get(mode) if type(mode) is str else None
        if hedged is None and not is_missing(mode):
            hedged = HEDGED.get(_enum_key(mode))
        status = g("status")
        raw_lev, raw_entry, raw_contracts, raw_notional, raw_liq, raw_upnl = (
            g("leverage"),
            g("price"),
            g("amount"),
            g("value"),
            g("liquidPrice"),
            g("unpnl"),
        )
        leverage = number(raw_lev, "leverage")
        entry = number(raw_entry, "price")
        contracts = number(raw_contracts, "amount")
        notional = number(raw_notional, "value")
        liquidation = number(raw_liq, "liquidPrice")
        upnl = number(raw_upnl, "unpnl")
        if (
            (leverage is not None and leverage < 0)
            or (entry is not None and entry < 0)
            or (contracts is not None and contracts < 0)
            or (notional is not None and notional < 0)
            or (liquidation is not None and liquidation < 0)
        ):
            raise Reject("invalid_value", "leverage, price, amount, value, liquidPrice: < 0")
        created = g("createdTime")
        if type(created) is not int or not 0 <= created <= MAX_TIMESTAMP:
            created = timestamp(created, "createdTime")
        if type(status) is not str:
            _enum(status, {}, "status")  # type check only: the raw status stays in info
        if type(status) is str and status.upper() in CLOSING_STATUSES:
            contracts, raw_contracts, notional, raw_notional = 0.0, "0", 0.0, "0"
        if not liquidation:
            liquidation = None

        # safe_position's derivations that our facts can reach (tests/ccxt_reference.py
        # runs ccxt's own on the same facts): no margins or mark price are sent, so only
        # markPrice (when there is no entry price), initial margin and percentage derive.
        mark: float | None = None
        im_p: Pair | None = None
        initial_margin: float | None = None
        im_percentage: float | None = None
        contracts_p = None if contracts is None else pair(raw_contracts)
        if contracts_p is None or contracts_p[0] != 0:
            notional_p = None if notional is None else pair(raw_notional)
            has_notional = notional_p is not None and notional_p[0] > 0
            if entry is None and has_notional and contracts_p is not None and contracts_p[0] > 0:
                derived = div(notional_p, norm(contracts_p))  # type: ignore[arg-type]
                if derived[0] > 0:
                    mark = to_float(derived)
            lev_p = None if leverage is None else pair(raw_lev)
            if lev_p is not None and lev_p[0] > 0:
                # 1 / leverage: a handful of leverages recur, so it is computed once each
                im_percentage = _INVERSE.get(lev_p, _MISSING)
                if im_percentage is _MISSING:
                    imp_p = div(_ONE, lev_p)
                    im_percentage = to_float(imp_p) if imp_p[0] > 0 else None
                    if len(_INVERSE) < 1024:
                        _INVERSE[lev_p] = im_percentage
                if has_notional:
                    im_p = div(notional_p, lev_p)  # type: ignore[arg-type]
                    if im_p[0] > 0:
                        initial_margin = to_float(im_p)
        percentage: float | None = None
        if upnl is not None and im_p is not None and im_p[0] != 0:
            ratio = norm(div(pair(raw_upnl), norm(im_p), 4))
            percentage = to_float(mul(ratio, (100, 0)))
        result = _POSITION_TEMPLATE.copy()  # faster than a 29-key dict literal
        result["info"] = data
        result["symbol"] = symbol
        result["timestamp"] = created
        result["datetime"] = iso8601(created)
        result["lastUpdateTimestamp"] = event_time
        result["initialMargin"] = initial_margin
        result["initialMarginPercentage"] = im_percentage
        result["entryPrice"] = entry
        result["notional"] = notional
        result["leverage"] = leverage
        result["unrealizedPnl"] = upnl
        result["contracts"] = contracts
        result["contractSize"] = 1.0
        result["liquidationPrice"] = liquidation
        result["markPrice"] = mark
        result["marginMode"] = margin_mode
        result["side"] = side
        result["percentage"] = percentage
        result["hedged"] = hedged
        return result  # type: ignore[return-value]


# -- REST snapshots (GET /future/wallet, /future/position, /future/order) -------------------
#
# The REST shapes use snake_case and numeric codes. Each record is translated into the
# stream's payload shape and mapped by the same code, so a snapshot and a live event with
# the same facts give the same unified object (resync compares them). REST-only fields
# (initial_margin, bankruptcy_price, ...) stay in ``info``.


def rest_order_data(item: Mapping[str, Any]) -> dict[str, Any]:
    """A GET /future/order record as a ``future_order`` payload."""
    g = item.get
    return {
        "orderId": g("order_id"),
        "ticker": g("ticker"),
        "direction": g("direction"),
        "position": g("position"),
        "type": g("order_type"),
        "tif": g("tif_mode"),
        "price": g("order_price"),
        "amount": g("order_qty"),
        "tradedAmount": g("traded_qty"),
        "value": g("traded_value"),
        "status": g("status"),
        "createdTime": utc_timestamp(g("order_time"), "order_time"),
        "completedTime": utc_timestamp(g("filled_time"), "filled_time"),
    }


def rest_position_data(item: Mapping[str, Any]) -> dict[str, Any]:
    """A GET /future/position record as a ``future_position`` payload."""
    g = item.get
    return {
        "ticker": g("ticker"),
        "marginMode": g("margin_mode"),
        "positionMode": g("position_mode"),
        "position": g("position"),
        "leverage": g("leverage"),
        "price": g("entry_price"),
        "amount": g("qty"),
        "value": g("value"),
        "liquidPrice": g("liquid_price"),
        "unpnl": g("unpnl"),
        "createdTime": utc_timestamp(g("entry_time"), "entry_time"),
    }


def rest_wallet_data(item: Mapping[str, Any]) -> dict[str, Any]:
    """A GET /future/wallet record as a ``future_wallet`` payload: free is the available
    balance, locked is what the wallet holds beyond it (never below zero)."""
    available = number(item.get("total_available_balance"), "total_available_balance")
    wallet = number(item.get("total_wallet_balance"), "total_wallet_balance")
    if available is None or wallet is None:
        raise Reject("missing_field", "total_available_balance and total_wallet_balance")
    locked = sub(pair(item.get("total_wallet_balance")), pair(item.get("total_available_balance")))
    return {
        "asset": item.get("symbol"),
        "free": item.get("total_available_balance"),
        "locked": to_str(locked) if locked[0] > 0 else "0",
    }


def _enum_key(value: object) -> object:
    """Normalise a flag-like enum value for a table lookup (``"close"`` -> ``"CLOSE"``)."""
    if type(value) is str:
        return value.upper()
    if type(value) is int:
        return value
    raise Reject("invalid_field", f"expected a string or code, got {type(value).__name__}")


__all__ = [
    "DEFAULT_MAX_FRAME_BYTES",
    "Mapped",
    "Mapper",
    "Rejected",
    "SymbolMap",
]
