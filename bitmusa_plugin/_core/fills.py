"""An account's fills as ccxt trades: from the order stream live, and from the trade history
for what a gap hid. Pure: no I/O, no clock.

The user stream has no trade event: an order's payload carries its cumulative
``tradedAmount`` and ``value``. :class:`Fills` remembers, per order, what the plugins have
been told it filled, and turns each increase into one trade: ``amount`` the increase,
``cost`` the increase of the value, ``price`` their quotient, all on exact decimals, so that
an order's trades add up exactly to its ``filled`` and ``cost``. A trade's id is the order's
id and the cumulative filled after it (``"F1693...:0.25"``), so the same fill has the same
id however it is learnt.

After a gap, a resync's snapshot shows orders that filled further while the stream was
down (or are no longer open). Those fills are recovered from ``GET /future/trade/history``
(:meth:`Fills.recover`), with their fee and maker/taker role; what the history does not
account for becomes one trade of the difference, marked ``info["estimated"]``. A snapshot
itself is never a trade.

It also keeps what the stream does not say about an order: its side. The order payload has
no ``position``; the side is learnt from the REST open orders, the trade history and the
orders this process placed (:meth:`Fills.learn`), and filled into orders and trades.
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from bitmusa_hookspecs import Trade
from bitmusa_plugin._core.numbers import (
    FPOW10,
    ISO_MILLIS,
    ISO_PREFIX,
    POW10,
    READ_CACHE,
    Pair,
    Reject,
    add,
    div,
    iso8601,
    mul,
    norm,
    number,
    pair,
    sub,
    to_float,
    to_str,
    utc_timestamp,
)
from bitmusa_plugin._core.symbols import SymbolMap
from bitmusa_plugin._core.wire import ORDER_SIDE, ORDER_TYPE, REDUCE_ONLY, enum

#: How ``position`` reads on a CLOSE order or fill (TRADING.md §5, OQ1): ``trade``, the side
#: of the trade itself (node-bitmusa-api's close example, and the simulator's default); or
#: ``position``, the side of the position being closed (the trade is the other way).
CloseSide = Literal["trade", "position"]

#: Orders whose side is remembered, at most (the oldest is forgotten first).
MAX_FACTS = 100_000
#: How long (event time, ms) an order delivered done is remembered: longer than the margin
#: a gap's trade history begins before the gap (the stream shell's 5 s), so the history
#: cannot bring its fills back; short enough that the memory stays that of a few seconds.
DONE_KEEP_MS = 10_000
_ZERO: Pair = (0, 0)
_DIGITS15 = 10**15  # pairs below it in magnitude have at most 15 significant digits
_TWO53 = 2**53
_P18 = 10**18
_TRADE_TEMPLATE: dict[str, Any] = dict.fromkeys(Trade.__annotations__)
_ROLES: dict[object, str] = {"MAKER": "maker", "TAKER": "taker", 0: "taker", 1: "maker"}


def _exact(value: float, raw: object) -> Pair:
    """``pair(value)``, taken from the read of the field's text (``numbers.READ_CACHE``,
    filled by the mapping just before) when that read gave this very float from at most 15
    significant digits: then the text and the float's repr are the same decimal (a double
    holds 15 digits), and the repr and its parse, a fifth of a fill's cost here, are spared."""
    read = READ_CACHE.get(raw) if type(raw) is str else None
    if read is not None:
        f, exact, _ = read
        if f == value and exact is not None and -_DIGITS15 < exact[0] < _DIGITS15:
            return exact
    return pair(value)


def side_of(position: object, direction: object, close_side: CloseSide = "trade") -> str | None:
    """The trade side (``buy``/``sell``) of an order or fill record's ``position`` and
    ``direction``, under the ``close_side`` reading; None when ``position`` is absent."""
    if position is None:
        return None
    side = ORDER_SIDE.get(position) if type(position) is not dict else None
    if side is None:
        side = enum(position, ORDER_SIDE, "position")
        if side is None:
            return None
    if close_side == "position" and REDUCE_ONLY.get(direction) is True:
        return "sell" if side == "buy" else "buy"
    return side


