"""The wire: the one place that knows Bitmusa's field names, codes and frame shape.

A user-stream frame is decoded here (:func:`decode`), and each kind of payload, stream or
REST, becomes a tuple of its fields in one fixed order (:func:`order_fields`,
:func:`rest_order_fields`, ...), which the pure builders in ``build.py`` turn into ccxt's
structures. A snapshot and a live event with the same facts give the same tuple, so they
map to the same unified object. The enum tables translate Bitmusa's values (documented
strings, and numeric codes as int or digit string) into ccxt's vocabulary. Pure: no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import orjson

from bitmusa_plugin._core.numbers import (
    MAX_TIMESTAMP,
    MISSING_STRINGS,
    Reject,
    is_missing,
    number,
    pair,
    sub,
    timestamp,
    to_str,
    utc_timestamp,
)

#: Frames longer than this (bytes or characters) are rejected unread. User-stream
#: frames are a few hundred bytes; 64 KiB leaves room for any real payload.
DEFAULT_MAX_FRAME_BYTES = 65536

#: The user streams, and the hook and argument each maps to.
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


_TRAILING_COMMA = re.compile(rb",(\s*[}\]])")


# -- frames ------------------------------------------------------------------------------


def decode(
    raw: str | bytes, max_bytes: int
) -> tuple[str, dict[str, Any], int | None, tuple[Any, ...]]:
    """A frame's ``(stream, data, eventTime, fields)``, the fields as
    :func:`order_fields`, :func:`position_fields` or :func:`wallet_fields` give them;
    :class:`Reject` when it cannot be read."""
    if len(raw) > max_bytes:
        raise Reject("oversize", f"frame of {len(raw)} bytes exceeds {max_bytes}")
    try:
        frame = orjson.loads(raw)
    except orjson.JSONDecodeError:
        frame = _lenient(raw)
    if type(frame) is not dict:
        raise Reject("not_an_object", f"frame is a JSON {type(frame).__name__}")
    # subscripts, not .get(): a frame has these three keys, and a dict subscript costs
    # half a method call; a missing one reads as None, as .get() gave it
    try:
        stream = frame["stream"]
    except KeyError:
        stream = None
    if type(stream) is not str or stream not in STREAM_HOOKS:
        raise Reject("unknown_stream", f"unknown stream {stream!r:.64}")
    try:
        data = frame["data"]
    except KeyError:
        data = None
    if type(data) is not dict:
        raise Reject(
            "missing_field" if is_missing(data) else "invalid_field",
            f"{stream}: data must be an object",
        )
    try:
        event_time = frame["eventTime"]
    except KeyError:
        event_time = None
    if type(event_time) is not int or not 0 <= event_time <= MAX_TIMESTAMP:
        event_time = timestamp(event_time, "eventTime")
    # The fields, spelt out here rather than by calling order_fields & co: one Python call
    # less per frame (callgrind: ~2,000 instructions of an order's 85,000). A test holds
    # both spellings to ORDER_KEYS / POSITION_KEYS.
    g = data.get
    if stream == "future_order":
        fields: tuple[Any, ...] = (
            g("orderId"),
            g("ticker"),
            g("status"),
            g("type"),
            g("position"),
            g("direction"),
            g("tif"),
            g("price"),
            g("amount"),
            g("tradedAmount"),
            g("value"),
            g("createdTime"),
            g("completedTime"),
        )
    elif stream == "future_position":
        fields = (
            g("ticker"),
            g("position"),
            g("marginMode"),
            g("positionMode"),
            g("status"),
            g("leverage"),
            g("price"),
            g("amount"),
            g("value"),
            g("liquidPrice"),
            g("unpnl"),
            g("createdTime"),
        )
    else:
        fields = (g("asset"), g("free"), g("locked"))
    return stream, data, event_time, fields


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


def object_key(text: str) -> tuple[str, object] | None:
    """The object a raw frame updates (``("order", id)``, ``("wallet", asset)``, or
    ``("symbol", ticker)`` for a position, whose side is not known before mapping), or None
    for a frame that does not decode. Resync leaves objects with a held frame to it."""
    try:
        stream, data, _, _ = decode(text, DEFAULT_MAX_FRAME_BYTES)
    except Reject:
        return None
    if stream == "future_order":
        return ("order", str(data.get("orderId")))
    if stream == "future_wallet":
        return ("wallet", data.get("asset"))
    return ("symbol", data.get("ticker"))


# -- values ------------------------------------------------------------------------------


def enum(value: object, table: Mapping[object, Any], name: str) -> Any:
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


def required_str(value: object, name: str) -> str:
    """A field that must be there: an id or a ticker (ints accepted, as digit strings)."""
    if type(value) is str:
        s = value
        if len(s) > 4 or s.lower() not in MISSING_STRINGS:  # "", "null", "none"
            return s
        raise Reject("missing_field", f"{name} is missing")
    if type(value) is int:
        return str(value)
    if value is None:
        raise Reject("missing_field", f"{name} is missing")
    raise Reject("invalid_field", f"{name}: expected a string, got {type(value).__name__}")


def enum_key(value: object) -> object:
    """Normalise a flag-like enum value for a table lookup (``"close"`` -> ``"CLOSE"``)."""
    if type(value) is str:
        return value.upper()
    if type(value) is int:
        return value
    raise Reject("invalid_field", f"expected a string or code, got {type(value).__name__}")


# -- payloads as field tuples -------------------------------------------------------------
#
# Orders: (id, ticker, status, type, side, direction, time in force, price, amount, filled,
# cost, created, completed). Positions: (ticker, side, margin mode, position mode, status,
# leverage, entry price, contracts, notional, liquidation price, unrealised pnl, created).
# Wallet entries: (asset, free, locked). A stream payload and a REST record of the same
# facts give the same tuple (REST times are read as UTC).

OrderFields = tuple[Any, ...]
PositionFields = tuple[Any, ...]
WalletFields = tuple[Any, Any, Any]

ORDER_KEYS = (
    "orderId",
    "ticker",
    "status",
    "type",
    "position",
    "direction",
    "tif",
    "price",
    "amount",
    "tradedAmount",
    "value",
    "createdTime",
    "completedTime",
)
POSITION_KEYS = (
    "ticker",
    "position",
    "marginMode",
    "positionMode",
    "status",
    "leverage",
    "price",
    "amount",
    "value",
    "liquidPrice",
    "unpnl",
    "createdTime",
)


def order_fields(data: Mapping[str, Any]) -> OrderFields:
    """A ``future_order`` payload's fields (``ORDER_KEYS``, spelt out: on the hot path an
    explicit tuple is faster than ``tuple(map(data.get, ORDER_KEYS))``)."""
    g = data.get
    return (
        g("orderId"),
        g("ticker"),
        g("status"),
        g("type"),
        g("position"),
        g("direction"),
        g("tif"),
        g("price"),
        g("amount"),
        g("tradedAmount"),
        g("value"),
        g("createdTime"),
        g("completedTime"),
    )


def position_fields(data: Mapping[str, Any]) -> PositionFields:
    """A ``future_position`` payload's fields (``POSITION_KEYS``, spelt out)."""
    g = data.get
    return (
        g("ticker"),
        g("position"),
        g("marginMode"),
        g("positionMode"),
        g("status"),
        g("leverage"),
        g("price"),
        g("amount"),
        g("value"),
        g("liquidPrice"),
        g("unpnl"),
        g("createdTime"),
    )


