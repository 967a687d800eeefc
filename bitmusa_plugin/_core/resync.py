"""Resync after a gap: which snapshot objects to deliver (a pure plan), then applying it.

After every gap (and at start-up) the engine fetches the wallet, the positions and the open
orders over REST while it holds the new connection's first frames back, then delivers,
through the normal hooks with ``event["stream"] == "resync"``, every snapshot object that
differs from the last one delivered, and only then the held frames.

*Stale data never overwrites newer data*: an object with a live frame among the held ones
is left to that frame, which is at least as new as the snapshot (anything that changed it
after the connection opened produced a frame we hold). Objects without one take the
snapshot, which is newer than anything delivered before the outage.

:func:`plan` reads the :class:`Ledger` and the mapper's wallet and changes neither; the
engine delivers the plan and calls :func:`apply`, which records what was delivered. The
:class:`Ledger` remembers, per account, the last delivered state of every open order and
open position (only the fields a snapshot can revise), so it stays as small as the
account's open book.

Fills: a snapshot is never a trade. After a gap (not at start-up: what filled before the
stream started is history, not news), :func:`plan_fills` adds to the plan the trades of the
fills the gap hid, recovered from the trade history (``fills.py``): each right after its
order's snapshot; an order that vanished and that the history shows wholly filled is
delivered ``closed`` instead of with an unknown status.
"""

from __future__ import annotations

import operator
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from bitmusa_plugin._core import build, wire
from bitmusa_plugin._core.build import Asset
from bitmusa_plugin._core.fills import Fills, record_time, traded
from bitmusa_plugin._core.mapping import Mapper
from bitmusa_plugin._core.numbers import Pair, Reject, add, div, number, pair, sub, to_float, to_str
from bitmusa_plugin._core.symbols import SymbolMap

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
#: what an inherited order record must hold (:func:`inherit`)
_INHERITED = frozenset((*ORDER_FIELDS, "id", "timestamp", "info"))
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
    #: each open order's creation time (ms, or None): does a gap's history window hold all
    #: of its fills?
    created: dict[str, int | None] = field(default_factory=dict)

    def record(self, hook: str, obj: Mapping[str, Any]) -> None:
        if hook == "on_order":
            if obj["status"] == "open":
                self.orders[obj["id"]] = _order_fields(obj)
                self.created[obj["id"]] = obj["timestamp"]
            else:
                self.orders.pop(obj["id"], None)
                self.created.pop(obj["id"], None)
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
    """The objects that held live frames will update (frames that do not decode: none).
    A position frame holds its whole symbol back: its side is not known before mapping."""
    return {key for key in map(wire.object_key, frames) if key is not None}


@dataclass
class Delivery:
    hook: str
    key: str
    obj: dict[str, Any]
    data: Any


@dataclass
class Plan:
    deliveries: list[Delivery] = field(default_factory=list)
    #: the wallet entries the snapshot brings (applied to the mapper by :func:`apply`)
    assets: dict[str, Asset] = field(default_factory=dict)
    vanished_orders: list[str] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)  # records that could not be mapped
    #: every open order of the snapshot, by id (held ones too), as mapped
    open_orders: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: orders with fills the trade history did not account for (an estimated trade each)
    estimated: list[str] = field(default_factory=list)
    #: orders no snapshot listed whose fills were recovered: (filled, cost) delivered
    stands: dict[str, tuple[Pair, Pair]] = field(default_factory=dict)
    #: vanished orders whose end is unknown, each with what is known of it (for the report)
    unknown_end: dict[str, str] = field(default_factory=dict)
    #: open orders whose fills before the history's window could not be proven (they
    #: filled while the history was read): their gap's fills are one estimated trade
    unproven: list[str] = field(default_factory=list)


