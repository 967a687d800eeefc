"""Markets and market data over REST: ``fetch_markets``, ``fetch_ticker(s)``,
``fetch_order_book``, ``fetch_trades``, ``fetch_ohlcv``, ``fetch_funding_rate``,
``fetch_status``. Each record is parsed the way a ccxt exchange's ``parse_*`` is written,
into ccxt's ``safe_*`` structures; the readings taken are ``_core/market.py``'s.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from ccxt.base.errors import BadRequest, NotSupported
from ccxt.base.precise import Precise

from bitmusa_plugin._core import market as bm_market
from bitmusa_plugin._core.errors import BitmusaError, MisconfiguredError
from bitmusa_plugin._engine import rest as bm_rest

from .base import Base
from .errors import raise_for

log = logging.getLogger(__name__)


class Markets(Base):
    """The market-data half of :class:`bitmusa`."""

    # -- markets -----------------------------------------------------------------------------

    async def fetch_markets(self, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """GET /future/market/exchange-info (undocumented: ninjaxt's); when the server does
        not have it (HTTP 404/405/410, or not Bitmusa's envelope), the shipped table
        (``options['fallbackMarkets']``) and the tickers of ``options['markets']``,
        once a documented route (the first market's ticker) shows that the REST base is
        right: a wrong base raises ``BadRequest`` naming the URL, as any other call would.
        ``options['marketsSource'] = 'table'`` never asks."""
        source = self._choice("marketsSource", ("exchange-info", "table"))
        table = self.options.get("fallbackMarkets", bm_market.FALLBACK_MARKETS)
        records: list[dict[str, Any]] | None = None
        if source == "exchange-info":
            try:
                records = await self._client().exchange_info()
            except MisconfiguredError as exc:
                await self._base_answers(table)
                log.warning(
                    "bitmusa: no market list at GET %s (%s): using the shipped table; "
                    "set options['marketsSource'] = 'table' to stop asking",
                    bm_rest.EXCHANGE_INFO_PATH,
                    exc.message,
                )
            except BitmusaError as exc:
                raise_for(self, exc)
        markets = []
        #: where the markets came from: a fee rate is the server's only from exchange-info
        self._markets_source = "table" if records is None else "exchange-info"
        if records is None:
            markets = [self.parse_market(record) for record in table]
            listed = {m["id"] for m in markets}
            for ticker, symbol in self.safe_dict(self.options, "markets", {}).items():
                if ticker not in listed:  # named by the user: no precision or limits known
                    markets.append(self._bare_market(ticker, symbol))
        else:
            markets = [self.parse_market(record) for record in records]
        for market in markets:  # the stream names tickers as the markets do
            self._symbols.known.setdefault(market["id"], market["symbol"])
        return markets

    async def _base_answers(self, table: list[dict[str, Any]]) -> None:
        """Return when a documented route answers in Bitmusa's envelope (data, or a refusal
        with its code): the base is right and only exchange-info is missing. Otherwise raise
        what that call raises: ``BadRequest`` naming the URL for a wrong base; a network
        error, a timeout or a bare HTTP error as any call would (not a proof either way)."""
        ticker = next((r.get("ticker") for r in table if r.get("ticker")), "BTCUSDT")
        name = self._choice("tickerParam", bm_market.TICKER_PARAMS)
        try:
            await self._client().ticker(bm_market.market_params(str(ticker), name))
        except MisconfiguredError as exc:
            raise_for(self, exc)
        except BitmusaError as exc:
            if exc.code is None or exc.code == exc.status:  # no envelope: a bare HTTP error
                raise_for(self, exc)
            # a refusal in the envelope (an unknown ticker, a key's trouble): it answered

    def parse_market(self, market: dict[str, Any]) -> dict[str, Any]:
        """One exchange-info record: a linear perpetual settled in its quote, contract size
        1 (quantities are base units; no source has a multiplier). Precision is TICK_SIZE:
        ``10^-baseCoinPrecision`` for the price, ``10^-quoteCoinPrecision`` for the amount
        (as ninjaxt reads them); the quantity limits as ``options['exchangeInfoQuantities']``
        reads them; fees in percent, divided by 100."""
        market_id = self.safe_string(market, "ticker")
        base_id = self.safe_string(market, "baseCoin")
        quote_id = self.safe_string(market, "quoteCoin")
        base = self.safe_currency_code(base_id)
        quote = self.safe_currency_code(quote_id)
        named = self.safe_dict(self.options, "markets", {})
        symbol = named.get(market_id) or f"{base}/{quote}:{quote}"
        fields = bm_market.quantity_fields(
            self._choice("exchangeInfoQuantities", bm_market.QUANTITY_READINGS)
        )
        price_decimals = self.safe_string(market, "baseCoinPrecision")
        amount_decimals = self.safe_string(market, "quoteCoinPrecision")
        low, high = bm_market.LEVERAGE_RANGE
        return self.safe_market_structure(  # type: ignore[no-any-return]
            {
                "id": market_id,
                "symbol": symbol,
                "base": base,
                "quote": quote,
                "settle": quote,
                "baseId": base_id,
                "quoteId": quote_id,
                "settleId": quote_id,
                "type": "swap",
                "spot": False,
                "margin": False,
                "swap": True,
                "future": False,
                "option": False,
                "active": self.safe_bool(market, "enable"),
                "contract": True,
                "linear": True,
                "inverse": False,
                "subType": "linear",
                "taker": self._percent(self.safe_string(market, "takerFee")),
                "maker": self._percent(self.safe_string(market, "makerFee")),
                "contractSize": self.parse_number("1"),
                "expiry": None,
                "expiryDatetime": None,
                "strike": None,
                "optionType": None,
                "precision": {
                    "amount": self._decimals(amount_decimals),
                    "price": self._decimals(price_decimals),
                },
                "limits": {
                    "leverage": {"min": low, "max": high},
                    "amount": {
                        "min": self.safe_number(market, fields["amount"][0]),
                        "max": self.safe_number(market, fields["amount"][1]),
                    },
                    "price": {
                        "min": self.safe_number(market, "minOrderPrice"),
                        "max": self.safe_number(market, "maxOrderPrice"),
                    },
                    "cost": {
                        "min": self.safe_number(market, fields["cost"][0]),
                        "max": self.safe_number(market, fields["cost"][1]),
                    },
                },
                # DF lists isolated (0) only; node-bitmusa-api sends cross as 1, unconfirmed
                "marginModes": {"isolated": True, "cross": None},
                "created": None,
                "info": market,
            }
        )

    def _bare_market(self, ticker: str, symbol: str) -> dict[str, Any]:
        """A market the user named in ``options['markets']`` that no list describes."""
        base, _, rest = symbol.partition("/")
        quote, _, settle = rest.partition(":")
        record = {"ticker": ticker, "baseCoin": base, "quoteCoin": settle or quote}
        market = self.parse_market(record)
        market["active"] = None
        return market

    def _percent(self, value: str | None) -> Any:
        return None if value is None else self.parse_number(Precise.string_div(value, "100"))

    def _decimals(self, value: str | None) -> Any:
        return None if value is None else self.parse_number(self.parse_precision(value))

    # -- tickers and funding -----------------------------------------------------------------

    async def _ticker_record(self, market: dict[str, Any]) -> dict[str, Any]:
        name = self._choice("tickerParam", bm_market.TICKER_PARAMS)
        params = bm_market.market_params(market["id"], name)
        return await self._rest(self._client().ticker(params))

    async def fetch_ticker(self, symbol: str, params: dict[str, Any] | None = None) -> Any:
        """GET /future/market: the 24 h ticker. No bid, ask or vwap exists."""
        await self.load_markets()
        market = self.market(symbol)
        return self.parse_ticker(await self._ticker_record(market), market)

    async def fetch_tickers(
        self, symbols: list[str] | None = None, params: dict[str, Any] | None = None
    ) -> Any:
        """One GET /future/market per market (there is no all-markets form; DM's draft
        ``/future/price`` is unpublished), concurrently, paced by the shared limiter."""
        await self.load_markets()
        chosen = self.market_symbols(symbols) if symbols else list(self.symbols)
        markets = [self.market(symbol) for symbol in chosen]
        records = await asyncio.gather(*(self._ticker_record(m) for m in markets))
        tickers = [self.parse_ticker(r, m) for r, m in zip(records, markets, strict=True)]
        return self.filter_by_array_tickers(tickers, "symbol", symbols)

    def parse_ticker(self, ticker: dict[str, Any], market: Any = None) -> Any:
        market = self.safe_market(self.safe_string(ticker, "ticker"), market)
        timestamp = self.safe_integer(ticker, "last_updated_time")
        last = self.safe_string(ticker, "last_price")
        return self.safe_ticker(
            {
                "symbol": market["symbol"],
                "timestamp": timestamp,
                "datetime": self.iso8601(timestamp),
                "high": self.safe_string(ticker, "high_price"),
                "low": self.safe_string(ticker, "low_price"),
                "bid": None,
                "bidVolume": None,
                "ask": None,
                "askVolume": None,
                "vwap": None,
                "open": self.safe_string(ticker, "base_price"),
                "close": last,
                "last": last,
                "previousClose": None,
                "change": self.safe_string(ticker, "change_price"),
                "percentage": self.safe_string(ticker, "change_rate"),  # in percent, as ccxt
                "average": None,
                "baseVolume": self.safe_string(ticker, "total_qty"),
                "quoteVolume": self.safe_string(ticker, "total_value"),
                "markPrice": self.safe_string(ticker, "mark_price"),
                "indexPrice": self.safe_string(ticker, "index_price"),
                "info": ticker,
            },
            market,
        )

    async def fetch_funding_rate(self, symbol: str, params: dict[str, Any] | None = None) -> Any:
        """The funding fields of GET /future/market."""
        await self.load_markets()
        market = self.market(symbol)
        return self.parse_funding_rate(await self._ticker_record(market), market)

    def parse_funding_rate(self, contract: dict[str, Any], market: Any = None) -> Any:
        """``funding_fee_rate`` in ``options['fundingRateUnit']`` (percent by default);
        the next funding at ``last_updated_time + remaining_funding_time`` (inferred);
        ``funding_time``'s meaning is unknown: it stays in ``info``."""
        market = self.safe_market(self.safe_string(contract, "ticker"), market)
        rate = self.safe_string(contract, "funding_fee_rate")
        if rate is not None and self._choice("fundingRateUnit", bm_market.FUNDING_UNITS) == (
            "percent"
        ):
            rate = Precise.string_div(rate, "100")
        timestamp = self.safe_integer(contract, "last_updated_time")
        funding = bm_market.next_funding_ms(contract)
        return {
            "info": contract,
            "symbol": market["symbol"],
            "markPrice": self.safe_number(contract, "mark_price"),
            "indexPrice": self.safe_number(contract, "index_price"),
            "interestRate": None,
            "estimatedSettlePrice": None,
            "timestamp": timestamp,
            "datetime": self.iso8601(timestamp),
            "fundingRate": self.parse_number(rate),
            "fundingTimestamp": funding,
            "fundingDatetime": self.iso8601(funding),
            "nextFundingRate": None,
            "nextFundingTimestamp": None,
            "nextFundingDatetime": None,
            "previousFundingRate": None,
            "previousFundingTimestamp": None,
            "previousFundingDatetime": None,
            "interval": None,
        }

    # -- book, trades, candles ---------------------------------------------------------------

    async def fetch_order_book(
        self, symbol: str, limit: int | None = None, params: dict[str, Any] | None = None
    ) -> Any:
        """GET /future/market/orderbook: at most 21 levels a side (a larger ``limit`` asks
        for 21). Both sides best first (the asks come descending, best last: re-sorted);
        the time is the levels' latest ``updated_time`` (the book has none of its own)."""
        await self.load_markets()
        market = self.market(symbol)
        size = bm_market.ORDER_BOOK_MAX if limit is None else min(limit, bm_market.ORDER_BOOK_MAX)
        if size < 1:
            raise BadRequest(f"bitmusa fetch_order_book limit {limit}: at least 1")
        data = await self._rest(self._client().order_book(market["id"], size))
        buys, sells = self.safe_list(data, "buy", []), self.safe_list(data, "sell", [])
        timestamp = bm_market.book_timestamp(buys + sells)
        book = self.parse_order_book(
            data, market["symbol"], timestamp, "buy", "sell", "price", "qty"
        )
        book["bids"], book["asks"] = book["bids"][:size], book["asks"][:size]
        return book

    async def fetch_trades(
        self,
        symbol: str,
        since: int | None = None,
        limit: int | None = None,
        params: dict[str, Any] | None = None,
    ) -> Any:
        """GET /future/market/trade: the latest trades (at most 1,000 asked for), oldest
        first; no trade ids exist; ``since`` filters what came back."""
        await self.load_markets()
        market = self.market(symbol)
        name = self._choice("tickerParam", bm_market.TICKER_PARAMS)
        query: dict[str, Any] = dict(bm_market.market_params(market["id"], name))
        if limit is not None:
            query["size"] = max(1, min(limit, bm_market.PUBLIC_TRADES_MAX))
        records = await self._rest(self._client().public_trades(query))
        records.reverse()  # newest first -> oldest first (the sort keeps ties in order)
        return self.parse_trades(records, market, since, limit)

    def parse_trade(self, trade: dict[str, Any], market: Any = None) -> Any:
        """A public trade: ``position`` 0 buy, 1 sell (ninjaxt; the taker's side, as far as
        anyone can tell); no id, no order, no maker/taker flag."""
        market = self.safe_market(self.safe_string(trade, "ticker"), market)
        timestamp = self.safe_integer(trade, "traded_time")
        position = self.safe_string(trade, "position")
        side = {"0": "buy", "1": "sell"}.get(position or "")
        return self.safe_trade(
            {
                "info": trade,
                "id": None,
                "order": None,
                "timestamp": timestamp,
                "datetime": self.iso8601(timestamp),
                "symbol": market["symbol"],
                "type": None,
                "side": side,
                "takerOrMaker": None,
                "price": self.safe_string(trade, "price"),
                "amount": self.safe_string(trade, "qty"),
                "cost": self.safe_string(trade, "value"),
                "fee": None,
            },
            market,
        )

    async def fetch_ohlcv(
        self,
        symbol: str,
        timeframe: str = "1m",
        since: int | None = None,
        limit: int | None = None,
        params: dict[str, Any] | None = None,
    ) -> list[list[Any]]:
        """``/kline/history`` with DF's ``period`` codes (1m, 30m, 1h, 1d, 1w, 1M), or with
        ``options['ohlcvPath'] = 'sdk'`` the SDKs' ``/kline`` with ``interval`` (1m ... 1M).
        Both times are sent: ``[since, since + limit candles]``, or the last ``limit``
        candles up to now (100 without ``limit``)."""
        await self.load_markets()
        market = self.market(symbol)
        path = self._choice("ohlcvPath", bm_market.KLINE_PATHS)
        served = bm_market.timeframes(path)
        if timeframe not in served:
            raise NotSupported(
                f"bitmusa fetch_ohlcv timeframe {timeframe!r}: {', '.join(served)} "
                f"(options['ohlcvPath'] is {path!r})"
            )
        count = bm_market.OHLCV_DEFAULT if limit is None else max(1, limit)
        duration = self.parse_timeframe(timeframe) * 1000
        if since is None:
            # the last ``count`` buckets, the forming one included: a start ``count``
            # durations ago would miss the oldest bucket's open, and cut the answer short
            end = self.milliseconds()
            start = (end // duration - count + 1) * duration
        else:
            start, end = since, since + count * duration
        query = bm_market.kline_request(
            path, market["id"], timeframe, start_ms=start, end_ms=end, limit=count
        )
        endpoint = bm_rest.KLINE_HISTORY_PATH if path == "history" else bm_rest.KLINE_SDK_PATH
        rows = await self._rest(self._client().klines(endpoint, query))
        return self.parse_ohlcvs(rows, market, timeframe, since, count, since is None)  # type: ignore[no-any-return]

    # -- status ------------------------------------------------------------------------------

    async def fetch_status(self, params: dict[str, Any] | None = None) -> dict[str, Any]:
        """GET /api/health (public: no keys needed): ``ok`` when it says ``OK``."""
        data = await self._rest(self._public_client().health())
        return {
            "status": "ok" if data == "OK" else "maintenance",
            "updated": None,
            "eta": None,
            "url": None,
            "info": data,
        }
