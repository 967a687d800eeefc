"""The market the simulated accounts trade against: prices, candles, public trades, a book.

Pure: no I/O and no system clock. Every call that moves time takes ``now_ms``. One :class:`Market`
is shared by every account of a :class:`~bitmusa_plugin.simulator.Simulator` (a standalone
:class:`~bitmusa_plugin.simulator._scenario.Scenario` makes its own).

* Prices wander: a seeded, mean-reverting random walk on each ticker's price grid
  (:meth:`Market.walk`), or set explicitly (:meth:`Market.set_price`, for tests). The mark
  price follows the last price, smoothed (the walk) or equal to it (``set_price`` without
  ``mark``). The index price is the mark price.
* Each move trades a volume (public trade tape, one-minute candles); resting orders of the
  accounts fill from it (:mod:`.engine`).
* The order book is synthetic: 21 levels a side, one tick apart, starting one tick from the
  last price, with seeded sizes that change when the price does; an account's own resting
  orders are added at their levels.
* Order ids come from here, so that they are unique across accounts: ``F`` + the 13-digit
  ms + 2-4 digits, the format Bitmusa has used since September 2023 (TRADING.md §0).
"""

from __future__ import annotations

import calendar
import random
import time as _time
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from decimal import ROUND_DOWN, ROUND_HALF_EVEN, Decimal

#: ticker: (start price, price step, amount step, default leverage). All steps are powers
#: of ten (exchange-info gives them as decimal counts).
MARKETS: dict[str, tuple[Decimal, Decimal, Decimal, int]] = {
    "BTCUSDT": (Decimal("96500.5"), Decimal("0.1"), Decimal("0.001"), 10),
    "ETHUSDT": (Decimal("3100.25"), Decimal("0.01"), Decimal("0.01"), 20),
    "XRPUSDT": (Decimal("1.2143"), Decimal("0.0001"), Decimal("1"), 20),
}
QUOTE = "USDT"
MAKER_FEE = Decimal("0.0002")  # exchange-info makerFee "0.02" (percent)
TAKER_FEE = Decimal("0.0003")  # exchange-info takerFee "0.03" (percent)
MAX_ORDER_PRICE = Decimal("1000000")
MAX_OPEN_ORDERS_PER_ACCOUNT = 5000  # exchange-info maxOpenOrder
BOOK_LEVELS = 21  # DF: the orderbook size default, and its maximum
FUNDING_RATE = Decimal("0.0001")  # shown only: the simulator charges no funding
MINUTE = 60_000
CANDLES_KEPT = 7 * 24 * 60  # one-minute candles per ticker: a week
TRADES_KEPT = 1000  # public trades per ticker
BACKFILL_MINUTES = 24 * 60  # history before the start, so that klines and 24 h stats exist
Q8 = Decimal("0.00000001")
ZERO = Decimal(0)


def q_down(value: Decimal, step: Decimal) -> Decimal:
    return value.quantize(step, rounding=ROUND_DOWN)


def on_grid(value: Decimal, step: Decimal) -> bool:
    return value == value.quantize(step, rounding=ROUND_DOWN)


def decimals(step: Decimal) -> int:
    """0.001 -> 3, 1 -> 0."""
    return max(0, -step.normalize().as_tuple().exponent)  # type: ignore[operator]


@dataclass(frozen=True)
class Spec:
    """One market, as exchange-info describes it."""

    ticker: str
    ticker_id: int
    coin: str
    start: Decimal
    tick: Decimal  # price step
    step: Decimal  # amount step
    leverage: int  # default leverage


@dataclass(slots=True)
class Candle:
    start: int  # ms, the open of its minute
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    qty: Decimal = ZERO
    value: Decimal = ZERO
    count: int = 0


@dataclass(frozen=True, slots=True)
class PublicTrade:
    time: int
    price: Decimal
    qty: Decimal
    side: int  # the taker's side: 0 buy, 1 sell


@dataclass(frozen=True, slots=True)
class Level:
    price: Decimal
    qty: Decimal
    updated: int