def wallet_fields(data: Mapping[str, Any]) -> WalletFields:
    """A ``future_wallet`` payload's fields."""
    return (data.get("asset"), data.get("free"), data.get("locked"))


def rest_order_fields(item: Mapping[str, Any]) -> OrderFields:
    """A GET /future/order record's fields."""
    g = item.get
    return (
        g("order_id"),
        g("ticker"),
        g("status"),
        g("order_type"),
        g("position"),
        g("direction"),
        g("tif_mode"),
        g("order_price"),
        g("order_qty"),
        g("traded_qty"),
        g("traded_value"),
        utc_timestamp(g("order_time"), "order_time"),
        utc_timestamp(g("filled_time"), "filled_time"),
    )


def rest_position_fields(item: Mapping[str, Any]) -> PositionFields:
    """A GET /future/position record's fields (its numeric status is not a closing one)."""
    g = item.get
    return (
        g("ticker"),
        g("position"),
        g("margin_mode"),
        g("position_mode"),
        None,
        g("leverage"),
        g("entry_price"),
        g("qty"),
        g("value"),
        g("liquid_price"),
        g("unpnl"),
        utc_timestamp(g("entry_time"), "entry_time"),
    )


def rest_wallet_fields(item: Mapping[str, Any]) -> WalletFields:
    """A GET /future/wallet record's fields: free is the available balance, locked is what
    the wallet holds beyond it (never below zero)."""
    available = number(item.get("total_available_balance"), "total_available_balance")
    wallet = number(item.get("total_wallet_balance"), "total_wallet_balance")
    if available is None or wallet is None:
        raise Reject("missing_field", "total_available_balance and total_wallet_balance")
    locked = sub(pair(item.get("total_wallet_balance")), pair(item.get("total_available_balance")))
    free = item.get("total_available_balance")
    return (item.get("symbol"), free, to_str(locked) if locked[0] > 0 else "0")
