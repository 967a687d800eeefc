"""Resync after a gap: which snapshot objects to deliver. Pure: no I/O.

After every gap (and at start-up) the engine fetches the wallet, the positions and the open
orders over REST while it holds the new connection's first frames back, then delivers,
through the normal hooks with ``event["stream"] == "resync"``, every snapshot object that
differs from the last one delivered, and only then the held frames.

*Stale data never overwrites newer data*: an object with a live frame among the held ones
is left to that frame, which is at least as new as the snapshot (anything that changed it
after the connection opened produced a frame we hold). Objects without one take the
snapshot, which is newer than anything delivered before the outage.

The :class:`Ledger` remembers, per account, the last delivered state of every open order
and open position (only the fields a snapshot can revise), so it stays as small as the
account's open book.
"""

from __future__ import annotations

import operator
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from bitmusa_plugin._core.mapping import (
    Mapper,
    rest_order_data,
    rest_position_data,
    rest_wallet_data,
)
from bitmusa_plugin._core.numbers import Reject

ORDER_FIELDS = (
    "status",
    "filled",
    "remaining",
    "amount",
    "price",
    "average",
    "cost",
    "side",
    "type",
    "reduceOnly",
    "timeInForce",
    "symbol",
)
POSITION_FIELDS = (
    "contracts",
    "entryPrice",
    "notional",
    "leverage",
    "liquidationPrice",
    "unrealizedPnl",
    "marginMode",
    "side",
    "hedged",
    "symbol",
)
# Tuples of those fields, taken in C: a dict comprehension per event cost ~2 µs on the hot
# path (issue 12's profile of `listen --output jsonl`).
_order_fields = operator.itemgetter(*ORDER_FIELDS)
_position_fields = operator.itemgetter(*POSITION_FIELDS)
Fields = tuple[Any, ...]

#: GET /future/order page size we ask for; a full page proves nothing about the rest.
OPEN_ORDERS_PAGE = 500

Key = tuple[str, object]


def position_key(symbol: object, side: object, hedged: object) -> Key:
    """One-way accounts have one position per symbol; hedged ones one per side."""
    return ("position", (symbol, side) if hedged else (symbol, None))


@dataclass
class Ledger:
    """The last delivered state of open orders and open positions, for one account: the
    values of ``ORDER_FIELDS`` / ``POSITION_FIELDS``, as tuples."""

    orders: dict[str, Fields] = field(default_factory=dict)
    positions: dict[Key, Fields] = field(default_factory=dict)

    def record(self, hook: str, obj: Mapping[str, Any]) -> None:
        if hook == "on_order":
            if obj["status"] == "open":
                self.orders[obj["id"]] = _order_fields(obj)
            else:
                self.orders.pop(obj["id"], None)
        elif hook == "on_position":
            key = position_key(obj["symbol"], obj["side"], obj["hedged"])
            if obj["contracts"]:
                self.positions[key] = _position_fields(obj)
            else:
                self.positions.pop(key, None)

    def order(self, order_id: str) -> dict[str, Any]:
        """The last delivered facts of an open order, by field name."""
        return dict(zip(ORDER_FIELDS, self.orders[order_id], strict=True))

    def position(self, key: Key) -> dict[str, Any]:
        """The last delivered facts of an open position, by field name."""
        return dict(zip(POSITION_FIELDS, self.positions[key], strict=True))


def held_keys(frames: Iterable[str]) -> set[Key]:
    """The objects that held live frames will update (frames that do not parse: none)."""
    keys: set[Key] = set()
    for text in frames:
        try:
            frame = orjson.loads(text)
            data = frame["data"]
            stream = frame["stream"]
            if stream == "future_order":
                keys.add(("order", str(data["orderId"])))
            elif stream == "future_wallet":
                keys.add(("wallet", data["asset"]))
            elif stream == "future_position":
                # the side is not known before mapping: hold the whole symbol back
                keys.add(("symbol", data["ticker"]))
        except (orjson.JSONDecodeError, KeyError, TypeError):
            continue
    return keys


@dataclass
class Delivery:
    hook: str
    key: str
    obj: dict[str, Any]
    data: Any


@dataclass
class Plan:
    deliveries: list[Delivery] = field(default_factory=list)
    vanished_orders: list[str] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)  # records that could not be mapped


def plan(
    ledger: Ledger,
    mapper: Mapper,
    *,
    wallet: list[dict[str, Any]],
    positions: list[dict[str, Any]],
    orders: list[dict[str, Any]],
    held: set[Key],
    orders_complete: bool = True,
) -> Plan:
    """What to deliver. Updates the mapper's wallet and the ledger as it goes."""
    result = Plan()
    for item in wallet:
        try:
            data = rest_wallet_data(item)
            asset = data["asset"]
            if ("wallet", asset) in held:
                continue
            before = mapper.asset(asset)
            balance = mapper.wallet(data, None)
            after = mapper.asset(asset)
        except Reject as exc:
            result.rejected.append(f"wallet: {exc.message}")
            continue
        if before != after:
            balance["info"] = item
            result.deliveries.append(Delivery("on_wallet", "balance", dict(balance), item))

    seen_positions: set[Key] = set()
    for item in positions:
        try:
            position: dict[str, Any] = dict(mapper.position(rest_position_data(item), None))
        except Reject as exc:
            result.rejected.append(f"position: {exc.message}")
            continue
        key = position_key(position["symbol"], position["side"], position["hedged"])
        seen_positions.add(key)
        if ("symbol", item.get("ticker")) in held:
            continue
        position["info"] = item
        if ledger.positions.get(key) != _position_fields(position):
            result.deliveries.append(Delivery("on_position", "position", dict(position), item))
            ledger.record("on_position", position)
    for key in list(ledger.positions):
        last = ledger.position(key)
        symbol = last["symbol"]
        if key in seen_positions or ("symbol", _ticker_of(mapper, symbol)) in held:
            continue
        # Listed nowhere in the snapshot: the position went flat during the outage.
        info = {"resync": "absent from GET /future/position: the position is flat"}
        flat = dict(last, contracts=0.0, notional=0.0, unrealizedPnl=None)
        flat_obj: dict[str, Any] = dict(mapper.flat_position(flat, info))
        result.deliveries.append(Delivery("on_position", "position", flat_obj, info))
        ledger.record("on_position", flat_obj)

    seen_orders: set[str] = set()
    for item in orders:
        try:
            order: dict[str, Any] = dict(mapper.order(rest_order_data(item), None))
        except Reject as exc:
            result.rejected.append(f"order: {exc.message}")
            continue
        order_id = str(order["id"])
        seen_orders.add(order_id)
        if ("order", order_id) in held:
            continue
        order["info"] = item
        if ledger.orders.get(order_id) != _order_fields(order):
            result.deliveries.append(Delivery("on_order", "order", dict(order), item))
            ledger.record("on_order", order)
    if orders_complete:
        for order_id in list(ledger.orders):
            if order_id not in seen_orders and ("order", order_id) not in held:
                # Filled or cancelled during the outage: the open-orders snapshot cannot
                # say which (Bitmusa documents no futures order history endpoint). It is
                # delivered as no longer open, with status None, and reported.
                result.vanished_orders.append(order_id)
                info = {"resync": "absent from GET /future/order: filled or cancelled"}
                vanished = dict(mapper.vanished_order(order_id, ledger.order(order_id), info))
                result.deliveries.append(Delivery("on_order", "order", vanished, info))
                del ledger.orders[order_id]
    return result


def _ticker_of(mapper: Mapper, symbol: str) -> str | None:
    for ticker, known in mapper.symbols.known.items():
        if known == symbol:
            return ticker
    return None