def plan(
    ledger: Ledger,
    assets: Mapping[str, Asset],
    symbols: SymbolMap,
    *,
    wallet: list[dict[str, Any]],
    positions: list[dict[str, Any]],
    orders: list[dict[str, Any]],
    held: set[Key],
    orders_complete: bool = True,
) -> Plan:
    """What to deliver, given what was last delivered (``ledger``, ``assets``)."""
    result = Plan()
    balance_now = dict(assets)  # each delivered balance includes the entries before it
    for item in wallet:
        try:
            code, entry = build.asset(wire.rest_wallet_fields(item))
        except Reject as exc:
            result.rejected.append(f"wallet: {exc.message}")
            continue
        if ("wallet", code) in held or balance_now.get(code) == entry:
            continue
        balance_now[code] = result.assets[code] = entry
        balance: dict[str, Any] = dict(build.balance(balance_now, item, None))
        result.deliveries.append(Delivery("on_wallet", "balance", balance, item))

    seen_positions: set[Key] = set()
    for item in positions:
        try:
            fields = wire.rest_position_fields(item)
            position: dict[str, Any] = dict(build.position(fields, None, symbols, item))
        except Reject as exc:
            result.rejected.append(f"position: {exc.message}")
            continue
        key = position_key(position["symbol"], position["side"], position["hedged"])
        seen_positions.add(key)
        if ("symbol", item.get("ticker")) in held:
            continue
        if ledger.positions.get(key) != _position_fields(position):
            result.deliveries.append(Delivery("on_position", "position", position, item))
    for key in list(ledger.positions):
        last = ledger.position(key)
        if key in seen_positions or ("symbol", symbols.ticker(last["symbol"])) in held:
            continue
        # Listed nowhere in the snapshot: the position went flat during the outage.
        info = {"resync": "absent from GET /future/position: the position is flat"}
        flat = dict(last, contracts=0.0, notional=0.0, unrealizedPnl=None)
        flat_obj: dict[str, Any] = dict(build.flat_position(flat, info))
        result.deliveries.append(Delivery("on_position", "position", flat_obj, info))

    seen_orders: set[str] = set()
    for item in orders:
        try:
            order: dict[str, Any] = dict(
                build.order(wire.rest_order_fields(item), None, symbols, item)
            )
        except Reject as exc:
            result.rejected.append(f"order: {exc.message}")
            continue
        order_id = str(order["id"])
        seen_orders.add(order_id)
        result.open_orders[order_id] = order
        if ("order", order_id) in held:
            continue
        if ledger.orders.get(order_id) != _order_fields(order):
            result.deliveries.append(Delivery("on_order", "order", order, item))
    if orders_complete:
        for order_id in list(ledger.orders):
            if order_id not in seen_orders and ("order", order_id) not in held:
                # Filled or cancelled during the outage: the open-orders snapshot cannot
                # say which (Bitmusa documents no futures order history endpoint). It is
                # delivered as no longer open, with status None, and reported.
                result.vanished_orders.append(order_id)
                info = {"resync": "absent from GET /future/order: filled or cancelled"}
                vanished = dict(build.vanished_order(order_id, ledger.order(order_id), info))
                result.deliveries.append(Delivery("on_order", "order", vanished, info))
    return result


def proven_bases(
    before: Iterable[Mapping[str, Any]],
    history: Iterable[Mapping[str, Any]],
    after: Iterable[Mapping[str, Any]],
) -> dict[str, Pair]:
    """Each open order's cumulative fill before its records in ``history``, where it is
    proven: ``before`` and ``after`` are open-orders snapshots taken before and after the
    history was read, so the order's cumulative fill at the read's end is between its
    ``traded_qty`` in the two; less its records, the fill before them is between
    ``max(0, before - records)`` and ``after - records``. Where the two bounds meet (it
    did not fill meanwhile, or had nothing before the window) that is the fill; an order
    missing from ``after``, or with an unreadable fill, is not proven.

    This closes the snapshot/history race: an order that filled before the window and
    again between the snapshot and the history GET has records the snapshot does not
    count, and its fill before the window is not the snapshot's less its records."""
    sums: dict[str, Pair] = {}
    for record in history:
        amount = traded(record)
        if amount is not None:
            key = str(record.get("order_id"))
            sums[key] = add(sums.get(key, _ZERO), amount)
    later = {str(r.get("order_id")): r for r in after}
    proven: dict[str, Pair] = {}
    for record in before:
        order_id = str(record.get("order_id"))
        other = later.get(order_id)
        if other is None:
            continue
        first, second = _filled(record), _filled(other)
        if first is None or second is None:
            continue
        seen = sums.get(order_id, _ZERO)
        low, high = _at_least_zero(sub(first, seen)), _at_least_zero(sub(second, seen))
        if sub(low, high)[0] == 0:
            proven[order_id] = low
    return proven


