"""One account's futures book: orders, positions, wallet and fills, matched against a
:class:`~bitmusa_plugin.simulator._market.Market`. Pure: no I/O, no clock (every call takes
``now_ms``), ``Decimal`` money throughout.

Every call that changes the account returns the user-stream frames it causes, in order
(futures-user-stream.md payloads; TRADING.md §4 "Events each REST call should cause"), so the
server only has to send them. The rules, where no source gives them, are ours and listed in
docs/simulator.md; in short:

* Isolated margin. An OPEN order locks ``price x qty / leverage`` plus the taker fee on
  that value; a fill moves the margin into the position and pays the fee (maker 0.02 %,
  taker 0.03 % of the traded value). A reducing fill releases the position's margin in
  proportion and realises the PnL (a loss beyond the margin is absorbed, as an insurance
  fund would: :attr:`Engine.absorbed`).
* The market trades at its last price. A MARKET order, and a LIMIT order that crosses
  (BUY at or above the last price, SELL at or below), fills at once at the last price as
  TAKER. A resting LIMIT order fills at its own price as MAKER when the last price reaches
  it, from the volume the move traded (oldest first among equal prices).
* One-way mode nets: an OPEN order against the open position reduces it first. Hedge mode
  (per ticker) keeps a BUY and a SELL position apart. A CLOSE order (``direction`` 1, or
  ``is_reduce_only``) reduces the opposite position only; at fill time its fill is capped
  at the position's size and the rest is cancelled.
* Take-profit / stop-loss attach to the position when their order fills; either fires a
  ``TAKE_PROFIT`` / ``STOP_LOSS`` child order (MARKET, or a resting LIMIT) for the whole
  position; the other trigger goes when the position is flat.
* A position is liquidated when the mark price reaches its liquidation price (maintenance
  margin 0.5 %): a ``LIQUIDATION`` order, status ``FORCE_CLOSE``, its whole margin lost.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import ROUND_DOWN, ROUND_HALF_EVEN, ROUND_UP, Decimal
from typing import Any, Literal

from ._market import (
    MAKER_FEE,
    MAX_OPEN_ORDERS_PER_ACCOUNT,
    Q8,
    TAKER_FEE,
    ZERO,
    Market,
    Spec,
    fee,
    q_down,
)

Frame = dict[str, Any]
CloseSide = Literal["trade", "position"]

BUY, SELL = "BUY", "SELL"
OPEN, CLOSE = "OPEN", "CLOSE"
MARKET, LIMIT = "MARKET", "LIMIT"
TAKE_PROFIT, STOP_LOSS, LIQUIDATION = "TAKE_PROFIT", "STOP_LOSS", "LIQUIDATION"
ONEWAY, HEDGE = "ONEWAY", "HEDGE"
TRADING, PARTIAL, FILLED, CANCELLED = "TRADING", "PARTIAL", "FILLED", "CANCELLED"
MAKER, TAKER = "MAKER", "TAKER"
LEVERAGE_TYPES = ("ONEWAY", "HEDGE_BUY", "HEDGE_SELL")
MAINTENANCE_RATE = Decimal("0.005")
START_BALANCE = Decimal("10000")
HISTORY_LIMIT = 100_000  # finished orders, fills and closed positions kept per account

#: Error messages: the documented codes (REFERENCE.md §3) and the two we chose.
MESSAGES: dict[int, str] = {
    999: "INTERNAL SERVER ERROR",
    1001: "API KEY NOT FOUND",
    1002: "NOT ALLOWED IP",
    1003: "EMPTY API KEY",
    1005: "NOT ALLOWED PRIVILEGE",
    1007: "EMPTY ORDER ID",
    1008: "EMPTY ORDER PRICE",
    1009: "ORDER PRICE TOO SMALL",
    1010: "EMPTY START OR END TIME",
    1011: "TOO MANY REQUESTS",
    1013: "UNABLE TO REQUEST STATUS",
    1014: "INVALID REQUEST PARAMETER",
    1015: "END_TIME MUST BE GREATER THEN START_TIME",
    1016: "INVALID K-LINE INTERVAL",
    3001: "UNKNOWN FUTURE ORDER DIRECTION",
    3002: "UNKNOWN FUTURE ORDER MARGIN MODE",
    3003: "UNKNOWN FUTURE ORDER POSITION",
    3004: "UNKNOWN FUTURE ORDER TYPE",
    3005: "ADJUSTABLE FUTURE LEVERAGE VALUE",
    3006: "EMPTY FUTURE TRIGGER TYPE",
    3007: "WRONG FUTURE TRIGGER PRICE",
    3008: "WRONG FUTURE TRIGGER ORDER PRICE",
    3009: "EMPTY FUTURE TICKER",
    3010: "EMPTY FUTURE ORDER DIRECTION",
    3011: "EMPTY FUTURE ORDER MARGIN MODE",
    3012: "EMPTY FUTURE ORDER POSITION",
    3013: "EMPTY FUTURE ORDER TYPE",
    3014: "EMPTY ORDER QUANTITY",
    3015: "EMPTY FUTURE LEVERAGE",
    3016: "ORDER QUANTITY TOO SMALL",
    3018: "UNKNOWN FUTURE TRIGGER TYPE",
    3019: "UNKNOWN FUTURE LEVERAGE TYPE",
    3020: "EMPTY FUTURE BUY LEVERAGE TYPE",
    3021: "EMPTY FUTURE SELL LEVERAGE TYPE",
    3022: "EMPTY LISTEN KEY",
    3027: "EMPTY FUTURE POSITION MODE TYPE",
    3028: "UNKNOWN FUTURE POSITION MODE TYPE",
    4001: "INSUFFICIENT BALANCE",  # ours: Bitmusa documents no code for it
    4002: "ORDER NOT FOUND",  # ours: Bitmusa documents no code for it
}


class ApiError(Exception):
    """A business error: answered as HTTP 200 with ``code`` and ``message``."""

    def __init__(self, code: int, detail: str = "") -> None:
        self.code = code
        self.message = MESSAGES.get(code, "ERROR")
        self.detail = detail
        super().__init__(f"{code} {self.message}" + (f": {detail}" if detail else ""))


def opposite(side: str) -> str:
    return SELL if side == BUY else BUY


def order_side(order: Order) -> int:
    """The trade side as a code: 0 buy, 1 sell."""
    return 0 if order.side == BUY else 1


@dataclass(frozen=True, slots=True)
class Trigger:
    """A take-profit or stop-loss: fires when the ``trigger_type`` price reaches ``price``."""

    kind: str  # TAKE_PROFIT / STOP_LOSS
    trigger_type: str  # MARK / LAST
    price: Decimal
    order_type: str = MARKET  # the child order: MARKET, or LIMIT at order_price
    order_price: Decimal | None = None
    parent: str = ""  # the order that attached it


@dataclass(frozen=True, slots=True)
class OrderRequest:
    """A validated order (parsed from POST /future/order, or made by the script)."""

    ticker: str
    side: str  # the trade side, BUY / SELL
    direction: str  # OPEN / CLOSE (a reduce-only order is a CLOSE order)
    order_type: str  # MARKET / LIMIT
    qty: Decimal
    price: Decimal | None = None  # LIMIT only
    post_only: bool = False
    reduce_only: bool = False  # as sent (direction already says CLOSE)
    margin_mode: int = 0
    take_profit: Trigger | None = None
    stop_loss: Trigger | None = None


@dataclass(slots=True, eq=False)
class Order:
    order_id: str
    record_id: int
    ticker: str
    side: str  # the trade side
    direction: str
    otype: str  # MARKET LIMIT TAKE_PROFIT STOP_LOSS LIQUIDATION
    price: Decimal  # 0 for market orders
    amount: Decimal
    created: int
    leverage: int
    position_side: str  # the position it opens or grows (OPEN) or reduces (CLOSE)
    mode: str = ONEWAY
    margin_mode: int = 0
    post_only: bool = False
    reduce_only: bool = False
    origin: str = "rest"  # rest / script / engine
    traded: Decimal = ZERO
    value: Decimal = ZERO
    fees: Decimal = ZERO
    locked: Decimal = ZERO  # margin + fee reserve still locked (OPEN orders)
    lock_total: Decimal = ZERO
    status: str = TRADING
    canceled: int | None = None
    completed: int | None = None
    take_profit: Trigger | None = None
    stop_loss: Trigger | None = None
    trigger_id: str | None = None  # a TP/SL child: the order that attached the trigger

    @property
    def left(self) -> Decimal:
        return self.amount - self.traded

    @property
    def is_open(self) -> bool:
        return self.status in (TRADING, PARTIAL)

    @property
    def average(self) -> Decimal:
        return (self.value / self.traded).quantize(Q8) if self.traded else ZERO


@dataclass(slots=True, eq=False)
class Position:
    ticker: str
    side: str  # BUY (long) / SELL (short)
    amount: Decimal
    entry: Decimal
    margin: Decimal
    leverage: int
    created: int
    record_id: int
    mode: str = ONEWAY
    margin_mode: int = 0
    status: str = "OPEN"
    take_profit: Trigger | None = None
    stop_loss: Trigger | None = None
    realized: Decimal = ZERO
    closed: int | None = None

    @property
    def value(self) -> Decimal:
        return (self.entry * self.amount).quantize(Q8)


@dataclass(frozen=True, slots=True)
class Fill:
    """One trade-history record."""

    trade_id: int
    order_id: str
    opposite_order_id: str
    ticker: str
    side: str  # the trade side
    position_side: str
    direction: str
    otype: str
    role: str
    price: Decimal
    qty: Decimal
    fee: Decimal
    pnl: Decimal
    leverage: int
    mode: str
    margin_mode: int
    time: int

    @property
    def value(self) -> Decimal:
        return (self.price * self.qty).quantize(Q8)


@dataclass
class Engine:
    """One account. Read its state freely; change it only through the methods."""

    market: Market
    balance_start: Decimal = START_BALANCE
    close_side: CloseSide = "trade"
    member_id: int = 79010
    history_limit: int = HISTORY_LIMIT
    free: Decimal = field(init=False)
    #: every order by id: the open ones and the latest ``history_limit`` finished ones
    orders: dict[str, Order] = field(default_factory=dict, init=False)
    open_orders: dict[str, Order] = field(default_factory=dict, init=False)
    #: open positions by (ticker, side); one per ticker in one-way mode
    positions: dict[tuple[str, str], Position] = field(default_factory=dict, init=False)
    closed_positions: deque[Position] = field(init=False)
    fills: deque[Fill] = field(init=False)
    modes: dict[str, str] = field(init=False)
    leverages: dict[str, dict[str, int]] = field(init=False)
    # the ledger: free + locked == deposits + realized - fees + absorbed, always
    deposits: Decimal = field(init=False)
    realized: Decimal = ZERO
    fees_paid: Decimal = ZERO
    absorbed: Decimal = ZERO  # losses beyond a position's margin, not charged
    _finished: deque[str] = field(init=False)

    def __post_init__(self) -> None:
        self.balance_start = Decimal(self.balance_start)
        self.free = self.balance_start
        self.deposits = self.balance_start
        self.closed_positions = deque(maxlen=self.history_limit)
        self.fills = deque(maxlen=self.history_limit)
        self._finished = deque()
        self.modes = dict.fromkeys(self.market.specs, ONEWAY)
        self.leverages = {
            t: dict.fromkeys(LEVERAGE_TYPES, spec.leverage) for t, spec in self.market.specs.items()
        }

    # -- the account --------------------------------------------------------------------------

    @property
    def locked(self) -> Decimal:
        """Margin of open orders (with their fee reserve) and of open positions."""
        return sum((o.locked for o in self.open_orders.values()), ZERO) + sum(
            (p.margin for p in self.positions.values()), ZERO
        )

    @property
    def balance(self) -> Decimal:
        """The wallet balance: free + locked."""
        return self.free + self.locked

    def unrealized(self, position: Position) -> Decimal:
        mark = self.market.marks[position.ticker]
        diff = mark - position.entry if position.side == BUY else position.entry - mark
        return (diff * position.amount).quantize(Q8)

    def liquidation_price(self, position: Position) -> Decimal:
        """The mark price at which the margin left equals the maintenance margin (0 when
        the position cannot be liquidated), on the price grid, rounded towards the entry."""
        tick = self.market.specs[position.ticker].tick
        qty, entry, margin = position.amount, position.entry, position.margin
        if qty <= 0:
            return ZERO
        if position.side == BUY:
            price = (entry * qty - margin) / (qty * (1 - MAINTENANCE_RATE))
            return max(ZERO, price.quantize(tick, rounding=ROUND_UP))
        price = (entry * qty + margin) / (qty * (1 + MAINTENANCE_RATE))
        return price.quantize(tick, rounding=ROUND_DOWN)

    def bankruptcy_price(self, position: Position) -> Decimal:
        qty = position.amount
        if qty <= 0:
            return ZERO
        sign = -1 if position.side == BUY else 1
        return max(ZERO, ((position.entry * qty + sign * position.margin) / qty).quantize(Q8))

    def maintenance_margin(self, position: Position) -> Decimal:
        return (position.entry * position.amount * MAINTENANCE_RATE).quantize(Q8)

    def mode(self, ticker: str) -> str:
        return self.modes[ticker]

    def leverage_for(self, ticker: str, position_side: str) -> int:
        settings = self.leverages[ticker]
        if self.modes[ticker] == ONEWAY:
            return settings["ONEWAY"]
        return settings["HEDGE_BUY" if position_side == BUY else "HEDGE_SELL"]

    def positions_by_ticker(self) -> dict[str, Position]:
        """Open positions by ticker; a hedge-mode ticker's as ``TICKER:BUY``/``TICKER:SELL``."""
        return {
            (t if self.modes[t] == ONEWAY else f"{t}:{side}"): p
            for (t, side), p in self.positions.items()
        }

    # -- settings ----------------------------------------------------------------------------

    def set_leverage(self, ticker: str, leverage: int, kind: str = "ONEWAY") -> None:
        """New orders use it; open positions keep the margin they have."""
        self._spec(ticker)
        if not 1 <= leverage <= 125:
            raise ApiError(3005, "leverage is 1 to 125")
        if kind not in LEVERAGE_TYPES:
            raise ApiError(3019)
        self.leverages[ticker][kind] = leverage

    def set_mode(self, ticker: str, mode: str) -> None:
        """ONEWAY or HEDGE, per ticker; refused (1013) while the ticker has an open
        position or order."""
        self._spec(ticker)
        if mode not in (ONEWAY, HEDGE):
            raise ApiError(3028)
        if mode == self.modes[ticker]:
            return
        busy = any(t == ticker for t, _ in self.positions) or any(
            o.ticker == ticker for o in self.open_orders.values()
        )
        if busy:
            raise ApiError(1013, "the ticker has an open position or order")
        self.modes[ticker] = mode

    def adjust(self, amount: Decimal, now_ms: int) -> list[Frame]:
        """A deposit (or, negative, a withdrawal of at most the free balance)."""
        amount = max(amount, -self.free)
        self.free += amount
        self.deposits += amount
        return [self.wallet_frame(self.market.clock(now_ms))]

    # -- orders ------------------------------------------------------------------------------

    def place(
        self, request: OrderRequest, now_ms: int, *, origin: str = "rest"
    ) -> tuple[str, list[Frame]]:
        """Accept an order: (its id, the frames). Raises :class:`ApiError` when refused."""
        spec = self._spec(request.ticker)
        now = self.market.clock(now_ms)
        ticker, side = request.ticker, request.side
        if request.direction == CLOSE:
            position_side = opposite(side)
            position = self.positions.get((ticker, position_side))
            if position is None:
                raise ApiError(1014, f"no {position_side} position on {ticker} to reduce")
            if request.take_profit or request.stop_loss:
                raise ApiError(1014, "take-profit / stop-loss attach to OPEN orders only")
            leverage = position.leverage
        else:
            position_side = side
            # a position has one leverage: an order that grows it uses it
            grows = self.positions.get((ticker, side))
            leverage = grows.leverage if grows else self.leverage_for(ticker, side)
        if len(self.open_orders) >= MAX_OPEN_ORDERS_PER_ACCOUNT:
            raise ApiError(1014, f"at most {MAX_OPEN_ORDERS_PER_ACCOUNT} open orders")
        last = self.market.prices[ticker]
        limit = request.price if request.order_type == LIMIT else None
        if request.order_type == LIMIT and limit is None:
            raise ApiError(1008)
        crosses = limit is None or (limit >= last if side == BUY else limit <= last)
        reference = last if limit is None else limit
        for trigger in (request.take_profit, request.stop_loss):
            if trigger is not None:
                _check_trigger(trigger, side, reference, spec.tick)
        post_only_cross = request.post_only and limit is not None and crosses
        lock = ZERO
        if request.direction == OPEN and not post_only_cross:
            fill_price = last if crosses else reference
            lock = _lock(fill_price, request.qty, leverage)
            if lock > self.free:
                raise ApiError(4001, f"needs {lock}, {self.free} free")
        order_id = self.market.order_id(now)
        order = Order(
            order_id,
            self.market.record_id(),
            ticker,
            side,
            request.direction,
            request.order_type,
            limit if limit is not None else ZERO,
            request.qty,
            now,
            leverage,
            position_side,
            mode=self.modes[ticker],
            margin_mode=request.margin_mode,
            post_only=request.post_only,
            reduce_only=request.reduce_only,
            origin=origin,
            take_profit=_attach(request.take_profit, order_id),
            stop_loss=_attach(request.stop_loss, order_id),
        )
        self.orders[order_id] = order
        if post_only_cross:
            # accepted, then cancelled at once: it would have taken liquidity
            return order_id, self._finish(order, CANCELLED, now)
        self.free -= lock
        order.locked = order.lock_total = lock
        if crosses:
            return order_id, self._fill(order, order.amount, last, TAKER, now)
        self.open_orders[order_id] = order
        frames = [self.order_frame(order, now)]
        if lock:
            frames.append(self.wallet_frame(now))
        return order_id, frames

    def cancel(self, order_id: str, now_ms: int) -> list[Frame]:
        """Cancel one open order (4002 when it is unknown or finished)."""
        order = self.open_orders.get(order_id)
        if order is None:
            raise ApiError(4002, f"no open order {order_id}")
        now = self.market.clock(now_ms)
        released = order.locked
        frames = self._cancel(order, now)
        if released:
            frames.append(self.wallet_frame(now))
        return frames

    def cancel_all(self, ticker: str | None, now_ms: int) -> list[Frame]:
        """Cancel every open order (of ``ticker``); one wallet frame at the end."""
        if ticker is not None:
            self._spec(ticker)
        now = self.market.clock(now_ms)
        frames: list[Frame] = []
        released = ZERO
        for order in [o for o in self.open_orders.values() if ticker in (None, o.ticker)]:
            released += order.locked
            frames += self._cancel(order, now)
        if released:
            frames.append(self.wallet_frame(now))
        return frames

    def close_all(self, ticker: str | None, now_ms: int, *, origin: str = "rest") -> list[Frame]:
        """Close every position (of ``ticker``) with a CLOSE market order each, at the
        last price; resting orders stay."""
        if ticker is not None:
            self._spec(ticker)
        now = self.market.clock(now_ms)
        frames: list[Frame] = []
        for position in [p for p in self.positions.values() if ticker in (None, p.ticker)]:
            frames += self.close_position(position, now, origin=origin)
        return frames

    def close_position(
        self, position: Position, now_ms: int, *, origin: str = "rest", otype: str = MARKET
    ) -> list[Frame]:
        """A CLOSE order of ``otype`` for the whole position, filled at the last price."""
        now = self.market.clock(now_ms)
        order = self._new_order(position, otype, ZERO, now, origin)
        return self._fill(order, order.amount, self.market.prices[position.ticker], TAKER, now)

    # -- the market moves ---------------------------------------------------------------------

    def on_tick(
        self,
        now_ms: int,
        volumes: Mapping[str, Decimal | None] | None = None,
        tickers: Iterable[str] | None = None,
    ) -> list[Frame]:
        """After the market moved: fill the resting orders it crossed (from ``volumes``,
        per ticker; None or absent means no limit), then fire take-profits and stop-losses,
        then liquidate."""
        now = self.market.clock(now_ms)
        frames: list[Frame] = []
        names = list(self.market.specs if tickers is None else tickers)
        for ticker in names:
            if any(o.ticker == ticker for o in self.open_orders.values()):
                volume = None if volumes is None else volumes.get(ticker)
                frames += self._match(ticker, volume, now)
        if not self.positions:
            return frames
        for position in [p for p in self.positions.values() if p.ticker in names]:
            if position.take_profit is None and position.stop_loss is None:
                continue
            for trigger in (position.stop_loss, position.take_profit):
                if trigger is not None and self._triggered(position, trigger):
                    # the other stays until the position is flat: it still protects
                    # while a LIMIT child rests
                    if trigger is position.take_profit:
                        position.take_profit = None
                    else:
                        position.stop_loss = None
                    frames += self._fire(position, trigger, now)
                    break
        for position in [p for p in self.positions.values() if p.ticker in names]:
            liquidation = self.liquidation_price(position)
            mark = self.market.marks[position.ticker]
            if liquidation > 0 and (
                mark <= liquidation if position.side == BUY else mark >= liquidation
            ):
                frames += self._liquidate(position, liquidation, now)
        return frames

    def _match(self, ticker: str, volume: Decimal | None, now: int) -> list[Frame]:
        last = self.market.prices[ticker]
        step = self.market.specs[ticker].step
        buys = [
            o
            for o in self.open_orders.values()
            if o.ticker == ticker and o.side == BUY and o.price >= last
        ]
        sells = [
            o
            for o in self.open_orders.values()
            if o.ticker == ticker and o.side == SELL and o.price <= last
        ]
        buys.sort(key=lambda o: -o.price)  # best price first; stable: oldest first
        sells.sort(key=lambda o: o.price)
        frames: list[Frame] = []
        for orders in (buys, sells):
            left = volume
            for order in orders:
                if left is not None and left <= 0:
                    break
                qty = order.left if left is None else min(order.left, q_down(left, step))
                if qty <= 0:
                    break
                frames += self._fill(order, qty, order.price, MAKER, now)
                if left is not None:
                    left -= qty
        return frames

    def _triggered(self, position: Position, trigger: Trigger) -> bool:
        price = self.market.price(position.ticker, trigger.trigger_type)
        up = (trigger.kind == TAKE_PROFIT) == (position.side == BUY)
        return price >= trigger.price if up else price <= trigger.price

    def _fire(self, position: Position, trigger: Trigger, now: int) -> list[Frame]:
        """The child order of a take-profit or stop-loss, for the whole position."""
        last = self.market.prices[position.ticker]
        price = trigger.order_price if trigger.order_type == LIMIT else None
        order = self._new_order(position, trigger.kind, price or ZERO, now, "engine")
        order.trigger_id = trigger.parent or None
        if price is None or (price >= last if order.side == BUY else price <= last):
            return self._fill(order, order.amount, last, TAKER, now)
        self.open_orders[order.order_id] = order  # a LIMIT child rests
        return [self.order_frame(order, now)]

    def _liquidate(self, position: Position, price: Decimal, now: int) -> list[Frame]:
        order = self._new_order(position, LIQUIDATION, price, now, "engine")
        lost = position.margin
        self._record(order, position.amount, price, role=TAKER, charge=ZERO, pnl=-lost, now=now)
        self.realized -= lost
        position.realized -= lost
        position.margin = ZERO
        self.market.record_trade(position.ticker, price, position.amount, order_side(order), now)
        frames = self._finish(order, FILLED, now)
        frames.append(self._close(position, "FORCE_CLOSE", now))
        frames.append(self.wallet_frame(now))
        return frames

    # -- fills -------------------------------------------------------------------------------

    def _fill(self, order: Order, qty: Decimal, price: Decimal, role: str, now: int) -> list[Frame]:
        """Fill ``qty`` of ``order`` at ``price``: the order, position and wallet frames."""
        rate = MAKER_FEE if role == MAKER else TAKER_FEE
        ticker = order.ticker
        position_frames: list[Frame] = []
        if order.direction == CLOSE:
            position = self.positions.get((ticker, order.position_side))
            available = position.amount if position is not None else ZERO
            qty = min(qty, available)
            if qty > 0:
                assert position is not None
                charge = fee(price * qty, rate)
                pnl, released = self._reduce(position, qty, price)
                self._credit(released + pnl - charge)
                self.fees_paid += charge
                self._record(order, qty, price, role=role, charge=charge, pnl=pnl, now=now)
                position_frames.append(self._after_reduce(position, order, now))
            if order.left == 0:
                status = FILLED
            elif qty == available:  # flat (or was): the rest cannot reduce anything
                status = CANCELLED
            else:
                status = PARTIAL
        else:
            charge = fee(price * qty, rate)
            release = self._release(order, qty)
            pnl = ZERO
            opened = qty
            if order.mode == ONEWAY:
                against = self.positions.get((ticker, opposite(order.side)))
                if against is not None:
                    closing = min(qty, against.amount)
                    pnl, released = self._reduce(against, closing, price)
                    self._credit(released + pnl)
                    position_frames.append(self._after_reduce(against, order, now))
                    opened = qty - closing
            margin = ZERO
            if opened > 0:
                margin = (price * opened / order.leverage).quantize(Q8, rounding=ROUND_DOWN)
                margin = max(ZERO, min(margin, release - charge))  # rounding never costs
                position_frames.append(self._grow(order, opened, price, margin, now))
            self.free += release - margin - charge
            self.fees_paid += charge
            self._record(order, qty, price, role=role, charge=charge, pnl=pnl, now=now)
            status = FILLED if order.left == 0 else PARTIAL
        if role == TAKER and qty > 0:
            self.market.record_trade(ticker, price, qty, order_side(order), now)
        if status == PARTIAL:
            order.status = status
            frames = [self.order_frame(order, now)]
        else:
            frames = self._finish(order, status, now)
        frames += position_frames
        if qty > 0:
            frames.append(self.wallet_frame(now))
        return frames

    def _release(self, order: Order, qty: Decimal) -> Decimal:
        """The part of the order's lock that ``qty`` of it frees (the rest, last)."""
        if not order.locked:
            return ZERO
        if order.traded + qty >= order.amount:
            share = order.locked
        else:
            total, amount = order.lock_total, order.amount
            share = (total * (order.traded + qty) / amount).quantize(Q8, ROUND_DOWN) - (
                total * order.traded / amount
            ).quantize(Q8, ROUND_DOWN)
        order.locked -= share
        return share

    def _credit(self, amount: Decimal) -> None:
        """Pay a close's proceeds (margin back + PnL - fee); a loss beyond them is absorbed."""
        if amount < 0:
            self.absorbed -= amount
            amount = ZERO
        self.free += amount

    def _reduce(self, position: Position, qty: Decimal, price: Decimal) -> tuple[Decimal, Decimal]:
        """(realised PnL, margin released) of reducing ``position`` by ``qty`` at ``price``."""
        diff = price - position.entry if position.side == BUY else position.entry - price
        pnl = (diff * qty).quantize(Q8, rounding=ROUND_HALF_EVEN)
        if qty >= position.amount:
            released = position.margin
        else:
            released = (position.margin * qty / position.amount).quantize(Q8, ROUND_DOWN)
        position.amount -= qty
        position.margin -= released
        position.realized += pnl
        self.realized += pnl
        return pnl, released

    def _after_reduce(self, position: Position, order: Order, now: int) -> Frame:
        if position.amount > 0:
            return self.position_frame(position, now)
        status = order.otype if order.otype in (TAKE_PROFIT, STOP_LOSS) else "USER_CLOSE"
        return self._close(position, status, now)

    def _grow(self, order: Order, qty: Decimal, price: Decimal, margin: Decimal, now: int) -> Frame:
        key = (order.ticker, order.position_side)
        position = self.positions.get(key)
        if position is None:
            position = Position(
                order.ticker,
                order.position_side,
                qty,
                price,
                margin,
                order.leverage,
                now,
                self.market.record_id(),
                mode=order.mode,
                margin_mode=order.margin_mode,
            )
            self.positions[key] = position
        else:
            total = position.amount + qty
            position.entry = ((position.entry * position.amount + price * qty) / total).quantize(Q8)
            position.amount = total
            position.margin += margin
        if order.take_profit is not None:
            position.take_profit = order.take_profit
        if order.stop_loss is not None:
            position.stop_loss = order.stop_loss
        return self.position_frame(position, now)

    def _close(self, position: Position, status: str, now: int) -> Frame:
        """The position is flat: gone from the open ones, with its closing status."""
        self.positions.pop((position.ticker, position.side), None)
        position.status = status
        position.closed = now
        position.take_profit = position.stop_loss = None
        self.closed_positions.append(position)
        return self.position_frame(position, now)

    def _record(
        self,
        order: Order,
        qty: Decimal,
        price: Decimal,
        *,
        role: str,
        charge: Decimal,
        pnl: Decimal,
        now: int,
    ) -> None:
        order.traded += qty
        order.value += price * qty
        order.fees += charge
        self.fills.append(
            Fill(
                self.market.trade_id(),
                order.order_id,
                self.market.order_id(now),  # the other side: another member's order
                order.ticker,
                order.side,
                order.position_side,
                order.direction,
                order.otype,
                role,
                price,
                qty,
                charge,
                pnl,
                order.leverage,
                order.mode,
                order.margin_mode,
                now,
            )
        )

    def _new_order(
        self, position: Position, otype: str, price: Decimal, now: int, origin: str
    ) -> Order:
        order = Order(
            self.market.order_id(now),
            self.market.record_id(),
            position.ticker,
            opposite(position.side),
            CLOSE,
            otype,
            price,
            position.amount,
            now,
            position.leverage,
            position.side,
            mode=position.mode,
            margin_mode=position.margin_mode,
            origin=origin,
        )
        self.orders[order.order_id] = order
        return order

    def _cancel(self, order: Order, now: int) -> list[Frame]:
        self.free += order.locked
        order.locked = ZERO
        return self._finish(order, CANCELLED, now)

    def _finish(self, order: Order, status: str, now: int) -> list[Frame]:
        order.status = status
        if status == FILLED:
            order.completed = now
        else:
            order.canceled = now
        if order.locked:  # (a filled order has released all of it already)
            self.free += order.locked
            order.locked = ZERO
        self.open_orders.pop(order.order_id, None)
        self._finished.append(order.order_id)
        while len(self._finished) > self.history_limit:
            self.orders.pop(self._finished.popleft(), None)
        return [self.order_frame(order, now)]

    def _spec(self, ticker: str) -> Spec:
        spec = self.market.specs.get(ticker)
        if spec is None:
            raise ApiError(1014, f"unknown ticker {ticker!r}")
        return spec

    # -- stream payloads (futures-user-stream.md) ---------------------------------------------

    def wallet_frame(self, now: int) -> Frame:
        return {
            "data": {"asset": "USDT", "free": text(self.free), "locked": text(self.locked)},
            "stream": "future_wallet",
            "eventTime": now,
        }

    def order_frame(self, order: Order, now: int) -> Frame:
        """JSON numbers for price and amounts; no side and no tif (none are sent)."""
        return {
            "data": {
                "orderId": order.order_id,
                "ticker": order.ticker,
                "direction": order.direction,
                "type": order.otype,
                "price": number(order.price),
                "amount": number(order.amount),
                "tradedAmount": number(order.traded),
                "value": number(order.value.quantize(Q8)),
                "status": order.status,
                "createdTime": order.created,
                "canceledTime": order.canceled,
                "completedTime": order.completed,
            },
            "stream": "future_order",
            "eventTime": now,
        }

    def position_frame(self, position: Position, now: int) -> Frame:
        """Numbers as strings; a flat position shows amount 0 and its closing status."""
        flat = position.closed is not None
        return {
            "data": {
                "ticker": position.ticker,
                "marginMode": "ISOLATED",
                "positionMode": position.mode,
                "position": position.side,
                "status": position.status,
                "leverage": str(position.leverage),
                "price": text(position.entry),
                "amount": "0" if flat else text(position.amount),
                "value": "0" if flat else text(position.value),
                "liquidPrice": "0" if flat else text(self.liquidation_price(position)),
                "unpnl": "0" if flat else text(self.unrealized(position)),
                "createdTime": position.created,
                "closeTime": "null" if position.closed is None else str(position.closed),
            },
            "stream": "future_position",
            "eventTime": now,
        }