class Market:
    """Prices, candles and public trades of every ticker. ``seed`` makes it repeatable."""

    def __init__(
        self,
        seed: int = 1,
        *,
        start_ms: int | None = None,
        markets: dict[str, tuple[Decimal, Decimal, Decimal, int]] | None = None,
        backfill: bool = True,
    ) -> None:
        self.seed = seed
        self.rng = random.Random(f"market:{seed}")
        self.specs: dict[str, Spec] = {
            ticker: Spec(ticker, i + 1, ticker[: -len(QUOTE)], start, tick, step, lev)
            for i, (ticker, (start, tick, step, lev)) in enumerate((markets or MARKETS).items())
        }
        self.prices: dict[str, Decimal] = {t: s.start for t, s in self.specs.items()}
        self.marks: dict[str, Decimal] = dict(self.prices)
        self.moves: dict[str, int] = dict.fromkeys(self.specs, 0)  # how often each moved
        self.updated: dict[str, int] = dict.fromkeys(self.specs, start_ms or 0)
        self.candles: dict[str, deque[Candle]] = {t: deque(maxlen=CANDLES_KEPT) for t in self.specs}
        self.trades: dict[str, deque[PublicTrade]] = {
            t: deque(maxlen=TRADES_KEPT) for t in self.specs
        }
        self.now = start_ms or 0
        self._id_seq = 0
        self._last_id_ms = 0
        self._trade_ids = iter(range(20_000_001, 10**15))
        self._record_ids = iter(range(277_001, 10**15))
        if backfill and start_ms is not None:
            self._backfill(start_ms)

    # -- ids ------------------------------------------------------------------------------

    def order_id(self, now_ms: int) -> str:
        """``F`` + ms + 2-4 digits (10, 11, ... within one ms), unique across the accounts
        sharing this market: the ms is :meth:`clock`'s, which never steps back."""
        now_ms = self.clock(now_ms)
        if now_ms != self._last_id_ms:
            self._last_id_ms, self._id_seq = now_ms, 0
        self._id_seq += 1
        return f"F{now_ms:013d}{self._id_seq + 9}"

    def trade_id(self) -> int:
        return next(self._trade_ids)

    def record_id(self) -> int:
        """The numeric ``id`` of an order record."""
        return next(self._record_ids)

    # -- moves ------------------------------------------------------------------------------

    def walk(self, now_ms: int) -> dict[str, Decimal]:
        """One random step of every ticker; the volume each traded."""
        now_ms = self.clock(now_ms)
        volumes: dict[str, Decimal] = {}
        gauss, uniform = self.rng.gauss, self.rng.uniform
        for ticker, spec in self.specs.items():
            price = self.prices[ticker]
            pull = float(price / spec.start) - 1  # mean-reverting: prices wander, not explode
            drift = Decimal(repr(round(gauss(0, 0.0015) - 0.002 * pull, 6)))
            new = max(spec.tick, q_down(price * (1 + drift), spec.tick))
            # a few thousand USDT a step: resting orders fill in one or a few steps
            volume = q_down(Decimal(repr(round(uniform(500, 12000), 2))) / new, spec.step)
            volume = max(spec.step, volume)
            mark = (self.marks[ticker] + new) / 2
            self._move(ticker, new, q_down(mark, spec.tick), volume, now_ms)
            volumes[ticker] = volume
        return volumes

    def set_price(
        self,
        ticker: str,
        price: Decimal,
        now_ms: int,
        *,
        mark: Decimal | None = None,
        volume: Decimal | None = None,
    ) -> None:
        """Move ``ticker`` to ``price`` (mark: ``mark``, or the same). ``volume`` is what
        traded there: it goes on the tape and the candle (none is recorded without one)."""
        self._move(ticker, price, price if mark is None else mark, volume, self.clock(now_ms))

    def clock(self, now_ms: int) -> int:
        """``now_ms``, or the market's latest time if that is later."""
        self.now = max(self.now, now_ms)  # the wall clock may step back; the market does not
        return self.now

    def _move(
        self, ticker: str, price: Decimal, mark: Decimal, volume: Decimal | None, now: int
    ) -> None:
        old = self.prices[ticker]
        self.prices[ticker] = price
        self.marks[ticker] = mark
        self.moves[ticker] += 1
        self.updated[ticker] = now
        if volume is not None and volume > 0:
            side = 0 if price >= old else 1
            self.record_trade(ticker, price, volume, side, now)
        else:
            self._candle(ticker, price, ZERO, now)

    def record_trade(
        self, ticker: str, price: Decimal, qty: Decimal, side: int, now_ms: int
    ) -> None:
        """A trade on the public tape (the accounts' own fills come here too)."""
        now_ms = self.clock(now_ms)
        self.trades[ticker].append(PublicTrade(now_ms, price, qty, side))
        self._candle(ticker, price, qty, now_ms)

    def _candle(self, ticker: str, price: Decimal, qty: Decimal, now: int) -> None:
        candles = self.candles[ticker]
        start = now - now % MINUTE
        last = candles[-1] if candles else None
        if last is None or last.start < start:
            last = Candle(start, price, price, price, price)
            candles.append(last)
        elif last.start > start:  # (the clock never steps back; kept for safety)
            return
        last.high = max(last.high, price)
        last.low = min(last.low, price)
        last.close = price
        if qty:
            last.qty += qty
            last.value += price * qty
            last.count += 1

    def _backfill(self, start_ms: int) -> None:
        """A day of one-minute history that ends at each start price (walked backwards)."""
        rng = random.Random(f"backfill:{self.seed}")
        first = start_ms - start_ms % MINUTE - BACKFILL_MINUTES * MINUTE
        for ticker, spec in self.specs.items():
            closes = [spec.start]
            for _ in range(BACKFILL_MINUTES):
                drift = Decimal(repr(round(rng.gauss(0, 0.0008), 6)))
                closes.append(max(spec.tick, q_down(closes[-1] * (1 + drift), spec.tick)))
            closes.reverse()  # oldest first, the last one is the start price
            candles = self.candles[ticker]
            for i in range(BACKFILL_MINUTES):
                open_, close = closes[i], closes[i + 1]
                wiggle = Decimal(repr(round(abs(rng.gauss(0, 0.0004)), 6)))
                high = q_down(max(open_, close) * (1 + wiggle), spec.tick)
                low = max(spec.tick, q_down(min(open_, close) * (1 - wiggle), spec.tick))
                qty = q_down(Decimal(repr(round(rng.uniform(5e4, 6e5), 2))) / close, spec.step)
                value = q_down(qty * (open_ + close) / 2, Q8)
                count = rng.randint(20, 400)
                start = first + i * MINUTE
                candles.append(Candle(start, open_, high, low, close, qty, value, count))
                if i >= BACKFILL_MINUTES - TRADES_KEPT // 4:  # the tape's last few hundred
                    side = 0 if close >= open_ else 1
                    size = max(spec.step, q_down(qty / count, spec.step))
                    self.trades[ticker].append(PublicTrade(start + MINUTE - 1, close, size, side))

    # -- views --------------------------------------------------------------------------------

    def price(self, ticker: str, kind: str = "LAST") -> Decimal:
        return self.marks[ticker] if kind == "MARK" else self.prices[ticker]

    def book(
        self, ticker: str, extra: Iterable[tuple[str, Decimal, Decimal]] = ()
    ) -> tuple[list[Level], list[Level]]:
        """(bids best first, asks best first), 21 levels each; ``extra`` adds an account's
        resting orders as (side, price, qty)."""
        spec = self.specs[ticker]
        last = self.prices[ticker]
        rng = random.Random(f"book:{self.seed}:{ticker}:{self.moves[ticker]}")
        updated = self.updated[ticker]
        sides: dict[str, dict[Decimal, Decimal]] = {"BUY": {}, "SELL": {}}
        for k in range(1, BOOK_LEVELS + 1):
            for side, sign in (("BUY", -1), ("SELL", 1)):
                price = last + sign * k * spec.tick
                notional = Decimal(repr(round(rng.uniform(200, 40000), 2)))
                qty = max(spec.step, q_down(notional / last, spec.step))
                if price > 0:
                    sides[side][price] = qty
        for side, price, qty in extra:
            levels = sides[side]
            if price in levels:
                levels[price] += qty
            elif len(levels) < BOOK_LEVELS or (
                price > min(levels) if side == "BUY" else price < max(levels)
            ):
                levels[price] = qty
        bids = sorted(sides["BUY"].items(), reverse=True)[:BOOK_LEVELS]
        asks = sorted(sides["SELL"].items())[:BOOK_LEVELS]
        stamp = rng.randrange(0, 3000)
        return (
            [Level(p, q, updated - stamp - 7 * i) for i, (p, q) in enumerate(bids)],
            [Level(p, q, updated - stamp - 5 * i) for i, (p, q) in enumerate(asks)],
        )

    def minute_candles(self, ticker: str, start: int, end: int) -> Iterator[Candle]:
        """The one-minute candles that open in [start, end], oldest first."""
        for candle in self.candles[ticker]:
            if start <= candle.start <= end:
                yield candle

    def candles_for(self, ticker: str, period: str, start: int, end: int) -> list[Candle]:
        """Candles of ``period`` (see :data:`PERIODS`) that open in [start, end], oldest
        first, aggregated from the one-minute candles."""
        out: list[Candle] = []
        for minute in self.minute_candles(ticker, bucket_start(period, start), end):
            begin = bucket_start(period, minute.start)
            if begin < start:
                continue
            last = out[-1] if out else None
            if last is None or last.start != begin:
                out.append(
                    Candle(
                        begin,
                        minute.open,
                        minute.high,
                        minute.low,
                        minute.close,
                        minute.qty,
                        minute.value,
                        minute.count,
                    )
                )
            else:
                last.high = max(last.high, minute.high)
                last.low = min(last.low, minute.low)
                last.close = minute.close
                last.qty += minute.qty
                last.value += minute.value
                last.count += minute.count
        return out

    def day_stats(self, ticker: str) -> Candle:
        """The last 24 hours as one candle (open = the price 24 hours ago)."""
        end = self.updated[ticker]
        window = [c for c in self.candles[ticker] if c.start > end - 24 * 60 * MINUTE]
        price = self.prices[ticker]
        if not window:
            return Candle(end, price, price, price, price)
        day = Candle(window[0].start, window[0].open, price, price, price)
        for c in window:
            day.high = max(day.high, c.high)
            day.low = min(day.low, c.low)
            day.qty += c.qty
            day.value += c.value
            day.count += c.count
        return day