def plan_fills(
    result: Plan,
    ledger: Ledger,
    fills: Fills,
    history: list[dict[str, Any]] | None,
    *,
    window_start_ms: int | None = None,
    gap_ms: int | None = None,
    bases: Mapping[str, Pair] | None = None,
    cut: str | None = None,
) -> Plan:
    """The plan with the trades of the fills a gap hid: recovered from ``history`` (the
    trade-history records from a margin before the gap; None when it could not be
    fetched), each right after its order's delivery. An open order's fills
    before the window are its snapshot fill less the window's (``Fills.recover``), so
    its trades keep their cumulative ids; a vanished order's are what was delivered less
    the records from before the gap's second (``gap_ms``). ``window_start_ms``: only orders
    with a record after it are new to us. ``bases`` (:func:`proven_bases`): where each
    open order's records start, proven; an open order with fills not in it gets one
    estimated trade for its gap's fills (its records cannot be placed). ``cut``: why the
    history does not reach back to the window's start (None: it does). Changes neither
    ``ledger`` nor ``fills``."""
    records: dict[str, list[dict[str, Any]]] = {}
    for record in history or []:
        records.setdefault(str(record.get("order_id")), []).append(record)
    trades: dict[str, list[Delivery]] = {}
    deliveries = list(result.deliveries)
    vanished = set(result.vanished_orders)
    for order_id, order in result.open_orders.items():
        known = fills.known(order_id)
        filled = order["filled"] or 0.0
        if known is not None and sub(pair(filled), known[0])[0] <= 0:
            continue
        if known is None and not filled and order_id not in records:
            continue
        target = (pair(filled), pair(order["cost"] or 0.0))
        rows: Iterable[Mapping[str, Any]] = records.get(order_id, ())
        base = None
        if bases is not None and history is not None:
            base = bases.get(order_id)
            if base is None:  # its records cannot be placed: estimate from what was delivered
                rows, base = (), known[0] if known is not None else _ZERO
                result.unproven.append(order_id)
        got = fills.recover(order_id, rows, target=target, window=True, base=base)
        out = [Delivery("on_trade", "trade", dict(t), t["info"]) for t in got.trades]
        if got.hole is not None and got.hole[0][0] > 0:
            estimate = dict(fills.estimate(order, got, hole=True))
            out.insert(0, Delivery("on_trade", "trade", estimate, estimate["info"]))
            if order_id not in result.estimated:
                result.estimated.append(order_id)
        if got.missing is not None and got.missing[0][0] > 0:
            estimate = dict(fills.estimate(order, got))
            out.append(Delivery("on_trade", "trade", estimate, estimate["info"]))
            if order_id not in result.estimated:
                result.estimated.append(order_id)
        trades[order_id] = out
    for i, delivery in enumerate(deliveries):
        order_id = str(delivery.obj.get("id")) if delivery.hook == "on_order" else ""
        if order_id not in vanished:
            continue
        last = ledger.order(order_id)
        created = ledger.created.get(order_id)
        whole = created is not None and window_start_ms is not None and created >= window_start_ms
        got = fills.recover(  # placed within the window: it holds all the order's fills
            order_id, records.get(order_id, ()), target=None, window=not whole, gap_ms=gap_ms
        )
        trades[order_id] = [Delivery("on_trade", "trade", dict(t), t["info"]) for t in got.trades]
        amount = last.get("amount")
        if amount and sub(got.filled, pair(amount))[0] == 0:
            # the history shows it wholly filled: it closed during the gap
            done = dict(delivery.obj, status="closed", filled=amount, remaining=0.0)
            done["cost"] = to_float(got.cost)
            if done["side"] is None:
                # the ledger records an order before the side gate learns its side
                # (pipeline.ingest); the history's records just told it (Fills.recover)
                done["side"] = fills.side(order_id)
            done["average"] = to_float(div(got.cost, got.filled))
            done["info"] = {
                "resync": "absent from GET /future/order; the trade history shows it filled"
            }
            deliveries[i] = Delivery("on_order", "order", done, done["info"])
            vanished.discard(order_id)
        else:
            if got.filled[0] > 0:
                # gone with its end unknown (cancelled after a part filled?): it stands at
                # the fill the history shows, so its late final frame brings only what is
                # beyond
                result.stands[order_id] = (got.filled, got.cost)
            result.unknown_end[order_id] = _unknown_end(got.filled, amount, history, cut)
    for order_id, rows in records.items():  # opened (and maybe done) within the gap
        if order_id in trades or order_id in result.open_orders or order_id in ledger.orders:
            continue
        if fills.finished(order_id):
            continue  # delivered closed or canceled before the gap: every fill went out
        if window_start_ms is not None and not any(_after(row, window_start_ms) for row in rows):
            continue  # an order of the past, in the history only to count another's
        got = fills.recover(order_id, rows, target=None)
        trades[order_id] = [Delivery("on_trade", "trade", dict(t), t["info"]) for t in got.trades]
        result.stands[order_id] = (got.filled, got.cost)
    ordered: list[Delivery] = []
    placed: set[str] = set()
    for delivery in deliveries:
        ordered.append(delivery)
        if delivery.hook == "on_order":
            order_id = str(delivery.obj.get("id"))
            ordered += trades.get(order_id, [])
            placed.add(order_id)
    for order_id, order_trades in trades.items():
        if order_id not in placed:
            ordered += order_trades
    result.deliveries = ordered
    result.vanished_orders = [o for o in result.vanished_orders if o in vanished]
    return result