def _lock(price: Decimal, qty: Decimal, leverage: int) -> Decimal:
    """What an OPEN order locks: its initial margin and the taker fee on its value."""
    value = price * qty
    margin = (value / leverage).quantize(Q8, rounding=ROUND_UP)
    return margin + (value * TAKER_FEE).quantize(Q8, rounding=ROUND_UP)


def _attach(trigger: Trigger | None, order_id: str) -> Trigger | None:
    if trigger is None:
        return None
    return Trigger(
        trigger.kind,
        trigger.trigger_type,
        trigger.price,
        trigger.order_type,
        trigger.order_price,
        order_id,
    )


def _check_trigger(trigger: Trigger, side: str, reference: Decimal, tick: Decimal) -> None:
    """A long's take-profit above the order's price, its stop-loss below (a short's the
    other way round); prices on the grid."""
    if trigger.price <= 0 or trigger.price != trigger.price.quantize(tick, ROUND_DOWN):
        raise ApiError(3007, "not a price on the grid")
    above = (trigger.kind == TAKE_PROFIT) == (side == BUY)
    if (trigger.price <= reference) if above else (trigger.price >= reference):
        where = "above" if above else "below"
        raise ApiError(3007, f"a {trigger.kind} of a {side} order must be {where} {reference}")
    if trigger.order_type == LIMIT:
        price = trigger.order_price
        if price is None or price <= 0 or price != price.quantize(tick, ROUND_DOWN):
            raise ApiError(3008)


def text(value: Decimal) -> str:
    """A Decimal as Bitmusa prints it in position and wallet payloads."""
    out = format(value.normalize(), "f")
    return "0" if out in ("-0", "") else out


def number(value: Decimal) -> int | float:
    """A Decimal as a JSON number (an int when it is whole)."""
    if value == value.to_integral_value():
        return int(value)
    return float(value)
