"""What ccxt's structures and tests expect beyond the endpoints: ``features`` (what
``create_order`` and the fetches accept), a swap account's balance with an entry for each
currency of the markets, and the methods emulated truthfully from the endpoints that exist
(``fetch_position``, ``fetch_order_trades``, ``fetch_funding_rates``,
``fetch_trading_fee(s)``, ``fetch_last_prices``). docs/ccxt.md says what each is made of.
"""

from __future__ import annotations

import asyncio
from typing import Any

from ccxt.base.errors import ArgumentsRequired, BadRequest, NotSupported

from bitmusa_plugin._engine.rest import HISTORY_PAGE, HISTORY_PAGES

from .markets import Markets
from .trading import Trading

#: what ``create_order`` accepts: attached take-profit / stop-loss (``params['takeProfit']``
#: / ``['stopLoss']``, with a limit price and a mark or last trigger), post-only, reduce-only,
#: and hedge-mode symbols (a buy opens long, a sell short; a
#: reduce-only order closes). Refused with ``NotSupported``: stand-alone trigger, stop-loss
#: and take-profit orders, trailing, IOC / FOK / GTD, a client order id, a cost, a leverage.
_CREATE_ORDER: dict[str, Any] = {
    # isolated only: DF lists isolated (0) alone; cross (1, node-bitmusa-api's) is
    # unconfirmed and the simulator refuses it, as DF reads (3002)
    "marginMode": False,
    "triggerPrice": False,
    "triggerPriceType": None,
    "triggerDirection": False,
    "stopLossPrice": False,
    "takeProfitPrice": False,
    "attachedStopLossTakeProfit": {
        "triggerPriceType": {"last": True, "mark": True, "index": False},
        "price": True,
    },
    "timeInForce": {"GTC": True, "IOC": False, "FOK": False, "PO": True, "GTD": False},
    "hedged": True,
    "trailing": False,
    "leverage": False,  # per symbol (set_leverage): params['leverage'] is refused
    "marketBuyByCost": False,  # params['cost'] is refused
    "marketBuyRequiresPrice": False,
}

#: ccxt's ``features`` (read by ``features_generator`` at construction): linear perpetual
#: swaps only. Limits are the drop-in's: open orders ask for 500 at most, the trade
#: history reads ``HISTORY_PAGE * HISTORY_PAGES`` records a call, candles 100 by default
#: (no maximum is documented: None); no source says how far back the history goes.
FEATURES: dict[str, Any] = {
    "spot": None,
    "swap": {
        "linear": {
            "sandbox": False,  # no testnet: the simulator stands in (docs/ccxt.md)
            "createOrder": _CREATE_ORDER,
            "createOrders": None,
            "fetchMyTrades": {
                "marginMode": False,
                "limit": HISTORY_PAGE * HISTORY_PAGES,
                "daysBack": None,
                "untilDays": None,
                "symbolRequired": False,
            },
            "fetchOrder": {
                "marginMode": False,
                "trigger": False,
                "trailing": False,
                "symbolRequired": False,
            },
            "fetchOpenOrders": {
                "marginMode": False,
                "limit": 500,
                "trigger": False,
                "trailing": False,
                "symbolRequired": False,
            },
            "fetchOrders": None,
            "fetchClosedOrders": None,
            "fetchOHLCV": {"limit": None},
        },
        "inverse": None,
    },
    "future": {"linear": None, "inverse": None},
}

#: ``options['balanceCurrencies']``: ``markets`` (an entry, zero when not held, for every
#: currency of the loaded markets) or ``wallet`` (only what the wallet lists)
BALANCE_CURRENCIES = ("markets", "wallet")