#: Candle periods, by their names in every vocabulary the sources use: the REST codes of
#: DF (``1``, ``30``, ``60``, ``1D``, ``1W``, ``1M``), the websocket names (``1min`` ...
#: ``1M``) and ccxt timeframes (``1m`` ... ``1w``). Value: (length in ms, or 0 for a
#: calendar month; the label of kline/current and of the websocket).
PERIODS: dict[str, tuple[int, str]] = {}
for _label, _ms, _aliases in (
    ("1min", MINUTE, ("1", "1m")),
    ("3min", 3 * MINUTE, ("3m",)),
    ("5min", 5 * MINUTE, ("5m",)),
    ("15min", 15 * MINUTE, ("15m",)),
    ("30min", 30 * MINUTE, ("30", "30m")),
    ("1H", 60 * MINUTE, ("60", "1h")),
    ("2H", 120 * MINUTE, ("2h",)),
    ("4H", 240 * MINUTE, ("4h",)),
    ("6H", 360 * MINUTE, ("6h",)),
    ("8H", 480 * MINUTE, ("8h",)),
    ("12H", 720 * MINUTE, ("12h",)),
    ("1D", 1440 * MINUTE, ("1d",)),
    ("1W", 7 * 1440 * MINUTE, ("1w",)),
    ("1M", 0, ()),
):
    for _name in (_label, *_aliases):
        PERIODS[_name] = (_ms, _label)
