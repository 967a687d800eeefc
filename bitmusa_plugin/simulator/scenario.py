"""A seeded, consistent futures trading session that speaks Bitmusa's user-stream payloads.

Orders are placed, partially filled, filled and cancelled; positions open, grow and close
(by the user, by take-profit and by liquidation); the USDT wallet moves with them: an open
order locks its margin, a fill moves it into the position, a close releases the margin and
realises the PnL. All money is ``Decimal``, printed as Bitmusa prints it (strings).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import ROUND_DOWN, Decimal
from typing import Any

Frame = dict[str, Any]

MARKETS = {  # ticker: (start price, price step, amount step, leverage)
    "BTCUSDT": (Decimal("96500.5"), Decimal("0.1"), Decimal("0.001"), 10),
    "ETHUSDT": (Decimal("3100.25"), Decimal("0.01"), Decimal("0.01"), 20),
    "XRPUSDT": (Decimal("1.2143"), Decimal("0.0001"), Decimal("1"), 20),
}


START_BALANCE = Decimal("10000")
MAX_OPEN_ORDERS = 12


def _q(value: Decimal, step: Decimal) -> Decimal:
    return value.quantize(step, rounding=ROUND_DOWN)


def _s(value: Decimal) -> str:
    text = format(value.normalize(), "f")
    return "0" if text in ("-0", "") else text


@dataclass
class _Order:
    order_id: str
    ticker: str
    side: str  # BUY / SELL
    otype: str
    price: Decimal
    amount: Decimal
    created: int
    traded: Decimal = Decimal(0)
    value: Decimal = Decimal(0)
    locked: Decimal = Decimal(0)


@dataclass
class _Position:
    ticker: str
    side: str
    amount: Decimal
    entry: Decimal
    margin: Decimal
    created: int


@dataclass
class Scenario:
    """Call :meth:`step` with the current (simulated) time to get the next event's frames."""

    seed: int = 1
    rng: random.Random = field(init=False)
    free: Decimal = START_BALANCE
    locked: Decimal = Decimal(0)
    prices: dict[str, Decimal] = field(init=False)
    orders: dict[str, _Order] = field(default_factory=dict)
    positions: dict[str, _Position] = field(default_factory=dict)
    _ids: Iterator[int] = field(init=False)
    started: bool = False

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self.prices = {t: m[0] for t, m in MARKETS.items()}
        self._ids = iter(range(1001, 10**12))

    # -- the session --------------------------------------------------------------------------

    def step(self, now_ms: int) -> list[Frame]:
        """The frames of the next trading event, all stamped ``now_ms``."""
        if not self.started:
            self.started = True
            return [self._wallet(now_ms)]
        self._move_prices()
        # Stationary over any length of run: the account is topped up before it runs dry
        # (and skimmed when it has grown far), and the open book stays a realistic size.
        if self.free < START_BALANCE / 20 or self.free > START_BALANCE * 10:
            self.free = START_BALANCE
            return [self._wallet(now_ms)]  # a deposit or a withdrawal
        if len(self.orders) >= MAX_OPEN_ORDERS:
            return self._cancel(now_ms, oldest=True)
        choices: list[tuple[float, Callable[[int], list[Frame]]]] = [
            (3.0, self._place_limit),
            (1.0, self._market),
        ]
        if self.orders:
            choices += [(3.0, self._fill_some), (1.0, self._cancel)]
        if self.positions:
            choices += [(1.0, self._close), (0.3, self._liquidate), (1.5, self._mark)]
        total = sum(w for w, _ in choices)
        pick = self.rng.uniform(0, total)
        for weight, action in choices:
            pick -= weight
            if pick <= 0:
                return action(now_ms)
        return choices[-1][1](now_ms)

    def _move_prices(self) -> None:
        for ticker, (start, step, _, _) in MARKETS.items():
            price = self.prices[ticker]
            pull = float(price / start) - 1  # mean-reverting: prices wander, not explode
            drift = Decimal(str(round(self.rng.gauss(0, 0.0015) - 0.002 * pull, 6)))
            self.prices[ticker] = max(step, _q(price * (1 + drift), step))

    def _new_id(self) -> str:
        return f"F{next(self._ids)}"

    def _pick_ticker(self) -> str:
        return self.rng.choice(sorted(MARKETS))

    def _size(self, ticker: str) -> Decimal:
        _, _, step, leverage = MARKETS[ticker]
        budget = self.free * Decimal(str(self.rng.uniform(0.02, 0.08))) * leverage
        return max(step, _q(budget / self.prices[ticker], step))

    def _place_limit(self, now: int) -> list[Frame]:
        ticker = self._pick_ticker()
        side = self.rng.choice(["BUY", "SELL"])
        _, step, _, leverage = MARKETS[ticker]
        offset = Decimal("0.999") if side == "BUY" else Decimal("1.001")
        price = _q(self.prices[ticker] * offset, step)
        amount = self._size(ticker)
        margin = _q(price * amount / leverage, Decimal("0.00000001"))
        if margin > self.free:
            return self._mark(now) if self.positions else [self._wallet(now)]
        order = _Order(self._new_id(), ticker, side, "LIMIT", price, amount, now, locked=margin)
        self.orders[order.order_id] = order
        self.free -= margin
        self.locked += margin
        return [self._order_frame(order, "TRADING", now), self._wallet(now)]

    def _fill_some(self, now: int) -> list[Frame]:
        order = self.orders[self.rng.choice(sorted(self.orders))]
        _, _, step, _ = MARKETS[order.ticker]
        left = order.amount - order.traded
        part = left if self.rng.random() < 0.5 else max(step, _q(left / 2, step))
        return self._execute(order, min(part, left), order.price, now)

    def _execute(self, order: _Order, qty: Decimal, price: Decimal, now: int) -> list[Frame]:
        order.traded += qty
        order.value += price * qty
        margin = order.locked * qty / (order.amount - order.traded + qty)
        margin = _q(margin, Decimal("0.00000001"))
        order.locked -= margin
        self.locked -= margin
        done = order.traded >= order.amount
        if done:
            self.orders.pop(order.order_id, None)
            self.free += order.locked  # rounding remainder back to free
            self.locked -= order.locked
            order.locked = Decimal(0)
        frames = [
            self._order_frame(
                order, "FILLED" if done else "PARTIAL", now, completed=now if done else None
            )
        ]
        frames += self._add_to_position(
            order.ticker, order.side, qty, price=price, margin=margin, now=now
        )
        frames.append(self._wallet(now))
        return frames

    def _add_to_position(
        self, ticker: str, side: str, qty: Decimal, *, price: Decimal, margin: Decimal, now: int
    ) -> list[Frame]:
        pos = self.positions.get(ticker)
        if pos is None or pos.side != side:
            # opposite side: close the old one first, at this price
            frames = [] if pos is None else self._close_position(pos, price, "USER_CLOSE", now)
            self.positions[ticker] = _Position(ticker, side, qty, price, margin, now)
            self.locked += margin
            return [*frames, self._position_frame(self.positions[ticker], "OPEN", now)]
        total = pos.amount + qty
        pos.entry = _q((pos.entry * pos.amount + price * qty) / total, Decimal("0.00000001"))
        pos.amount = total
        pos.margin += margin
        self.locked += margin
        return [self._position_frame(pos, "OPEN", now)]

    def _market(self, now: int) -> list[Frame]:
        ticker = self._pick_ticker()
        side = self.rng.choice(["BUY", "SELL"])
        _, _, _, leverage = MARKETS[ticker]
        price = self.prices[ticker]
        amount = self._size(ticker)
        margin = _q(price * amount / leverage, Decimal("0.00000001"))
        if margin > self.free:
            return [self._wallet(now)]
        self.free -= margin
        order = _Order(
            self._new_id(), ticker, side, "MARKET", Decimal(0), amount, now, locked=margin
        )
        self.locked += margin
        return self._execute(order, amount, price, now)

    def _cancel(self, now: int, *, oldest: bool = False) -> list[Frame]:
        chosen = next(iter(self.orders)) if oldest else self.rng.choice(sorted(self.orders))
        order = self.orders.pop(chosen)
        self.free += order.locked
        self.locked -= order.locked
        order.locked = Decimal(0)
        return [self._order_frame(order, "CANCELLED", now, canceled=now), self._wallet(now)]

    def _close(self, now: int) -> list[Frame]:
        pos = self.positions[self.rng.choice(sorted(self.positions))]
        status = self.rng.choice(["USER_CLOSE", "TAKE_PROFIT", "STOP_LOSS"])
        otype = {"USER_CLOSE": "MARKET", "TAKE_PROFIT": "TAKE_PROFIT", "STOP_LOSS": "STOP_LOSS"}[
            status
        ]
        price = self.prices[pos.ticker]
        order = _Order(
            self._new_id(),
            pos.ticker,
            "SELL" if pos.side == "BUY" else "BUY",
            otype,
            Decimal(0),
            pos.amount,
            now,
            traded=pos.amount,
            value=price * pos.amount,
        )
        frames = [self._order_frame(order, "FILLED", now, completed=now, direction="CLOSE")]
        return frames + self._close_position(pos, price, status, now) + [self._wallet(now)]

    def _liquidate(self, now: int) -> list[Frame]:
        pos = self.positions[self.rng.choice(sorted(self.positions))]
        price = self._liquidation_price(pos)
        order = _Order(
            self._new_id(),
            pos.ticker,
            "SELL" if pos.side == "BUY" else "BUY",
            "LIQUIDATION",
            Decimal(0),
            pos.amount,
            now,
            traded=pos.amount,
            value=price * pos.amount,
        )
        self.positions.pop(pos.ticker)
        self.locked -= pos.margin  # the margin is lost
        frames = [
            self._order_frame(order, "FILLED", now, completed=now, direction="CLOSE"),
            self._position_frame(pos, "FORCE_CLOSE", now, flat=True),
            self._wallet(now),
        ]
        return frames

    def _close_position(self, pos: _Position, price: Decimal, status: str, now: int) -> list[Frame]:
        self.positions.pop(pos.ticker, None)
        pnl = self._pnl(pos, price)
        self.locked -= pos.margin
        self.free += max(Decimal(0), pos.margin + pnl)
        return [self._position_frame(pos, status, now, flat=True)]

    def _mark(self, now: int) -> list[Frame]:
        pos = self.positions[self.rng.choice(sorted(self.positions))]
        return [self._position_frame(pos, "OPEN", now)]

    def _pnl(self, pos: _Position, price: Decimal) -> Decimal:
        diff = price - pos.entry if pos.side == "BUY" else pos.entry - price
        return _q(diff * pos.amount, Decimal("0.00000001"))

    def _liquidation_price(self, pos: _Position) -> Decimal:
        _, step, _, leverage = MARKETS[pos.ticker]
        move = pos.entry / leverage * Decimal("0.9")
        return _q(pos.entry - move if pos.side == "BUY" else pos.entry + move, step)

    # -- payloads ----------------------------------------------------------------------------

    def _wallet(self, now: int) -> Frame:
        return {
            "data": {"asset": "USDT", "free": _s(self.free), "locked": _s(self.locked)},
            "stream": "future_wallet",
            "eventTime": now,
        }

    def _order_frame(
        self,
        order: _Order,
        status: str,
        now: int,
        *,
        completed: int | None = None,
        canceled: int | None = None,
        direction: str = "OPEN",
    ) -> Frame:
        return {
            "data": {
                "orderId": order.order_id,
                "ticker": order.ticker,
                "direction": direction,
                "position": order.side,
                "type": order.otype,
                "tif": "GTC" if order.otype == "LIMIT" else None,
                "price": _s(order.price),
                "amount": _s(order.amount),
                "tradedAmount": _s(order.traded),
                "value": _s(_q(order.value, Decimal("0.00000001"))),
                "status": status,
                "createdTime": order.created,
                "canceledTime": canceled,
                "completedTime": completed,
            },
            "stream": "future_order",
            "eventTime": now,
        }

    def _position_frame(
        self, pos: _Position, status: str, now: int, *, flat: bool = False
    ) -> Frame:
        _, _, _, leverage = MARKETS[pos.ticker]
        price = self.prices[pos.ticker]
        return {
            "data": {
                "ticker": pos.ticker,
                "marginMode": "ISOLATED",
                "positionMode": "ONEWAY",
                "position": pos.side,
                "status": status,
                "leverage": str(leverage),
                "price": _s(pos.entry),
                "amount": _s(pos.amount),
                "value": _s(_q(pos.entry * pos.amount, Decimal("0.00000001"))),
                "liquidPrice": "0" if flat else _s(self._liquidation_price(pos)),
                "unpnl": "0" if flat else _s(self._pnl(pos, price)),
                "createdTime": pos.created,
                "closeTime": str(now) if flat else "null",
            },
            "stream": "future_position",
            "eventTime": now,
        }

    # -- REST snapshots, in Bitmusa's REST shapes (numbers, numeric codes, snake_case) ----

    def rest_wallet(self) -> list[dict[str, Any]]:
        unpnl = sum(
            (self._pnl(p, self.prices[p.ticker]) for p in self.positions.values()), Decimal(0)
        )
        wallet = self.free + self.locked
        return [
            {
                "symbol": "USDT",
                "total_wallet_balance": float(wallet),
                "total_margin_balance": float(wallet + unpnl),
                "total_available_balance": float(self.free),
                "total_unpnl": float(unpnl),
                "position": [],
            }
        ]

    def rest_positions(self, ticker: str | None = None) -> list[dict[str, Any]]:
        return [
            {
                "id": 500 + i,
                "ticker": pos.ticker,
                "position": 0 if pos.side == "BUY" else 1,
                "margin_mode": 0,
                "position_mode": 0,
                "status": 0,
                "leverage": MARKETS[pos.ticker][3],
                "entry_price": float(pos.entry),
                "qty": float(pos.amount),
                "value": float(_q(pos.entry * pos.amount, Decimal("0.00000001"))),
                "liquid_price": float(self._liquidation_price(pos)),
                "unpnl": float(self._pnl(pos, self.prices[pos.ticker])),
                "initial_margin": float(pos.margin),
                "entry_time": _rest_time(pos.created),
                "close_time": None,
            }
            for i, pos in enumerate(self.positions.values())
            if ticker is None or pos.ticker == ticker
        ]

    def rest_open_orders(self, ticker: str | None = None) -> list[dict[str, Any]]:
        types = {"MARKET": 0, "LIMIT": 1, "TAKE_PROFIT": 2, "STOP_LOSS": 3, "LIQUIDATION": 4}
        records = [
            {
                "id": 270000 + i,
                "order_id": order.order_id,
                "ticker": order.ticker,
                "direction": 0,
                "position": 0 if order.side == "BUY" else 1,
                "order_type": types[order.otype],
                "status": 4 if order.traded else 0,
                "tif_mode": 0,
                "margin_mode": 0,
                "leverage": MARKETS[order.ticker][3],
                "order_price": float(order.price),
                "order_qty": float(order.amount),
                "traded_qty": float(order.traded),
                "traded_value": float(_q(order.value, Decimal("0.00000001"))),
                "left_qty": float(order.amount - order.traded),
                "is_reduce_only": False,
                "order_time": _rest_time(order.created),
                "filled_time": None,
                "cancel_time": None,
            }
            for i, order in enumerate(self.orders.values())
            if ticker is None or order.ticker == ticker
        ]
        return records[::-1]  # newest first, as Bitmusa lists


def _rest_time(ms: int) -> str:
    """Bitmusa's REST time: ISO 8601 to the second, UTC, without a zone."""
    import time as _time

    return _time.strftime("%Y-%m-%dT%H:%M:%S", _time.gmtime(ms // 1000))