class Emulated(Trading, Markets):
    """The structures' completions and the emulated methods of :class:`bitmusa`."""

    # -- balances ----------------------------------------------------------------------------

    def _complete_balance(self, balance: dict[str, Any]) -> dict[str, Any]:
        """``balance`` with a zero entry for each currency of the markets it lacks: a
        USDT-margined futures account holds only its margin asset, so it truly holds no
        BTC; ccxt's code (and its tests) read ``balance[market['base']]``."""
        if self._choice("balanceCurrencies", BALANCE_CURRENCIES) != "markets":
            return balance
        for code in sorted(self.currencies or {}):
            if code not in balance:
                balance[code] = {"free": 0.0, "used": 0.0, "total": 0.0}
                for kind in ("free", "used", "total"):
                    balance.setdefault(kind, {})[code] = 0.0
        return balance

    async def fetch_balance(self, params: dict[str, Any] | None = None) -> dict[str, Any]:
        if self._choice("balanceCurrencies", BALANCE_CURRENCIES) == "markets":
            await self.load_markets()
        return self._complete_balance(await super().fetch_balance(params))

    def _on_balance(self, balance: dict[str, Any]) -> None:
        # watch_balance returns what the feed stored: completed the same way
        super()._on_balance(self._complete_balance(balance))

    # -- positions and fills -----------------------------------------------------------------

    async def fetch_position(self, symbol: str, params: dict[str, Any] | None = None) -> Any:
        """The symbol's position, from GET /future/position. A hedge-mode symbol with both
        sides open needs ``params['side']`` (``long`` / ``short``); a symbol with no
        position gives a flat one (contracts 0), as ccxt exchanges do."""
        await self.load_markets()
        market = self.market(symbol)
        side = self.safe_string_lower(params or {}, "side")
        if side not in (None, "long", "short"):
            raise BadRequest(f"bitmusa fetch_position side {side!r}: 'long' or 'short'")
        positions = [
            p
            for p in await self.fetch_positions([market["symbol"]])
            if side is None or p["side"] == side
        ]
        if len(positions) > 1:
            raise ArgumentsRequired(
                f"bitmusa fetch_position: {market['symbol']} has a long and a short position "
                "(hedge mode): pass params={'side': 'long'} or {'side': 'short'}"
            )
        if positions:
            return positions[0]
        return self.safe_position(
            {
                "info": {},
                "symbol": market["symbol"],
                "contracts": 0.0,
                "contractSize": market["contractSize"],
                "notional": 0.0,
                "side": side,
                "timestamp": None,
                "datetime": None,
            }
        )

    async def fetch_order_trades(
        self,
        id: str,
        symbol: str | None = None,
        since: int | None = None,
        limit: int | None = None,
        params: dict[str, Any] | None = None,
    ) -> list[dict[str, Any]]:
        """The order's fills from GET /future/trade/history (its records name their order),
        read from the order's creation time (its id embeds it) unless ``since`` says
        otherwise; oldest first."""
        if since is None:
            created = self._id_time(str(id))
            # the history's times are whole seconds: a fill in the order's own second
            # reads as that second's start
            since = None if created is None else created - created % 1000
        trades = await self.fetch_my_trades(symbol, since, None, params)
        mine = [t for t in trades if t["order"] == str(id)]
        return mine if limit is None else mine[:limit]

    # -- market data -------------------------------------------------------------------------

    async def fetch_funding_rates(
        self, symbols: list[str] | None = None, params: dict[str, Any] | None = None
    ) -> Any:
        """One GET /future/market per market (as ``fetch_tickers``), keyed by symbol."""
        await self.load_markets()
        chosen = self.market_symbols(symbols) if symbols else list(self.symbols)
        markets = [self.market(symbol) for symbol in chosen]
        records = await asyncio.gather(*(self._ticker_record(m) for m in markets))
        rates = [self.parse_funding_rate(r, m) for r, m in zip(records, markets, strict=True)]
        return self.index_by(rates, "symbol")

    async def fetch_last_prices(
        self, symbols: list[str] | None = None, params: dict[str, Any] | None = None
    ) -> Any:
        """The tickers' ``last_price`` (one GET /future/market per market), keyed by
        symbol; the side of the last trade is not in the ticker (None)."""
        await self.load_markets()
        chosen = self.market_symbols(symbols) if symbols else list(self.symbols)
        markets = [self.market(symbol) for symbol in chosen]
        records = await asyncio.gather(*(self._ticker_record(m) for m in markets))
        prices = [self.parse_last_price(r, m) for r, m in zip(records, markets, strict=True)]
        return self.index_by(prices, "symbol")

    def parse_last_price(self, entry: dict[str, Any], market: Any = None) -> Any:
        market = self.safe_market(self.safe_string(entry, "ticker"), market)
        timestamp = self.safe_integer(entry, "last_updated_time")
        return {
            "symbol": market["symbol"],
            "timestamp": timestamp,
            "datetime": self.iso8601(timestamp),
            "price": self.safe_number(entry, "last_price"),
            "side": None,
            "info": entry,
        }

    async def fetch_trading_fee(self, symbol: str, params: dict[str, Any] | None = None) -> Any:
        """The rates GET /future/market/exchange-info publishes for the market (the only
        source of a rate: Bitmusa has no per-account fee endpoint, so a discount an
        account has shows only in its fills' fees). ``NotSupported`` when the markets came
        from the shipped table: its rates are a sample's, not the server's."""
        await self.load_markets()
        return self._trading_fee(self.market(symbol))

    async def fetch_trading_fees(self, params: dict[str, Any] | None = None) -> Any:
        """:meth:`fetch_trading_fee` for every market, keyed by symbol."""
        await self.load_markets()
        return {symbol: self._trading_fee(self.market(symbol)) for symbol in self.symbols}

    def _trading_fee(self, market: dict[str, Any]) -> dict[str, Any]:
        if getattr(self, "_markets_source", None) != "exchange-info":
            raise NotSupported(
                "bitmusa fetch_trading_fee: the server does not serve exchange-info, the only "
                "source of Bitmusa's rates; the fee each fill paid is in fetch_my_trades()"
            )
        if market["maker"] is None or market["taker"] is None:
            raise NotSupported(f"bitmusa fetch_trading_fee: exchange-info lists no rate for "
                               f"{market['symbol']}")  # fmt: skip
        return {
            "info": market["info"],
            "symbol": market["symbol"],
            "maker": market["maker"],
            "taker": market["taker"],
            "percentage": True,
            "tierBased": False,
        }
