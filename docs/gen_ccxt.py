"""Writes the method table of docs/ccxt.md: every key of ccxt's ``has``, supported by the
drop-in or not, and how or why not. ``has`` is the truth (``bitmusa().has``); this file
holds only the words.

    python docs/gen_ccxt.py          # rewrite the table in docs/ccxt.md
tests/test_docs.py fails when the table is out of date or a key has no words.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

HERE = Path(__file__).parent
PAGE = HERE / "ccxt.md"
START, END = "<!-- methods:start -->", "<!-- methods:end -->"

#: what each supported key stands on
SUPPORTED = {
    "privateAPI": "the account's REST calls and user stream (both auth headers)",
    "swap": "linear perpetuals (`BTC/USDT:USDT`), contract size 1",
    "ws": "the user stream (`watch_*` below)",
    "fetchMarkets": "`GET /future/market/exchange-info` (undocumented), else the shipped table",
    "fetchTicker": "`GET /future/market` (no bid, ask or vwap exist)",
    "fetchTickers": "one `GET /future/market` per market (no all-markets form)",
    "fetchOrderBook": "`GET /future/market/orderbook`, 21 levels at most, asks re-sorted",
    "fetchL2OrderBook": "as `fetchOrderBook` (the book is aggregated by price)",
    "fetchTrades": "`GET /future/market/trade`, oldest first (no trade ids exist)",
    "fetchOHLCV": "`/kline/history` (`period`) or `/kline` (`interval`): `options.ohlcvPath`",
    "fetchFundingRate": "the funding fields of `GET /future/market`",
    "fetchStatus": "`GET /api/health` (no keys needed)",
    "fetchBalance": "`GET /future/wallet`",
    "fetchPositions": "`GET /future/position`",
    "fetchOpenOrders": "`GET /future/order`",
    "fetchOrder": "open orders (REST), else the stream's cache, else `OrderNotFound`",
    "fetchMyTrades": "`GET /future/trade/history`, page after page, with fee and role; "
    "with `since`, read back (newest first) until `since` is reached, or an error saying "
    "there are too many",
    "createOrder": "`POST /future/order`, sent once, never retried",
    "createLimitOrder": "`createOrder`",
    "createMarketOrder": "`createOrder`",
    "createLimitBuyOrder": "`createOrder`",
    "createLimitSellOrder": "`createOrder`",
    "createMarketBuyOrder": "`createOrder`",
    "createMarketSellOrder": "`createOrder`",
    "createPostOnlyOrder": "`createOrder` with `is_post_only`",
    "createReduceOnlyOrder": "`createOrder` as `options.reduceOnly` says",
    "createOrderWithTakeProfitAndStopLoss": "`createOrder` with the TP/SL fields attached",
    "cancelOrder": "`POST /future/order/cancel/{id}`",
    "cancelAllOrders": "`POST /future/order/cancel/all` (a ticker, or `all`)",
    "closePosition": "`POST /future/position/close/all` for the symbol (every side of it)",
    "closeAllPositions": "`POST /future/position/close/all` with `all`",
    "setLeverage": "`POST /future/leverage` (`params.side` for one hedge side)",
    "fetchLeverage": "`GET /future/leverage` read with the symbol's position mode",
    "setPositionMode": "`POST /future/position/mode`, per symbol (none: every market)",
    "fetchPositionMode": "`GET /future/position/mode`, per symbol",
    "watchBalance": "user stream `future_wallet`",
    "watchOrders": "user stream `future_order`",
    "watchPositions": "user stream `future_position`",
    "watchMyTrades": "`on_trade`: one trade per fill of `future_order`; a gap's from history",
    # emulated (_ccxt/emulated.py)
    "fetchPosition": "`fetchPositions([symbol])`'s one (hedge mode: `params.side`), else flat",
    "fetchOrderTrades": "`fetchMyTrades` from the order's creation time (its id has it), "
    "filtered by `order`",
    "fetchFundingRates": "one `GET /future/market` per market, as `fetchFundingRate`",
    "fetchTradingFee": "the market's rates from exchange-info (no per-account fee exists); "
    "`NotSupported` when the markets came from the shipped table",
    "fetchTradingFees": "as `fetchTradingFee`, for every market",
    "fetchLastPrices": "`last_price` of one `GET /future/market` per market (no side)",
    # the public market streams (docs/ccxt.md, "Public market streams")
    "watchTicker": "`GET /future/market`, polled (no ticker stream exists)",
    "watchTickers": "`GET /future/market` per market, polled",
    "watchOrderBook": "draft stream `<ticker>@depth<5|10|20>@<speed>`: snapshots; else polled",
    "watchOrderBookForSymbols": "the depth streams of every symbol, one connection",
    "watchTrades": "`GET /future/market/trade`, polled (no trade stream exists)",
    "watchTradesForSymbols": "`GET /future/market/trade` per symbol, polled",
    "watchOHLCV": "draft stream `<ticker>@kline_<interval>`; else polled",
    "watchOHLCVForSymbols": "the kline streams of every pair, one connection",
    "unWatchTicker": "stops the poll",
    "unWatchTickers": "stops the polls",
    "unWatchOrderBook": "drops the stream (the connection follows the rest)",
    "unWatchOrderBookForSymbols": "drops the streams",
    "unWatchTrades": "stops the poll",
    "unWatchTradesForSymbols": "stops the polls",
    "unWatchOHLCV": "drops the stream",
    "unWatchOHLCVForSymbols": "drops the streams",
}

NO_HISTORY = "no order-history or single-order endpoint in v2 (TRADING.md §5 OQ2)"
NO_ENDPOINT = "no such endpoint in Bitmusa's futures API"
WALLET = "wallet operations are outside the futures API"
#: why each unsupported key is not, by exact key
REASONS = {
    "publicAPI": "every REST call but `/api/health` needs the keys",
    "CORS": "not applicable (a Python class)",
    "sandbox": "Bitmusa has no testnet; use the simulator (`bitmusa-plugin simulate`)",
    "spot": "this class is the futures account; spot is another API",
    "margin": "no spot margin in the futures API",
    "future": "Bitmusa futures are perpetual swaps (no expiry)",
    "option": "no options",
    "index": "no index markets",
    "editOrder": "no amend endpoint; ccxt's cancel-then-create is not atomic: do it yourself",
    "editOrders": "no amend endpoint",
    "createOrders": "no batch endpoint",
    "cancelOrders": "no batch endpoint (call `cancelOrder` per id)",
    "fetchOpenOrder": NO_HISTORY + "; `fetchOrder` covers open orders",
    "fetchClosedOrder": NO_HISTORY,
    "fetchClosedOrders": NO_HISTORY,
    "fetchCanceledOrders": NO_HISTORY,
    "fetchCanceledAndClosedOrders": NO_HISTORY,
    "fetchOrders": NO_HISTORY,
    "fetchOrdersByStatus": NO_HISTORY,
    "setMarginMode": "no account setting: the mode travels on each order (`params.marginMode`)",
    "fetchMarginMode": "not returned anywhere (it travels on each order)",
    "fetchMarginModes": "not returned anywhere (it travels on each order)",
    "addMargin": "no endpoint to move isolated margin",
    "reduceMargin": "no endpoint to move isolated margin",
    "setMargin": "no endpoint to move isolated margin",
    "fetchMarginAdjustmentHistory": "no endpoint to move isolated margin",
    "fetchPositionsForSymbol": "not implemented: `fetchPositions([symbol])` returns it",
    "fetchIsolatedPositions": "not implemented: `fetchPositions` returns them all",
    "fetchPositionHistory": NO_ENDPOINT + " (closed positions only on the stream)",
    "fetchPositionsHistory": NO_ENDPOINT + " (closed positions only on the stream)",
    "fetchPositionsRisk": NO_ENDPOINT,
    "fetchLeverages": "not implemented: one `fetchLeverage` per market",
    "fetchLeverageTiers": NO_ENDPOINT + " (no per-ticker maximum documented; 1-125)",
    "fetchMarketLeverageTiers": NO_ENDPOINT + " (no per-ticker maximum documented; 1-125)",
    "fetchFundingRateHistory": NO_ENDPOINT,
    "fetchFundingHistory": NO_ENDPOINT,
    "fetchFundingInterval": "the interval is not published (TRADING.md §5 OQ5)",
    "fetchFundingIntervals": "the interval is not published (TRADING.md §5 OQ5)",
    "fetchTradingLimits": "not implemented: each market carries `limits`",
    "fetchTime": NO_ENDPOINT,
    "fetchBidsAsks": "the ticker has no bid or ask; use `fetchOrderBook`",
    "fetchMarkPrices": "not implemented: `fetchTickers` has `markPrice`",
    "fetchOrderBooks": "not implemented: one `fetchOrderBook` per market",
    "fetchL3OrderBook": "the book is aggregated by price",
    "fetchIndexOHLCV": NO_ENDPOINT,
    "fetchMarkOHLCV": NO_ENDPOINT,
    "fetchPremiumIndexOHLCV": NO_ENDPOINT,
    "fetchCurrencies": NO_ENDPOINT,
    "fetchAccounts": NO_ENDPOINT + " (one account per key pair)",
    "fetchLedger": NO_ENDPOINT,
    "fetchLedgerEntry": NO_ENDPOINT,
    "signIn": "not needed: two static headers",
    "watchOrdersForSymbols": "not implemented: `watchOrders()` covers every symbol",
    "watchPosition": "not implemented: `watchPositions([symbol])`",
    "watchStatus": NO_ENDPOINT,
}
#: the rest, by pattern: (regular expression, reason), first match wins
PATTERNS = [
    (r"Ws$", "Bitmusa's websockets take no requests: use the REST method"),
    (r"^unWatch", "not implemented: `close()` ends every watch of the user stream"),
    (
        r"^watch(Ticker|Trades|BidsAsks|Liquidations|MyLiquidations)",
        "Bitmusa has no such stream",
    ),
    (r"ClientOrderId", "Bitmusa's order has no client order id"),
    (
        r"^create(Stop|TakeProfit|Trigger|Trailing)|WithCost$",
        "no standalone trigger, stop, trailing or cost-sized order: take-profit and "
        "stop-loss attach to an order (`params.takeProfit`, `params.stopLoss`)",
    ),
    (r"Borrow|borrow|repay|Repay", "no margin lending in the futures API"),
    (r"Deposit|deposit|Withdraw|withdraw|[tT]ransfer|Transaction", WALLET),
    (r"Convert", WALLET),
    (
        r"OpenInterest|LongShort|Liquidations|Settlement|Volatility|Greeks|Option|"
        r"Underlying|ADLRank",
        NO_ENDPOINT,
    ),
]


def reason(key: str) -> str:
    if key in REASONS:
        return REASONS[key]
    for pattern, text in PATTERNS:
        if re.search(pattern, key):
            return text
    raise KeyError(f"docs/gen_ccxt.py: no words for has[{key!r}]")


def table() -> str:
    from bitmusa_plugin._ccxt import bitmusa

    has = bitmusa().has
    rows = ["| method | supported | how, or why not |", "|---|---|---|"]
    for key in sorted(has, key=str.lower):
        if has[key] is True:
            rows.append(f"| `{key}` | yes | {SUPPORTED[key]} |")
        else:
            rows.append(f"| `{key}` | no | {reason(key)} |")
    return "\n".join(rows)


def render() -> str:
    text = PAGE.read_text()
    head, _, rest = text.partition(START)
    _, _, tail = rest.partition(END)
    return f"{head}{START}\n{table()}\n{END}{tail}"


if __name__ == "__main__":
    sys.path.insert(0, str(HERE.parent))  # this checkout's package, whatever is installed
    PAGE.write_text(render())
    sys.exit(0)