def apply(result: Plan, ledger: Ledger, mapper: Mapper, fills: Fills | None = None) -> None:
    """Record a delivered plan: the wallet entries in the mapper, every object in the
    ledger (a vanished order or a flat position leaves it), and in ``fills`` where each
    open order now stands, and every side learnt."""
    for code, entry in result.assets.items():
        mapper.set_asset(code, entry)
    for delivery in result.deliveries:
        ledger.record(delivery.hook, delivery.obj)
    if fills is not None:
        for delivery in result.deliveries:
            if delivery.hook == "on_trade":
                fills.learn(delivery.obj["order"], delivery.obj["side"])
        # after the sides are learnt: an order no longer open keeps none (its trades come
        # after it in the plan, and would keep an entry per order until MAX_FACTS)
        for delivery in result.deliveries:
            if delivery.hook == "on_order" and delivery.obj["status"] != "open":
                status = delivery.obj["status"]
                finished = status in ("closed", "canceled") and bool(delivery.obj["filled"])
                fills.forget(str(delivery.obj["id"]), finished=finished)
        for order_id, order in result.open_orders.items():
            fills.learn(order_id, order["side"])
            fills.snapshot(order)
        for order_id, (filled, cost) in result.stands.items():
            fills.stand(order_id, filled, cost)


def inherit(ledger: Ledger, fills: Fills, records: Iterable[Mapping[str, Any]]) -> int:
    """Take over an account from another process: ``records`` are the last ``on_order``
    record it delivered of each recent order (jsonl records, as the Redis sink keeps
    them). The ledger's open orders and what ``fills`` knows become what it delivered,
    so that the resync of the takeover's gap treats them as it would have: the fills of
    an order it finished, or delivered up to some fill, read again from the trade
    history's margin, are not counted again, and keep their ids. An order delivered
    here already is left as it is (what this process delivered of it is newer); records
    that do not hold an order are skipped. Returns how many were taken."""
    orders: list[dict[str, Any]] = []
    latest: int | None = None
    for record in records:
        order, event = record.get("order"), record.get("event")
        if not isinstance(order, dict) or not order.keys() >= _INHERITED:
            continue
        order_id = str(order["id"])
        if order_id in ledger.orders or fills.known(order_id) or fills.finished(order_id):
            continue
        orders.append(order)
        at = event.get("eventTime") if isinstance(event, Mapping) else None
        if isinstance(at, int) and (latest is None or at > latest):
            latest = at
    for order in orders:
        ledger.record("on_order", order)
    fills.inherit(orders, latest)
    return len(orders)


def _unknown_end(filled: Pair, amount: Any, history: object, cut: str | None) -> str:
    """What is true of a vanished order whose end the resync cannot tell."""
    shown = f"{to_str(filled)} of {amount if amount is not None else '?'} filled"
    if history is None:
        return "the trade history could not be read: filled or cancelled, unknown"
    if cut is not None:
        return f"the trade history shows {shown}, but {cut}: it may have filled further"
    return (
        f"the trade history shows {shown}: cancelled with the rest unfilled, unless the "
        "history does not show its latest fills yet"
    )


_ZERO: Pair = (0, 0)


def _at_least_zero(p: Pair) -> Pair:
    return p if p[0] > 0 else _ZERO


def _filled(record: Mapping[str, Any]) -> Pair | None:
    """An open-orders record's ``traded_qty`` exactly (missing: 0; unreadable: None)."""
    value = record.get("traded_qty")
    try:
        parsed = number(value, "traded_qty")
    except Reject:
        return None
    return _ZERO if parsed is None else pair(value)


def _after(record: Mapping[str, Any], since_ms: int) -> bool:
    """Is the history record's time at or after ``since_ms`` (an unreadable time: yes)?"""
    stamp = record_time(record)
    return stamp is None or stamp >= since_ms
