"""REST shapes (REFERENCE.md §5, TRADING.md §2) of an account and of the market. Pure.

Records use JSON numbers and numeric codes (orders, positions), except the trade history,
whose enums are names as in DF's sample; the order book and the public trades use strings.
``*_time`` strings are UTC without a zone (TRADING.md §0). Lists are newest first.
"""

from __future__ import annotations

import hashlib
import time as _time
from decimal import Decimal
from typing import Any

from ._engine import BUY, CLOSE, HEDGE, Engine, Fill, Order, Position
from ._market import (
    FUNDING_RATE,
    MAKER_FEE,
    MAX_OPEN_ORDERS_PER_ACCOUNT,
    MAX_ORDER_PRICE,
    PERIODS,
    QUOTE,
    TAKER_FEE,
    Candle,
    Level,
    Market,
    bucket_start,
    decimals,
)

ORDER_TYPES = {"MARKET": 0, "LIMIT": 1, "TAKE_PROFIT": 2, "STOP_LOSS": 3, "LIQUIDATION": 4}
ORDER_TYPE_NAMES = {code: name for name, code in ORDER_TYPES.items()}
HOUR = 3_600_000
SIXTEEN = Decimal("1E-16")


def rest_time(ms: int | None) -> str | None:
    """Bitmusa's REST time: ISO 8601 to the second, UTC, without a zone (rounded, as the
    samples are: 10:31:59.581 is "10:32:00")."""
    if ms is None:
        return None
    return _time.strftime("%Y-%m-%dT%H:%M:%S", _time.gmtime((ms + 500) // 1000))


def _f(value: Decimal) -> float:
    return float(value)


def record_side(engine: Engine, side: str, position_side: str, direction: str) -> str:
    """The ``position`` of an order or fill record: the trade side, or (with
    ``close_side="position"``) for a CLOSE the side of the position it reduces."""
    if engine.close_side == "position" and direction == CLOSE:
        return position_side
    return side


def open_order(engine: Engine, order: Order) -> dict[str, Any]:
    """A GET /future/order record (DF's fields); status 0 resting, 4 partly filled."""
    spec = engine.market.specs[order.ticker]
    side = record_side(engine, order.side, order.position_side, order.direction)
    return {
        "id": order.record_id,
        "ticker_id": spec.ticker_id,
        "member_id": engine.member_id,
        "order_id": order.order_id,
        "margin_mode": order.margin_mode,
        "direction": 1 if order.direction == CLOSE else 0,
        "position": 0 if side == BUY else 1,
        "order_type": ORDER_TYPES[order.otype],
        "status": 4 if order.traded else 0,
        "tif_mode": 0,
        "trigger_type": 0,
        "trigger_direction": 0,
        "ticker": order.ticker,
        "coin_symbol": spec.coin,
        "base_symbol": QUOTE,
        "leverage": order.leverage,
        "order_price": _f(order.price),
        "order_qty": _f(order.amount),
        "traded_price": _f(order.average),
        "traded_qty": _f(order.traded),
        "traded_value": _f(order.value.quantize(Decimal("1E-8"))),
        "left_qty": _f(order.left),
        "is_post_only": order.post_only,
        "is_reduce_only": order.reduce_only,
        "is_price_protected": False,
        "trigger_id": order.trigger_id,
        "trigger": None,
        "take_profit_price": _f(order.take_profit.price) if order.take_profit else 0.0,
        "stop_loss_price": _f(order.stop_loss.price) if order.stop_loss else 0.0,
        "order_time": rest_time(order.created),
        "filled_time": None,
        "cancel_time": None,
    }


def open_orders(
    engine: Engine, ticker: str | None = None, since: int | None = None, size: int | None = None
) -> list[dict[str, Any]]:
    orders = [
        o
        for o in engine.open_orders.values()
        if (ticker is None or o.ticker == ticker) and (since is None or o.created >= since)
    ]
    orders.reverse()  # newest first
    return [open_order(engine, o) for o in orders[:size]]


def position(engine: Engine, pos: Position) -> dict[str, Any]:
    """A GET /future/position record (DF's fields, and X's ``position_mode``, ``unpnl``,
    ``mark_price``)."""
    spec = engine.market.specs[pos.ticker]
    return {
        "id": pos.record_id,
        "position": 0 if pos.side == BUY else 1,
        "entry_price": _f(pos.entry),
        "margin_gap": 0.0,
        "status": 0,
        "liquid_price": _f(engine.liquidation_price(pos)),
        "close_fee": _f((pos.entry * pos.amount * TAKER_FEE).quantize(Decimal("1E-8"))),
        "member_id": engine.member_id,
        "ticker": pos.ticker,
        "bankruptcy_price": _f(engine.bankruptcy_price(pos)),
        "take_profit_price": _f(pos.take_profit.price) if pos.take_profit else 0.0,
        "entry_time": rest_time(pos.created),
        "coin_symbol": spec.coin,
        "initial_margin": _f(pos.margin),
        "close_time": None,
        "base_symbol": QUOTE,
        "maintenance_margin": _f(engine.maintenance_margin(pos)),
        "stop_loss_price": _f(pos.stop_loss.price) if pos.stop_loss else 0.0,
        "ticker_id": spec.ticker_id,
        "leverage": pos.leverage,
        "liquid_margin": _f(max(Decimal(0), pos.margin - engine.maintenance_margin(pos))),
        "adl": 0.0,
        "margin_mode": pos.margin_mode,
        "position_mode": 1 if pos.mode == HEDGE else 0,
        "qty": _f(pos.amount),
        "position_margin": _f(pos.margin),
        "return_liquid_margin": None,
        "value": _f(pos.value),
        "extra_margin": 0.0,
        "unpnl": _f(engine.unrealized(pos)),
        "mark_price": _f(engine.market.marks[pos.ticker]),
    }


def positions(engine: Engine, ticker: str | None = None) -> list[dict[str, Any]]:
    chosen = [p for p in engine.positions.values() if ticker is None or p.ticker == ticker]
    chosen.sort(key=lambda p: (p.created, p.record_id), reverse=True)
    return [position(engine, p) for p in chosen]


def wallet(engine: Engine, *, with_positions: bool = True) -> list[dict[str, Any]]:
    """GET /future/wallet (``position`` filled as in NX's sample), or ``noposition``."""
    unpnl = sum((engine.unrealized(p) for p in engine.positions.values()), Decimal(0))
    balance = engine.balance
    record: dict[str, Any] = {
        "symbol": QUOTE,
        "total_wallet_balance": _f(balance),
        "total_margin_balance": _f(balance + unpnl),
        "total_available_balance": _f(engine.free),
        "total_unpnl": _f(unpnl),
    }
    if with_positions:
        record["position"] = positions(engine)
    else:
        record["total_multiasset_balance"] = 0
    return [record]


def trade(engine: Engine, fill: Fill) -> dict[str, Any]:
    """A GET /future/trade/history record: DF's fields, enums as names."""
    spec = engine.market.specs[fill.ticker]
    return {
        "id": fill.trade_id,
        "direction": fill.direction,
        "position": record_side(engine, fill.side, fill.position_side, fill.direction),
        "leverage": fill.leverage,
        "ticker": fill.ticker,
        "symbol": QUOTE,
        "price": _f(fill.price),
        "role": fill.role,
        "member_id": engine.member_id,
        "order_id": fill.order_id,
        "opposite_order_id": fill.opposite_order_id,
        "transaction_time": rest_time(fill.time),
        "ticker_id": spec.ticker_id,
        "order_type": fill.otype,
        "margin_mode": "CROSSED" if fill.margin_mode else "ISOLATED",
        "position_mode": fill.mode,
        "income_symbol": spec.coin,
        "traded_qty": _f(fill.qty),
        "traded_value": _f(fill.value),
        "trading_fee": _f(fill.fee),
        "profit_and_loss": _f(fill.pnl),
    }


def leverage(engine: Engine, ticker: str) -> list[dict[str, Any]]:
    """GET /future/leverage, in the order of DF's sample."""
    settings = engine.leverages[ticker]
    kinds = ("ONEWAY", "HEDGE_SELL", "HEDGE_BUY")
    return [{"type": kind, "leverage": settings[kind]} for kind in kinds]


# -- the market -----------------------------------------------------------------------------


def _pk(market: Market, *parts: object) -> str:
    """An opaque ULID-like id (26 Crockford base-32 characters), stable for its inputs."""
    alphabet = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
    digest = hashlib.blake2b(repr((market.seed, *parts)).encode(), digest_size=16).digest()
    value = int.from_bytes(digest, "big")
    out = []
    for _ in range(24):
        value, digit = divmod(value, 32)
        out.append(alphabet[digit])
    return "01" + "".join(out)


def ticker_24h(market: Market, ticker: str) -> dict[str, Any]:
    """GET /future/market: the 24 h ticker (R§5's fields)."""
    day = market.day_stats(ticker)
    last = market.prices[ticker]
    now = market.updated[ticker]
    change = last - day.open
    rate = (change * 100 / day.open).quantize(Decimal("0.001")) if day.open else Decimal(0)
    next_hour = now - now % HOUR + HOUR
    return {
        "pk": _pk(market, "ticker", ticker, now),
        "ticker": ticker,
        "base_price": _f(day.open),
        "high_price": _f(day.high),
        "low_price": _f(day.low),
        "last_price": _f(last),
        "mark_price": _f(market.marks[ticker]),
        "index_price": _f(market.marks[ticker]),
        "funding_fee_rate": _f(FUNDING_RATE),
        # the inferences of TRADING.md 2.1: a whole hour before, and the next whole hour
        "funding_time": now - now % (8 * HOUR),
        "remaining_funding_time": next_hour - now,
        "change_price": _f(change),
        "change_rate": _f(rate),
        "total_qty": _f(day.qty),
        "total_value": _f(day.value.quantize(Decimal("1E-8"))),
        "last_updated_time": now,
    }


def _book_side(market: Market, ticker: str, levels: list[Level], position: str) -> list[Any]:
    out = []
    total = total_qty = Decimal(0)
    spec = market.specs[ticker]
    for level in levels:  # best first: the running totals count from the best price out
        amount = level.price * level.qty
        total += amount
        total_qty += level.qty
        out.append(
            {
                "payload": None,
                "price": format(level.price.quantize(spec.tick), "f"),
                "pk": _pk(market, "level", ticker, position, level.price, level.updated),
                "ticker": ticker,
                "amount": format(amount.normalize(), "f"),
                "qty": format(level.qty.quantize(spec.step), "f"),
                "total": _f(total),
                "total_qty": _f(total_qty),
                "position": position,
                "scale": "0",
                "updated_time": str(level.updated),
                "mode": "add",
            }
        )
    return out


def orderbook(
    market: Market, ticker: str, size: int, extra: list[tuple[str, Decimal, Decimal]]
) -> dict[str, Any]:
    """GET /future/market/orderbook: ``buy`` best first (descending); ``sell`` also
    descending, so its best price comes last (as DF shows)."""
    bids, asks = market.book(ticker, extra)
    sell = _book_side(market, ticker, asks[:size], "1")
    sell.reverse()
    return {"sell": sell, "buy": _book_side(market, ticker, bids[:size], "0")}


def _sixteen(value: Decimal) -> str:
    return format(value.quantize(SIXTEEN), "f")


def public_trades(market: Market, ticker: str, size: int) -> list[dict[str, Any]]:
    """GET /future/market/trade: 16-decimal strings, ``position`` 0 buy / 1 sell (the
    taker's side), ``traded_time`` ms, newest first."""
    trades = list(market.trades[ticker])[-size:]
    trades.reverse()
    return [
        {
            "ticker": ticker,
            "price": _sixteen(t.price),
            "qty": _sixteen(t.qty),
            "value": _sixteen(t.price * t.qty),
            "position": t.side,
            "traded_time": t.time,
        }
        for t in trades
    ]


def kline_row(candle: Candle) -> list[Any]:
    """[time, open, high, low, close, base qty], as DF's history rows."""
    return [
        candle.start,
        _f(candle.open),
        _f(candle.high),
        _f(candle.low),
        _f(candle.close),
        _f(candle.qty),
    ]


def kline_current(market: Market, ticker: str, period: str, now: int) -> dict[str, Any]:
    """GET /future/market/kline/current: the candle now forming."""
    start = bucket_start(period, now)
    candles = market.candles_for(ticker, period, start, now)
    price = market.prices[ticker]
    candle = candles[-1] if candles else Candle(start, price, price, price, price)
    return {
        "ticker": ticker,
        "period": PERIODS[period][1],
        "time": candle.start,
        "open_price": _f(candle.open),
        "high_price": _f(candle.high),
        "low_price": _f(candle.low),
        "close_price": _f(candle.close),
        "total_qty": _f(candle.qty),
        "total_value": _f(candle.value.quantize(Decimal("1E-8"))),
        "traded_cnt": candle.count,
    }


def exchange_info(market: Market) -> list[dict[str, Any]]:
    """The undocumented GET /future/market/exchange-info, in the shape of X's sample:
    ``baseCoinPrecision`` = price decimals, ``quoteCoinPrecision`` = amount decimals (as X
    reads them); the min/max quantities copied in the sample's (swapped-looking) way."""
    return [
        {
            "ticker": spec.ticker,
            "baseCoin": spec.coin,
            "quoteCoin": QUOTE,
            "takerFee": format((TAKER_FEE * 100).normalize(), "f"),
            "makerFee": format((MAKER_FEE * 100).normalize(), "f"),
            "baseCoinPrecision": decimals(spec.tick),
            "quoteCoinPrecision": decimals(spec.step),
            "minOrderPrice": format(spec.tick, "f"),
            "maxOrderPrice": format(MAX_ORDER_PRICE, "f") + ".0",
            "maxOpenOrder": MAX_OPEN_ORDERS_PER_ACCOUNT,
            "maxBaseCoinQty": "2000000.0",
            "minBaseCoinQty": "10.0",
            "maxQuoteCoinQty": "1000.0",
            "minQuoteCoinQty": format(spec.step, "f"),
            "enableLimitBuy": True,
            "enableLimitSell": True,
            "enableMarketSell": True,
            "enableMarketBuy": True,
            "enable": True,
        }
        for spec in market.specs.values()
    ]
