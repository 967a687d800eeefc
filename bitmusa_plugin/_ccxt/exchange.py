"""``bitmusa``: the whole drop-in, a ``ccxt.async_support.Exchange`` with ccxt.pro's
``watch_*``. Its parts: :mod:`.markets` (market data), :mod:`.trading` (the account over
REST), :mod:`.streams` (the user stream), :mod:`.public` (the public market streams and
positions' mark price), :mod:`.base` (the engine and REST), :mod:`.emulated`
(``features``, balances, emulated methods) and :mod:`.errors` (Bitmusa's failures as
ccxt's classes). What it decides where the API is
unclear is docs/ccxt.md's "Decisions"; each decision is an option.
"""

from __future__ import annotations

from typing import Any

from ccxt.base.decimal_to_precision import TICK_SIZE
from ccxt.base.errors import NotSupported

from bitmusa_plugin._core import market as bm_market
from bitmusa_plugin._engine import rest as bm_rest
from bitmusa_plugin._engine.stream import DEFAULT_WS_URL

from .emulated import FEATURES, Emulated
from .errors import EXCEPTIONS
from .public import Public

#: ``has`` is True for exactly these; every other unified method is False.
SUPPORTED = frozenset(
    (
        "privateAPI",
        "swap",
        "ws",
        # markets and market data
        "fetchMarkets",
        "fetchTicker",
        "fetchTickers",
        "fetchOrderBook",
        "fetchL2OrderBook",
        "fetchTrades",
        "fetchOHLCV",
        "fetchFundingRate",
        "fetchStatus",
        # emulated from the endpoints above (_ccxt/emulated.py)
        "fetchFundingRates",
        "fetchLastPrices",
        "fetchTradingFee",
        "fetchTradingFees",
        # the account
        "fetchBalance",
        "fetchPositions",
        "fetchOpenOrders",
        "fetchOrder",
        "fetchMyTrades",
        # emulated from the endpoints above (_ccxt/emulated.py)
        "fetchPosition",
        "fetchOrderTrades",
        # trading (ccxt's create_*_order helpers all go through create_order)
        "createOrder",
        "createLimitOrder",
        "createMarketOrder",
        "createLimitBuyOrder",
        "createLimitSellOrder",
        "createMarketBuyOrder",
        "createMarketSellOrder",
        "createPostOnlyOrder",
        "createReduceOnlyOrder",
        "createOrderWithTakeProfitAndStopLoss",
        "cancelOrder",
        "cancelAllOrders",
        "closePosition",
        "closeAllPositions",
        "setLeverage",
        "fetchLeverage",
        "setPositionMode",
        "fetchPositionMode",
        # the user stream
        "watchBalance",
        "watchOrders",
        "watchPositions",
        "watchMyTrades",
        # the public market streams (ticker and trades polled: no stream has them)
        "watchTicker",
        "watchTickers",
        "watchOrderBook",
        "watchOrderBookForSymbols",
        "watchTrades",
        "watchTradesForSymbols",
        "watchOHLCV",
        "watchOHLCVForSymbols",
        "unWatchTicker",
        "unWatchTickers",
        "unWatchOrderBook",
        "unWatchOrderBookForSymbols",
        "unWatchTrades",
        "unWatchTradesForSymbols",
        "unWatchOHLCV",
        "unWatchOHLCVForSymbols",
    )
)


class bitmusa(Emulated, Public):  # ccxt names its classes by exchange id
    """Bitmusa futures for ccxt: ``bitmusa({'apiKey': <x-api-key>, 'secret': <auth key>})``."""

    def describe(self) -> dict[str, Any]:
        base = super().describe()
        has = dict.fromkeys(base["has"], False)
        has.update(dict.fromkeys(SUPPORTED, True))
        return self.deep_extend(  # type: ignore[no-any-return]
            base,
            {
                "id": "bitmusa",
                "name": "Bitmusa",
                "countries": ["KR"],
                "pro": True,
                "rateLimit": 125,  # 8 requests per second (the engine's limiter paces)
                "precisionMode": TICK_SIZE,
                "has": has,
                "timeframes": bm_market.timeframes("history"),
                "urls": {
                    "api": {"rest": bm_rest.DEFAULT_REST_URL, "ws": DEFAULT_WS_URL},
                    "www": "https://www.bitmusa.com",
                    "doc": ["https://github.com/bitmusa-docs/apidocs"],
                },
                "requiredCredentials": {"apiKey": True, "secret": True},
                "fees": {
                    # the exchange-info sample's rates (percent there); markets carry theirs
                    "trading": {
                        "tierBased": False,
                        "percentage": True,
                        "maker": self.parse_number("0.0002"),
                        "taker": self.parse_number("0.0003"),
                    },
                },
                "features": FEATURES,
                "exceptions": EXCEPTIONS,
                "options": {
                    # the account and its stream
                    "account": "bitmusa",
                    "ordersLimit": 1000,  # ccxt's default cache sizes
                    "tradesLimit": 1000,
                    "keepaliveInterval": 30 * 60.0,
                    "rotateAfter": 23 * 3600 + 50 * 60.0,
                    "startupWindow": 30.0,
                    "keepListenKey": False,
                    "resync": True,
                    "insecure": False,
                    "restRate": None,  # None: the process's shared 8/s, 200/min
                    # the API's open readings (docs/ccxt.md, "Decisions")
                    "wsPath": "documented",
                    "keepalivePrefix": "v2",
                    "apiFallback": True,
                    "closeSide": "trade",
                    "reduceOnly": "close+flag",
                    "marketOrderPrice": "zero",
                    "triggerPriceType": "last",
                    "defaultMarginMode": "isolated",
                    "marketsSource": "exchange-info",
                    "fallbackMarkets": [dict(m) for m in bm_market.FALLBACK_MARKETS],
                    "exchangeInfoQuantities": "swapped",
                    "tickerParam": "both",
                    "ohlcvPath": "history",
                    "fundingRateUnit": "percent",
                    "markets": {},  # ticker -> unified symbol, for tickers beyond the rule
                    "balanceCurrencies": "markets",  # or "wallet" (docs/mapping.md)
                    "sideWait": 0.25,  # another client's order waits this long for its side
                    # the public market streams (docs/ccxt.md, "Public market streams")
                    "publicWsPath": "stream",  # or "public"; apiFallback tries the other
                    "publicDepthSpeed": "100ms",  # or "1s" (the draft's default)
                    "publicWindow": 10.0,  # no stream this long: poll REST
                    "publicSilence": 10.0,  # a connection silent this long is reopened
                    "publicPollInterval": 2.0,  # seconds between polls of one subscription
                    "publicFeed": None,  # "stream" or "polling", once a public watch ran
                    "OHLCVLimit": 1000,
                },
            },
        )

    def set_sandbox_mode(self, enabled: bool) -> None:
        """Bitmusa has no testnet. ccxt's own version would clone a missing URL
        (``TypeError``); a bot that asks for a sandbox gets a reason and a way instead."""
        if enabled:
            raise NotSupported(
                "bitmusa has no sandbox: run `bitmusa-plugin simulate` and point "
                "urls['api'] at the simulator it prints (docs/ccxt.md)"
            )
        self.isSandboxModeEnabled = False

    def __init__(self, config: dict[str, Any] | None = None) -> None:
        super().__init__(config)
        path = self.options.get("ohlcvPath")
        if path in bm_market.KLINE_PATHS:
            self.timeframes = bm_market.timeframes(path)
