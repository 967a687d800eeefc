"""A seeded, scripted trading session: the background activity of a simulated account.

The script trades through the account's :class:`~bitmusa_plugin.simulator._engine.Engine`
exactly as REST calls do: it places limit orders near the price (some with a take-profit
and a stop-loss), market orders, reduce-only limits and, now and then, a high-leverage
trade; it cancels and closes. The market's moves then fill the resting orders, fire the
triggers and liquidate, and every change comes out as the user-stream frames of
futures-user-stream.md. So scripted and REST-placed activity share one consistent account.

:meth:`Scenario.step` gives one event's frames per call. A standalone scenario owns its
market and moves it first on every step: what the move did (fills, triggers, liquidations)
is the step's event, or, if nothing, a scripted action. In a
:class:`~bitmusa_plugin.simulator.Simulator` the market is shared and moved by the server,
which applies the same rule. The session is stationary however long it
runs: prices revert to their start, at most :data:`MAX_OPEN_ORDERS` scripted orders are open
(the oldest is cancelled), and the account is topped up before it runs dry or skimmed when
it has grown tenfold.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from . import _records as records
from ._engine import (
    BUY,
    CLOSE,
    LIMIT,
    MARKET,
    ONEWAY,
    OPEN,
    SELL,
    START_BALANCE,
    STOP_LOSS,
    TAKE_PROFIT,
    ApiError,
    CloseSide,
    Engine,
    Frame,
    Order,
    OrderRequest,
    Position,
    Trigger,
    opposite,
)
from ._market import MARKETS, Market, q_down

__all__ = ["MARKETS", "MAX_OPEN_ORDERS", "START_BALANCE", "Frame", "Scenario"]

MAX_OPEN_ORDERS = 12  # scripted orders open at once


class Scenario:
    """Call :meth:`step` with the current time to get the next event's frames."""

    def __init__(
        self,
        seed: int = 1,
        *,
        market: Market | None = None,
        balance: Decimal = START_BALANCE,
        close_side: CloseSide = "trade",
        member_id: int = 79010,
    ) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.owns_market = market is None
        self.market = market if market is not None else Market(seed)
        self.engine = Engine(
            self.market, Decimal(balance), close_side=close_side, member_id=member_id
        )
        self.reference = Decimal(balance)  # the balance the top-ups restore
        self.started = False

    # -- ground truth (the names the tests have always used) --------------------------------

    @property
    def orders(self) -> dict[str, Order]:
        """Open orders by id, oldest first (scripted and REST-placed alike)."""
        return self.engine.open_orders

    @property
    def positions(self) -> dict[str, Position]:
        """Open positions by ticker (a hedge-mode ticker's as ``TICKER:BUY``/``:SELL``)."""
        return self.engine.positions_by_ticker()

    @property
    def free(self) -> Decimal:
        return self.engine.free

    @property
    def locked(self) -> Decimal:
        return self.engine.locked

    @property
    def prices(self) -> dict[str, Decimal]:
        """Last prices by ticker."""
        return self.market.prices

    def rest_wallet(self) -> list[dict[str, Any]]:
        return records.wallet(self.engine)

    def rest_positions(self, ticker: str | None = None) -> list[dict[str, Any]]:
        return records.positions(self.engine, ticker)

    def rest_open_orders(self, ticker: str | None = None) -> list[dict[str, Any]]:
        return records.open_orders(self.engine, ticker)

    def rest_trade_history(self, ticker: str | None = None) -> list[dict[str, Any]]:
        """Every fill kept, as GET /future/trade/history records, newest first."""
        fills = [f for f in reversed(self.engine.fills) if ticker in (None, f.ticker)]
        return [records.trade(self.engine, f) for f in fills]

    # -- the session --------------------------------------------------------------------------

    def step(self, now_ms: int) -> list[Frame]:
        """The frames of the next event (never none), all stamped ``now_ms``."""
        if not self.started:
            self.started = True
            return [self.engine.wallet_frame(self.market.clock(now_ms))]
        if self.owns_market:  # the move's fills, triggers, liquidations are the event
            frames = self.engine.on_tick(now_ms, self.market.walk(now_ms))
            if frames:
                return frames
        return self.act(now_ms)

    def act(self, now: int) -> list[Frame]:
        """One scripted action (never without a frame)."""
        engine = self.engine
        if engine.free < self.reference / 20 or engine.free > self.reference * 10:
            return engine.adjust(self.reference - engine.free, now)  # a deposit / withdrawal
        own = self._own_orders()
        if len(own) >= MAX_OPEN_ORDERS:
            return engine.cancel(own[0].order_id, now)
        choices: list[tuple[float, Callable[[int], list[Frame]]]] = [
            (3.0, self._place_limit),
            (1.0, self._market),
        ]
        if own:
            choices.append((1.0, self._cancel))
        if engine.positions:
            choices += [
                (1.0, self._close),
                (1.5, self._mark),
                (0.5, self._reduce_limit),
                (0.3, self._risky),
            ]
        pick = self.rng.uniform(0, sum(w for w, _ in choices))
        for weight, action in choices:
            pick -= weight
            if pick <= 0:
                return action(now)
        return choices[-1][1](now)

    def _own_orders(self) -> list[Order]:
        return [o for o in self.engine.open_orders.values() if o.origin == "script"]

    def _pick_ticker(self) -> str:
        return self.rng.choice(sorted(self.market.specs))

    def _size(self, ticker: str, side: str) -> Decimal:
        spec = self.market.specs[ticker]
        leverage = self.engine.leverage_for(ticker, side)
        budget = self.engine.free * Decimal(repr(round(self.rng.uniform(0.02, 0.08), 4)))
        return max(spec.step, q_down(budget * leverage / self.market.prices[ticker], spec.step))

    def _place(self, request: OrderRequest, now: int) -> list[Frame]:
        try:
            return self.engine.place(request, now, origin="script")[1]
        except ApiError:  # not enough margin: a position update instead
            return self._mark(now) if self.engine.positions else self._wallet(now)

    def _place_limit(self, now: int) -> list[Frame]:
        ticker = self._pick_ticker()
        side = self.rng.choice([BUY, SELL])
        tick = self.market.specs[ticker].tick
        offset = Decimal("0.999") if side == BUY else Decimal("1.001")
        price = max(tick, q_down(self.market.prices[ticker] * offset, tick))
        take_profit = stop_loss = None
        if self.rng.random() < 0.25:  # a bracket: take-profit and stop-loss, 0.6 % away
            kind = self.rng.choice(["MARK", "LAST"])
            up, down = Decimal("1.006"), Decimal("0.994")
            tp, sl = (up, down) if side == BUY else (down, up)
            take_profit = Trigger(TAKE_PROFIT, kind, q_down(price * tp, tick))
            stop_loss = Trigger(STOP_LOSS, kind, q_down(price * sl, tick))
        request = OrderRequest(
            ticker,
            side,
            OPEN,
            LIMIT,
            self._size(ticker, side),
            price,
            take_profit=take_profit,
            stop_loss=stop_loss,
        )
        return self._place(request, now)

    def _market(self, now: int) -> list[Frame]:
        ticker = self._pick_ticker()
        side = self.rng.choice([BUY, SELL])
        return self._place(OrderRequest(ticker, side, OPEN, MARKET, self._size(ticker, side)), now)

    def _reduce_limit(self, now: int) -> list[Frame]:
        """A reduce-only limit a little in profit, sometimes larger than the position (its
        rest is cancelled when it fills)."""
        position = self._pick_position()
        tick = self.market.specs[position.ticker].tick
        step = self.market.specs[position.ticker].step
        side = opposite(position.side)
        offset = Decimal("1.001") if side == SELL else Decimal("0.999")
        price = max(tick, q_down(self.market.prices[position.ticker] * offset, tick))
        factor = Decimal(repr(round(self.rng.uniform(0.4, 1.5), 2)))
        qty = max(step, q_down(position.amount * factor, step))
        request = OrderRequest(position.ticker, side, CLOSE, LIMIT, qty, price, reduce_only=True)
        return self._place(request, now)

    def _risky(self, now: int) -> list[Frame]:
        """A market order at 100x: it is liquidated after a move of about half a percent.
        It opens a position of its own, on a ticker with no position and no order (a
        position has one leverage: orders that grow it use it)."""
        engine = self.engine
        busy = {t for t, _ in engine.positions} | {o.ticker for o in engine.open_orders.values()}
        free = [t for t in sorted(self.market.specs) if t not in busy]
        if not free:
            return self._market(now)
        ticker = self.rng.choice(free)
        side = self.rng.choice([BUY, SELL])
        kind = "ONEWAY" if engine.mode(ticker) == ONEWAY else f"HEDGE_{side}"
        before = engine.leverages[ticker][kind]
        engine.leverages[ticker][kind] = 100  # for this order only: restored at once
        try:
            qty = self._size(ticker, side)
            return self._place(OrderRequest(ticker, side, OPEN, MARKET, qty), now)
        finally:
            engine.leverages[ticker][kind] = before

    def _cancel(self, now: int) -> list[Frame]:
        order = self.rng.choice(self._own_orders())
        return self.engine.cancel(order.order_id, now)

    def _close(self, now: int) -> list[Frame]:
        return self.engine.close_position(self._pick_position(), now, origin="script")

    def _mark(self, now: int) -> list[Frame]:
        """A position update at the current mark price (its unrealised PnL moved)."""
        return [self.engine.position_frame(self._pick_position(), now)]

    def _wallet(self, now: int) -> list[Frame]:
        return [self.engine.wallet_frame(now)]

    def _pick_position(self) -> Position:
        keys = sorted(self.engine.positions)
        return self.engine.positions[self.rng.choice(keys)]