#: The documented REST codes of /kline/current and /kline/history (DF).
REST_PERIODS = ("1", "30", "60", "1D", "1W", "1M")
#: The websocket kline intervals (REFERENCE.md §8).
WS_INTERVALS = tuple(label for label, (_, lab) in PERIODS.items() if label == lab)
_WEEK_ANCHOR = 4 * 1440 * MINUTE  # 1970-01-05, a Monday: weeks start on Monday 00:00 UTC


def bucket_start(period: str, ms: int) -> int:
    """The open of the ``period`` candle that contains ``ms`` (UTC)."""
    length, _ = PERIODS[period]
    if length == 0:  # a calendar month
        t = _time.gmtime(ms // 1000)
        return calendar.timegm((t.tm_year, t.tm_mon, 1, 0, 0, 0)) * 1000
    if length == 7 * 1440 * MINUTE:
        return ms - (ms - _WEEK_ANCHOR) % length
    return ms - ms % length


def period_length(period: str, start: int) -> int:
    """The length of the ``period`` candle opening at ``start``, ms."""
    length, _ = PERIODS[period]
    if length:
        return length
    t = _time.gmtime(start // 1000)
    year, month = (t.tm_year + 1, 1) if t.tm_mon == 12 else (t.tm_year, t.tm_mon + 1)
    return calendar.timegm((year, month, 1, 0, 0, 0)) * 1000 - start


def fee(value: Decimal, rate: Decimal) -> Decimal:
    return (value * rate).quantize(Q8, rounding=ROUND_HALF_EVEN)