@dataclass
class Recovered:
    """What a gap's recovery of one order gives: its trades, in order; what the plugins now
    know it filled (``filled``, ``cost``); and the part of the snapshot's fill the history
    did not account for (``missing``: amount and cost, or None). ``hole``: the part of
    it before the first record (from what was delivered to the cumulative fill the
    records start at, proven by ``base``), ending at cumulative ``hole_end``; ``missing``
    is then only the part after the last record."""

    trades: list[Trade]
    filled: Pair
    cost: Pair
    missing: tuple[Pair, Pair] | None = None
    hole: tuple[Pair, Pair] | None = None
    hole_end: Pair = _ZERO


class Fills:
    """One account's fills: what each order has filled as far as the plugins know, and
    each order's side."""

    __slots__ = (
        "_done",
        "_done_since",
        "_filled",
        "_latest",
        "_seen",
        "_sides",
        "_stood",
        "close_side",
        "symbols",
    )

    def __init__(self, symbols: SymbolMap, close_side: CloseSide = "trade") -> None:
        self.symbols = symbols
        self.close_side: CloseSide = close_side
        #: order id -> (cumulative filled, cumulative cost) delivered, while it is open
        self._filled: dict[str, tuple[Pair, Pair]] = {}
        #: order id -> the ``filled`` float behind ``_filled``: the hot path's equality test
        self._seen: dict[str, float] = {}
        self._sides: OrderedDict[str, str] = OrderedDict()
        #: orders delivered closed or canceled in the last DONE_KEEP_MS of event time, with
        #: that time and their side: nothing fills them again, so a gap's trade history
        #: (which begins a margin before the gap) or a repeated final frame brings no trade
        #: twice, and that frame gets its side (order frames carry none)
        self._done: OrderedDict[str, tuple[int, str | None]] = OrderedDict()
        self._done_since = 0  # at or before the oldest time in _done (see _forget)
        self._latest = 0  # the newest event time seen (ms)
        #: orders standing at a fill recovered from the history (:meth:`stand`), until a
        #: live update comes; let go after DONE_KEEP_MS (they were done within the gap)
        self._stood: OrderedDict[str, int] = OrderedDict()

    # -- what the stream does not say ----------------------------------------------------

    def learn(self, order_id: str, side: str | None) -> None:
        """Remember an order's side (from a REST record, the history, or the order this
        process placed)."""
        if side is None:
            return
        done = self._done.get(order_id)
        if done is not None:  # delivered done: its side goes with what is remembered of it
            if done[1] is None:
                self._done[order_id] = (done[0], side)
            return
        sides = self._sides
        sides[order_id] = side
        sides.move_to_end(order_id)
        if len(sides) > MAX_FACTS:
            sides.popitem(last=False)

    def side(self, order_id: str) -> str | None:
        return self._sides.get(order_id)

    # -- live ------------------------------------------------------------------------------

    def on_order(self, order: dict[str, Any], event_time: int | None) -> list[Trade]:
        """A live order update: its side filled in when known, and the trades of the fill
        it shows beyond what was delivered (none, usually: most updates fill nothing)."""
        order_id = order["id"]
        if order["side"] is None:
            side = self._sides.get(order_id)
            if side is None and order_id in self._done:  # a repeated final frame
                side = self._done[order_id][1]
            if side is not None:
                order["side"] = side
        filled = order["filled"]
        done = order["status"] in ("closed", "canceled")
        if event_time is not None and event_time > self._latest:
            self._latest = event_time
        if filled and self._seen.get(order_id) == filled:
            # the fill already delivered (most updates fill nothing new); ``_seen`` stands
            # for ``_filled`` exactly, so an order ending here has no trade left either
            if done:
                self._forget(order_id, finished=True)
            return []
        if order_id in self._done:
            return []  # its final state was delivered: every fill went out with it
        if self._stood:
            self._stood.pop(order_id, None)
        known = self._filled.get(order_id)
        trades: list[Trade] = []
        if filled:
            # _exact() and sub() inlined for the common case (one call each less a fill)
            info = order["info"]
            raw = info.get("tradedAmount")
            read = READ_CACHE.get(raw) if type(raw) is str else None
            exact = read[1] if read is not None and read[0] == filled else None
            normal: Pair | None
            if exact is not None and -_DIGITS15 < exact[0] < _DIGITS15:
                new_filled, normal = exact, read[2]  # type: ignore[index]
            else:
                new_filled = normal = pair(filled)
            old = known if known is not None else (_ZERO, _ZERO)
            old_filled = old[0]
            # sub() inlined: one scale, or the first fill's (nothing delivered: (0, 0))
            if old_filled[1] == new_filled[1]:
                amount: Pair = (new_filled[0] - old_filled[0], new_filled[1])
            elif old_filled is _ZERO and new_filled[1] > 0:  # what sub() gives then
                amount = new_filled
            else:
                amount = sub(new_filled, old_filled)
            if amount[0] > 0:
                # _exact(order["cost"] or 0.0, info.get("value")), inlined as for the fill
                value = order["cost"] or 0.0
                raw = info.get("value")
                read = READ_CACHE.get(raw) if type(raw) is str else None
                exact = read[1] if read is not None and read[0] == value else None
                new = (
                    new_filled,
                    exact
                    if exact is not None and -_DIGITS15 < exact[0] < _DIGITS15
                    else pair(value),
                )
                old_cost = old[1]
                if old_cost[1] == new[1][1]:
                    cost: Pair = (new[1][0] - old_cost[0], old_cost[1])
                elif old_cost is _ZERO and new[1][1] > 0:
                    cost = new[1]
                else:
                    cost = sub(new[1], old_cost)
                # the id needs the cumulative fill's normal form: the read's, when it is its
                trades = [_trade(order, amount, cost, normal or new_filled, event_time)]
                if not done:
                    self._filled[order_id] = new
                    self._seen[order_id] = filled
            # else an older update come again (a stopping stream's drain can repeat what the
            # standby flushed): the cumulative amount never goes back, nor does what is known
        if done:
            self._forget(order_id, finished=bool(filled))  # no fill: no trade to repeat
        return trades

    def _live(
        self,
        order: Mapping[str, Any],
        amount: Pair,
        cost: Pair,
        cumulative: Pair,
        event_time: int | None,
    ) -> Trade:
        """The trade of a fill of ``order``: ``amount`` for ``cost``, up to ``cumulative``
        (the long way: :func:`_trade` is this, with its helpers spelt out, for the live
        path; ``tests/test_fills_fast.py`` holds the two equal)."""
        otype = order["type"]
        role = "taker" if otype == "market" else "maker" if order["postOnly"] else None
        when = event_time if event_time is not None else order["lastTradeTimestamp"]
        trade = _TRADE_TEMPLATE.copy()
        trade["info"] = order["info"]
        trade["id"] = f"{order['id']}:{to_str(cumulative)}"
        trade["order"] = order["id"]
        trade["timestamp"] = when
        trade["datetime"] = iso8601(when)
        trade["symbol"] = order["symbol"]
        trade["type"] = otype
        trade["side"] = order["side"]
        trade["takerOrMaker"] = role
        trade["price"] = to_float(div(cost, amount)) if cost[0] > 0 else None
        trade["amount"] = to_float(amount)
        trade["cost"] = to_float(cost)
        trade["fee"] = None
        trade["fees"] = []
        return trade  # type: ignore[return-value]

    # -- snapshots and recovery ------------------------------------------------------------

    def known(self, order_id: str) -> tuple[Pair, Pair] | None:
        """(filled, cost) delivered for an open order, or None."""
        return self._filled.get(order_id)

    def snapshot(self, order: Mapping[str, Any]) -> None:
        """An open order seen in a snapshot, whose fills were recovered (or that had none
        to recover): it now stands at the snapshot's filled and cost."""
        self._seen.pop(order["id"], None)
        if order["status"] in ("closed", "canceled") or not order["filled"]:
            self._filled.pop(order["id"], None)
            return
        self._filled[order["id"]] = (
            pair(order["filled"]),
            pair(order["cost"] or 0.0),
        )

    def forget(self, order_id: str, *, finished: bool) -> None:
        """The order is no longer open (a resync found it gone). ``finished``: it was
        delivered closed or canceled, with all its fills."""
        self._forget(order_id, finished=finished)

    def finished(self, order_id: str) -> bool:
        """Was the order delivered closed or canceled (recently: the newest MAX_FACTS)?"""
        return order_id in self._done

    def stand(self, order_id: str, filled: Pair, cost: Pair) -> None:
        """The order's fills up to ``filled`` (``cost``) were delivered (recovered from the
        history for an order no snapshot listed): its live frames bring only what is
        beyond."""
        if order_id in self._done:
            return
        self._filled[order_id] = (filled, cost)
        self._seen.pop(order_id, None)
        stood, now = self._stood, self._latest
        stood[order_id] = now
        stood.move_to_end(order_id)
        while stood:
            oldest, since = next(iter(stood.items()))
            if since >= now - DONE_KEEP_MS:
                break
            del stood[oldest]  # no live update since: it was done within its gap
            self._filled.pop(oldest, None)
            self._sides.pop(oldest, None)

    def inherit(self, orders: Iterable[Mapping[str, Any]], latest: int | None) -> None:
        """Take over what another process delivered of this account's orders: each one's
        last delivered state (a worker's takeover, from the Redis sink), as if delivered
        here. An open order stands at its fill, one delivered done is remembered as done
        (as of ``latest``, the newest event time they carry: the resync that follows
        must not bring its fills back), one gone with its end unknown stands at its fill."""
        if latest is not None and latest > self._latest:
            self._latest = latest
        for order in orders:
            order_id = str(order["id"])
            self.learn(order_id, order["side"])
            filled = order["filled"]
            status = order["status"]
            if status == "open" or (status is None and filled):
                if not filled:
                    continue
                info = order["info"] if isinstance(order["info"], Mapping) else {}
                at = (
                    _exact(filled, info.get("tradedAmount")),
                    _exact(order["cost"] or 0.0, info.get("value")),
                )
                if status == "open":
                    self._filled[order_id] = at
                    self._seen[order_id] = filled
                else:
                    self.stand(order_id, *at)
            elif status in ("closed", "canceled"):
                self._forget(order_id, finished=bool(filled))

    def _forget(self, order_id: str, *, finished: bool) -> None:
        self._filled.pop(order_id, None)
        self._seen.pop(order_id, None)
        side = self._sides.pop(order_id, None)
        if finished:
            done, now = self._done, self._latest
            if order_id in done:
                del done[order_id]  # to the end, with its new time
            done[order_id] = (now, side)
            # entries go in at the newest time, so the oldest only ages when it goes:
            # _done_since (never after the oldest's time) spares the look at it (an order's
            # every end) until something may be due
            cutoff = now - DONE_KEEP_MS
            if len(done) > MAX_FACTS or self._done_since < cutoff:
                since = now
                while done:
                    since = next(iter(done.values()))[0]
                    if len(done) <= MAX_FACTS and since >= cutoff:
                        break
                    done.popitem(last=False)
                    since = now
                self._done_since = since  # the oldest left's time (now when none is left)

    def recover(
        self,
        order_id: str,
        history: Iterable[Mapping[str, Any]],
        *,
        target: tuple[Pair, Pair] | None,
        symbol: str | None = None,
        window: bool = False,
        gap_ms: int | None = None,
        base: Pair | None = None,
    ) -> Recovered:
        """The trades of ``order_id`` beyond what was delivered, from trade-history records
        (of any orders: others are ignored). ``target`` is the filled and cost the snapshot
        shows (None for an order no longer open: all the history has). ``window``: the
        records are only the gap's window of the history, not the order's whole history,
        so the fills before them are counted back (from ``target``, or for an order that
        is gone from what was delivered less the window's records from before ``gap_ms``,
        the gap's start). A record that cannot be read ends the recovery there; the rest
        is ``missing``. ``base``: the order's cumulative fill before the records, proven
        (``resync.proven_bases``): it replaces the counting back, and a ``base`` beyond
        what was delivered is a ``hole`` the records do not cover (the history was cut)."""
        known_amount, known_cost = self._filled.get(order_id) or (_ZERO, _ZERO)
        records = sorted(
            (r for r in history if r.get("order_id") == order_id),
            key=lambda r: (str(r.get("transaction_time")), _sortable(r.get("id"))),
        )
        cumulative = _ZERO
        if base is not None:
            cumulative = base
        elif window and target is not None:
            # the records are a window (the gap's), not the order's whole history: what it
            # filled before them is the snapshot's fill less theirs (never more than was
            # delivered: records the live stream saw are skipped below). A record newer than
            # the snapshot makes that too small: with nothing before the window it is 0, and
            # the record is left to the live stream below; an order that also filled before
            # the window and again between the snapshot and this history (milliseconds) is
            # the one case counted wrong.
            before = sub(target[0], _sum(records))
            if before[0] > 0:
                known = self._filled.get(order_id)
                cumulative = (
                    before if known is None or _cmp(before, known_amount) < 0 else known_amount
                )
        elif window and gap_ms is not None and known_amount[0] > 0:
            # no snapshot to count back from (the order is gone): what was delivered, less
            # the window's records from before the gap's second (the live stream had those)
            seen = _sum(r for r in records if _before_second(r, gap_ms))
            before = sub(known_amount, seen)
            if before[0] > 0:
                cumulative = before
        filled, cost = known_amount, known_cost
        hole_end = _ZERO
        if base is not None and _cmp(base, known_amount) > 0:
            # fills between what was delivered and the first record: the history was cut
            # short of the gap's start; an estimate covers them (their cost is only known
            # together with any missing after the records: split in proportion below)
            hole_end = base if target is None or _cmp(base, target[0]) < 0 else target[0]
            filled = hole_end
        trades: list[Trade] = []
        for record in records:
            try:
                fields = _history_fields(record)
            except Reject:
                break
            qty, value = fields["amount"], fields["cost"]
            before, cumulative = cumulative, add(cumulative, qty)
            if _cmp(cumulative, known_amount) <= 0:
                continue  # delivered live before the gap
            if target is not None and _cmp(cumulative, target[0]) > 0:
                break  # newer than the snapshot: the live stream brings it
            part = qty
            if _cmp(before, known_amount) < 0:  # the live stream saw part of this one
                part = sub(cumulative, known_amount)
                value = _scale(value, part, qty)
            trades.append(
                self._recovered(
                    record, amount=part, cost=value, cumulative=cumulative, symbol=symbol
                )
            )
            filled, cost = cumulative, add(cost, value)
        missing = None
        hole = None
        tail = sub(target[0], filled) if target is not None else _ZERO
        if target is not None and hole_end[0] and _cmp(hole_end, known_amount) > 0:
            hole_amount = sub(hole_end, known_amount)
            rest_cost = sub(target[1], cost)  # the hole's and the tail's cost together
            whole = add(hole_amount, tail) if tail[0] > 0 else hole_amount
            hole_cost = _scale(rest_cost, hole_amount, whole)
            hole = (hole_amount, hole_cost)
            cost = add(cost, hole_cost)
        if target is not None and tail[0] > 0:
            missing = (tail, sub(target[1], cost))
        self.learn(order_id, next((t["side"] for t in trades if t["side"]), None))
        return Recovered(trades, filled, cost, missing, hole, hole_end)

    def estimate(
        self, order: Mapping[str, Any], recovered: Recovered, *, hole: bool = False
    ) -> Trade:
        """One trade standing for the fills the history did not account for: the
        difference at its average price, no fee, ``info["estimated"]`` True. ``hole``:
        the one for the part before the first record (its id the cumulative fill there)."""
        if hole:
            assert recovered.hole is not None
            amount, cost = recovered.hole
            cumulative = recovered.hole_end
        else:
            assert recovered.missing is not None
            amount, cost = recovered.missing
            cumulative = add(recovered.filled, amount)
        trade = self._live(order, amount, cost, cumulative, order["lastUpdateTimestamp"])
        trade["info"] = {"estimated": True, "order": order["info"]}
        trade["takerOrMaker"] = None
        return trade

    def _recovered(
        self,
        record: Mapping[str, Any],
        *,
        amount: Pair,
        cost: Pair,
        cumulative: Pair,
        symbol: str | None,
    ) -> Trade:
        """A history record as the trade of its order's fill up to ``cumulative`` (only
        ``amount`` of it, when the live stream saw the rest)."""
        trade = history_trade(record, self.symbols, self.close_side)
        whole = pair(record.get("traded_qty"))
        trade["id"] = f"{record.get('order_id')}:{to_str(cumulative)}"
        if symbol is not None:
            trade["symbol"] = symbol
        if amount != whole:
            trade["amount"] = to_float(amount)
            trade["cost"] = to_float(cost)
            fee = trade["fee"]
            if fee is not None and fee["cost"] is not None:
                fee["cost"] = to_float(_scale(pair(record.get("trading_fee")), amount, whole))
                trade["fees"] = [dict(fee)]  # type: ignore[list-item]
        return trade


