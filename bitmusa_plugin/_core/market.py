"""Markets and market data: Bitmusa's vocabulary for them, and the readings the ccxt drop-in
takes where the sources disagree or are silent (TRADING.md §2, §5; docs/ccxt.md,
"Decisions"). Pure: tables and arithmetic on the records' own fields, no I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

#: Which kline endpoint ``fetch_ohlcv`` calls (OQ3): DF's ``/kline/history`` with
#: ``period``, or the SDKs' ``/kline`` with ``interval``.
KlinePath = Literal["history", "sdk"]
#: How exchange-info's quantity fields read (OQ6): ``swapped`` (``min/maxQuoteCoinQty`` limit
#: the amount in base units, ``min/maxBaseCoinQty`` the cost in quote), or ``as-named``
#: (ninjaxt's: ``min/maxBaseCoinQty`` limit the amount).
QuantityReading = Literal["swapped", "as-named"]
#: The unit of ``funding_fee_rate`` (OQ5): ``percent`` (divided by 100) or ``fraction``.
FundingUnit = Literal["percent", "fraction"]
#: Which name GET /future/market and /future/market/trade get the market by (OQ3): DF's
#: ``symbol``, the SDKs' ``ticker``, or ``both`` at once.
TickerParam = Literal["both", "symbol", "ticker"]

KLINE_PATHS: tuple[KlinePath, ...] = ("history", "sdk")
QUANTITY_READINGS: tuple[QuantityReading, ...] = ("swapped", "as-named")
FUNDING_UNITS: tuple[FundingUnit, ...] = ("percent", "fraction")
TICKER_PARAMS: tuple[TickerParam, ...] = ("both", "symbol", "ticker")

#: ccxt timeframe -> DF's ``period`` code of ``/kline/history`` (TRADING.md 2.4: nothing
#: else is documented on REST).
HISTORY_PERIODS: dict[str, str] = {
    "1m": "1",
    "30m": "30",
    "1h": "60",
    "1d": "1D",
    "1w": "1W",
    "1M": "1M",
}
#: ccxt timeframe -> the ``interval`` the SDKs send to ``/kline``, in the websocket's
#: vocabulary (R§8; ninjaxt's table).
SDK_INTERVALS: dict[str, str] = {
    "1m": "1min",
    "3m": "3min",
    "5m": "5min",
    "15m": "15min",
    "30m": "30min",
    "1h": "1H",
    "2h": "2H",
    "4h": "4H",
    "6h": "6H",
    "8h": "8H",
    "12h": "12H",
    "1d": "1D",
    "1w": "1W",
    "1M": "1M",
}

#: Levels a side that GET /future/market/orderbook gives at most (DF: 21, "cannot be set
#: larger"); a larger ``limit`` asks for 21.
ORDER_BOOK_MAX = 21
#: Public trades asked for at most (no source gives a maximum; DF's default is 100).
PUBLIC_TRADES_MAX = 1000
#: Candles a ``fetch_ohlcv`` without ``limit`` asks for (no source gives a default).
OHLCV_DEFAULT = 100

#: The markets ``fetch_markets`` falls back on when exchange-info is not there (HTTP
#: 404/405/410, or not Bitmusa's envelope): ninjaxt's sample record (R§5), the one market
#: whose precision and limits any source shows. Tickers beyond it come from
#: ``options['fallbackMarkets']``.
FALLBACK_MARKETS: tuple[dict[str, Any], ...] = (
    {
        "ticker": "BTCUSDT",
        "baseCoin": "BTC",
        "quoteCoin": "USDT",
        "takerFee": "0.03",
        "makerFee": "0.02",
        "baseCoinPrecision": 1,
        "quoteCoinPrecision": 3,
        "minOrderPrice": "0.1",
        "maxOrderPrice": "1000000.0",
        "maxOpenOrder": 5000,
        "maxBaseCoinQty": "2000000.0",
        "minBaseCoinQty": "10.0",
        "maxQuoteCoinQty": "1000.0",
        "minQuoteCoinQty": "0.001",
        "enableLimitBuy": True,
        "enableLimitSell": True,
        "enableMarketSell": True,
        "enableMarketBuy": True,
        "enable": True,
    },
)

#: The leverage range ``POST /future/leverage`` accepts (DF: 1-125, for every ticker).
LEVERAGE_RANGE = (1, 125)


def quantity_fields(reading: QuantityReading) -> dict[str, tuple[str, str]]:
    """exchange-info's (min, max) field names for the amount and the cost limits."""
    base = ("minBaseCoinQty", "maxBaseCoinQty")
    quote = ("minQuoteCoinQty", "maxQuoteCoinQty")
    if reading == "swapped":
        return {"amount": quote, "cost": base}
    return {"amount": base, "cost": quote}


def kline_request(
    path: KlinePath, ticker: str, timeframe: str, *, start_ms: int, end_ms: int, limit: int
) -> dict[str, Any]:
    """The query of a kline call: DF's ``period`` with both times (both required), or the
    SDKs' ``interval`` with the times and ``size``. ``timeframe`` must be in the path's
    table (:func:`timeframes`)."""
    if path == "history":
        return {
            "ticker": ticker,
            "period": HISTORY_PERIODS[timeframe],
            "startTime": start_ms,
            "endTime": end_ms,
        }
    return {
        "ticker": ticker,
        "interval": SDK_INTERVALS[timeframe],
        "startTime": start_ms,
        "endTime": end_ms,
        "size": limit,
    }


def timeframes(path: KlinePath) -> dict[str, str]:
    """The ccxt timeframes a kline path serves, and each one's code there."""
    return dict(HISTORY_PERIODS if path == "history" else SDK_INTERVALS)


def market_params(ticker: str, name: TickerParam) -> dict[str, str]:
    """How GET /future/market and /future/market/trade name the market."""
    if name == "both":
        return {"symbol": ticker, "ticker": ticker}
    return {name: ticker}


def next_funding_ms(record: Mapping[str, Any]) -> int | None:
    """When the next funding is (TRADING.md 2.1, inferred: ``last_updated_time +
    remaining_funding_time`` lands on a whole hour in every sample), or None."""
    updated, remaining = record.get("last_updated_time"), record.get("remaining_funding_time")
    if type(updated) is not int or type(remaining) is not int or remaining < 0:
        return None
    return updated + remaining


def book_timestamp(levels: list[Any]) -> int | None:
    """A book's time: its levels' latest ``updated_time`` (the book has none of its own;
    ninjaxt's sample spells it ``update_time``)."""
    latest: int | None = None
    for level in levels:
        if not isinstance(level, Mapping):
            continue
        value = level.get("updated_time", level.get("update_time"))
        if isinstance(value, str) and value.isdigit():
            value = int(value)
        if type(value) is int and (latest is None or value > latest):
            latest = value
    return latest