def _trade(
    order: Mapping[str, Any],
    amount: Pair,
    cost: Pair,
    cumulative: Pair,
    event_time: int | None,
) -> Trade:
    """:meth:`Fills._live` for a live fill, its helpers (``to_str``, ``iso8601``, ``div``,
    ``to_float``) spelt out for the common case and called for the rest: a live fill cost
    about as much again as its order's whole mapping, most of it in calls. ``amount`` is
    > 0, and so is ``cumulative`` (the order's ``filled``, which is never negative)."""
    otype = order["type"]
    order_id = order["id"]
    when = event_time if event_time is not None else order["lastTradeTimestamp"]
    trade = _TRADE_TEMPLATE.copy()  # every key None: fee stays so
    trade["info"] = order["info"]
    # to_str(cumulative): its normal form (norm() only when there is something to strip),
    # then the digits with the point put in
    i, d = cumulative
    if not i % 10 or d < 0:
        i, d = norm(cumulative)
    if d == 0:
        text = str(i)
    elif i > 0:
        digits = str(i)
        text = f"{digits[:-d]}.{digits[-d:]}" if len(digits) > d else "0." + digits.rjust(d, "0")
    else:
        text = to_str(cumulative)
    trade["id"] = f"{order_id}:{text}"
    trade["order"] = order_id
    trade["timestamp"] = when
    if when is not None:  # iso8601(when), its cache looked up here
        prefix = ISO_PREFIX.get(when // 1000)
        trade["datetime"] = (
            prefix + ISO_MILLIS[when % 1000] if prefix is not None else iso8601(when)
        )
    trade["symbol"] = order["symbol"]
    trade["type"] = otype
    trade["side"] = order["side"]
    trade["takerOrMaker"] = "taker" if otype == "market" else "maker" if order["postOnly"] else None
    i, d = cost
    if i > 0:
        # to_float(div(cost, amount)): both > 0, so div's floor is its truncation, and the
        # 18-place quotient over 10**18 (int / int, correctly rounded) is its to_float()
        e = 18 - d + amount[1]
        if 0 <= e < 256:
            trade["price"] = i * POW10[e] // amount[0] / _P18
        else:
            trade["price"] = to_float(div(cost, amount))
    trade["cost"] = i / FPOW10[d] if 0 < d <= 22 and -_TWO53 < i < _TWO53 else to_float(cost)
    i, d = amount
    trade["amount"] = i / FPOW10[d] if 0 < d <= 22 and i < _TWO53 else to_float(amount)
    trade["fees"] = []
    return trade  # type: ignore[return-value]


def history_trade(
    record: Mapping[str, Any], symbols: SymbolMap, close_side: CloseSide = "trade"
) -> Trade:
    """One trade-history record as a ccxt trade (``fetch_my_trades``): its own id (the
    history's), since a lone record does not know its order's cumulative fill."""
    fields = _history_fields(record)
    when = fields["timestamp"]
    ticker = record.get("ticker")
    trade = _TRADE_TEMPLATE.copy()
    trade["info"] = dict(record)
    trade["id"] = None if record.get("id") is None else str(record["id"])
    trade["order"] = record.get("order_id")
    trade["timestamp"] = when
    trade["datetime"] = iso8601(when)
    trade["symbol"] = symbols(ticker) if isinstance(ticker, str) else None
    trade["type"] = fields["type"]
    trade["side"] = side_of(record.get("position"), record.get("direction"), close_side)
    trade["takerOrMaker"] = fields["role"]
    trade["price"] = fields["price"]
    trade["amount"] = to_float(fields["amount"])
    trade["cost"] = to_float(fields["cost"])
    if fields["fee"] is not None:
        fee = {"cost": to_float(fields["fee"]), "currency": record.get("symbol")}
        trade["fee"] = fee
        trade["fees"] = [dict(fee)]
    else:
        trade["fee"] = None
        trade["fees"] = []
    return trade  # type: ignore[return-value]


def _history_fields(record: Mapping[str, Any]) -> dict[str, Any]:
    qty_v, value_v, price_v = (
        record.get("traded_qty"),
        record.get("traded_value"),
        record.get("price"),
    )
    qty = number(qty_v, "traded_qty")
    if qty is None or qty <= 0:
        raise Reject("invalid_value", "traded_qty must be > 0")
    price = number(price_v, "price")
    value = number(value_v, "traded_value")
    value_p = pair(value_v) if value is not None else None
    if value_p is None and price is not None:
        value_p = mul(pair(qty_v), pair(price_v))
    fee_v = record.get("trading_fee")
    fee = number(fee_v, "trading_fee")
    otype = record.get("order_type")
    role = record.get("role")
    return {
        "amount": pair(qty_v),
        "cost": value_p if value_p is not None else _ZERO,
        "price": price,
        "fee": pair(fee_v) if fee is not None else None,
        "type": ORDER_TYPE.get(otype) if not isinstance(otype, dict) else None,
        "role": _ROLES.get(role) if not isinstance(role, dict) else None,
        "timestamp": utc_timestamp(record.get("transaction_time"), "transaction_time"),
    }


def _cmp(a: Pair, b: Pair) -> int:
    d = sub(a, b)[0]
    return (d > 0) - (d < 0)


def _scale(value: Pair, part: Pair, whole: Pair) -> Pair:
    """``value * part / whole``, exactly enough (18 places)."""
    return div(mul(value, part), whole)


def _sortable(value: object) -> tuple[int, str]:
    text = str(value)
    return (int(text), "") if text.isdigit() else (0, text)


def _sum(records: Iterable[Mapping[str, Any]]) -> Pair:
    """The traded quantity of history records, exactly (an unreadable one counts 0)."""
    total = _ZERO
    for record in records:
        with contextlib.suppress(Reject):
            total = add(total, _history_fields(record)["amount"])
    return total


def traded(record: Mapping[str, Any]) -> Pair | None:
    """A trade-history record's ``traded_qty``, exactly, or None when it cannot be read."""
    try:
        amount: Pair = _history_fields(record)["amount"]
    except Reject:
        return None
    return amount


def record_time(record: Mapping[str, Any]) -> int | None:
    """A trade-history record's time (ms), or None when it cannot be read."""
    try:
        return utc_timestamp(record.get("transaction_time"), "transaction_time")
    except Reject:
        return None


def _before_second(record: Mapping[str, Any], when_ms: int) -> bool:
    """Was the record's fill in a second before ``when_ms``'s (an unreadable time: no)?"""
    stamp = record_time(record)
    return stamp is not None and stamp < when_ms // 1000 * 1000
