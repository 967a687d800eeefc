"""The drop-in's public market streams: ``watch_ticker(s)``, ``watch_order_book(_for_symbols)``,
``watch_trades(_for_symbols)``, ``watch_ohlcv(_for_symbols)`` and their ``un_watch_*``, with
ccxt.pro's semantics (a call returns at the next update) and ccxt's own caches
(``OrderBook``, ``ArrayCache``, ``ArrayCacheByTimestamp``); and the mark price of the
account's positions.

Where each comes from (docs/ccxt.md, "Public market streams"):

* order books and candles: the public stream (``_engine/public.py``: one connection per
  process and server, shared by every instance and subscription), whose path reading is
  ``options['publicWsPath']`` with one fallback; while no stream is open for
  ``options['publicWindow']`` seconds, REST polling, said once in the log and in
  ``options['publicFeed']``;
* tickers and public trades: REST polling always: no source has a ticker or a trade stream;
* positions' ``markPrice``: the 1-minute candle's close (the last price) from the stream,
  or the REST ticker's ``mark_price`` while polling, re-derived by ccxt's own
  ``safe_position`` as the price moves.

Polls go through the shared limiter at routine priority (orders go first), one call per
subscription every ``options['publicPollInterval']`` seconds.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from ccxt.async_support.base.ws.cache import ArrayCache, ArrayCacheByTimestamp
from ccxt.base.errors import BadRequest, ExchangeClosedByUser, NotSupported, UnsubscribeError

from bitmusa_plugin._core import market as bm_market
from bitmusa_plugin._core import public as pub
from bitmusa_plugin._core import urls
from bitmusa_plugin._core.numbers import Reject
from bitmusa_plugin._engine.public import PublicConfig, PublicHub
from bitmusa_plugin._engine.secrets import InsecureURLError, require_secure
from bitmusa_plugin._engine.stream import DEFAULT_WS_URL

from .markets import Markets
from .streams import Streams

log = logging.getLogger(__name__)

#: a subscription: (kind, symbol) or ("ohlcv", symbol, timeframe)
Key = tuple[str, ...]
#: the candle whose close is a position's mark price on the stream
MARK_INTERVAL = "1min"
#: what ``options['publicFeed']`` says
STREAM, POLLING = "stream", "polling"


class _PublicFeed:
    """The drop-in as the hub's subscriber (kept off the exchange's own namespace)."""

    def __init__(self, exchange: Public) -> None:
        self.exchange = exchange

    def public_frame(self, item: pub.Depth | pub.Kline) -> None:
        self.exchange._on_public(item)

    def public_polling(self, polling: bool, reason: str) -> None:
        self.exchange._on_public_polling(polling, reason)

    def public_rejected(self, reject: Reject) -> None:
        self.exchange._public_rejected += 1


class Public(Streams, Markets):
    """The public ``watch_*`` of :class:`bitmusa`, and positions' mark price."""

    def __init__(self, config: dict[str, Any] | None = None) -> None:
        super().__init__(config)
        self._hub: PublicHub | None = None
        self._public_feed = _PublicFeed(self)
        #: what is watched: key -> its stream name (None: REST only)
        self._watched: dict[Key, str | None] = {}
        #: the depth stream each book's symbol uses (its level)
        self._levels: dict[str, int] = {}
        self._waiters: dict[Key, list[asyncio.Future[Key]]] = {}
        self._pollers: dict[Key, asyncio.Task[None]] = {}
        self._polling = False
        self._public_rejected = 0
        #: symbol -> (price, which price): the positions' mark
        self._marks: dict[str, tuple[float, str]] = {}
        #: symbol -> when (loop time) its mark came
        self._mark_at: dict[str, float] = {}
        #: symbol -> (price, which price, when it came): the mark of a subscription a
        #: closed position let go, which prices at once a position that reopens soon after
        #: (a one-way flip: the close, then the other side's open)
        self._let_go: dict[str, tuple[float, str, float]] = {}
        #: symbol -> the latest position of an open mark-less symbol, until its price comes
        #: open positions waiting for their market's first price, by (symbol, side): a
        #: hedged account's long and short wait side by side
        self._unpriced: dict[tuple[str, str | None], dict[str, Any]] = {}
        #: trades seen by the poller: symbol -> (newest timestamp, the keys at it)
        self._trade_marks: dict[str, tuple[int, list[tuple[Any, ...]]]] = {}
        self.orderbooks: dict[str, Any] = {}
        self.trades: dict[str, Any] = {}
        self.ohlcvs: dict[str, dict[str, Any]] = {}
        self.tickers: dict[str, Any] = {}

    # -- the calls ---------------------------------------------------------------------------

    async def watch_ticker(self, symbol: str, params: dict[str, Any] | None = None) -> Any:
        """The 24 h ticker, polled from GET /future/market (no ticker stream exists)."""
        market = await self._market_of(symbol)
        await self._watch([("ticker", market["symbol"])])
        return self.tickers[market["symbol"]]

    async def watch_tickers(
        self, symbols: list[str] | None = None, params: dict[str, Any] | None = None
    ) -> Any:
        """Every market's ticker (or ``symbols``'), polled; returns the ones that updated
        (all of them with ``newUpdates`` off)."""
        await self.load_markets()
        chosen = self.market_symbols(symbols) if symbols else list(self.symbols)
        done = await self._watch([("ticker", s) for s in chosen])
        shown = [k[1] for k in done] if self.newUpdates else chosen
        return self.filter_by_array(
            [self.tickers[s] for s in shown if s in self.tickers], "symbol", None, True
        )

    async def watch_order_book(
        self, symbol: str, limit: int | None = None, params: dict[str, Any] | None = None
    ) -> Any:
        """The book's top levels: each depth message is a whole snapshot (no sequence
        numbers exist), so each update replaces the book; ``nonce`` is None. ``limit``
        picks the smallest depth stream that holds it (5, 10 or 20 levels; 20 at most)."""
        return (await self.watch_order_book_for_symbols([symbol], limit, params)).limit()

    async def watch_order_book_for_symbols(
        self, symbols: list[str], limit: int | None = None, params: dict[str, Any] | None = None
    ) -> Any:
        """The book of whichever of ``symbols`` updates next."""
        if limit is not None and limit < 1:
            raise BadRequest(f"bitmusa watch_order_book limit {limit}: at least 1")
        markets = [await self._market_of(s) for s in symbols]
        keys: list[Key] = []
        for market in markets:
            symbol = market["symbol"]
            level = max(pub.depth_level(limit), self._levels.get(symbol, 0))
            self._levels[symbol] = level
            book = self.orderbooks.get(symbol)
            if book is None or (limit is not None and book["bids"]._depth != limit):
                # the cache's depth is the latest limit asked for (ccxt's rule)
                fresh = self.order_book({}, limit)
                if book is not None:
                    fresh.reset(book)
                self.orderbooks[symbol] = fresh
            keys.append(("orderbook", symbol))
        done = await self._watch(keys)
        book = self.orderbooks[done[0][1]]
        return book.limit()

    async def watch_trades(
        self,
        symbol: str,
        since: int | None = None,
        limit: int | None = None,
        params: dict[str, Any] | None = None,
    ) -> Any:
        """Public trades, polled from GET /future/market/trade (no trade stream exists):
        the new ones since the previous poll. They have no ids."""
        return await self.watch_trades_for_symbols([symbol], since, limit, params)

    async def watch_trades_for_symbols(
        self,
        symbols: list[str],
        since: int | None = None,
        limit: int | None = None,
        params: dict[str, Any] | None = None,
    ) -> Any:
        markets = [await self._market_of(s) for s in symbols]
        done = await self._watch([("trades", m["symbol"]) for m in markets])
        trades = self.trades[done[0][1]]
        if self.newUpdates:
            limit = trades.getLimit(done[0][1], limit)
        return self.filter_by_since_limit(trades, since, limit, "timestamp", True)

    async def watch_ohlcv(
        self,
        symbol: str,
        timeframe: str = "1m",
        since: int | None = None,
        limit: int | None = None,
        params: dict[str, Any] | None = None,
    ) -> Any:
        """Candles from the kline stream (the forming one, every 250 ms), over what the
        cache has gathered since the first call."""
        result = await self.watch_ohlcv_for_symbols([[symbol, timeframe]], since, limit, params)
        return next(iter(next(iter(result.values())).values()))

    async def watch_ohlcv_for_symbols(
        self,
        symbolsAndTimeframes: list[list[str]],
        since: int | None = None,
        limit: int | None = None,
        params: dict[str, Any] | None = None,
    ) -> Any:
        if not symbolsAndTimeframes:
            raise BadRequest("bitmusa watch_ohlcv_for_symbols: give [[symbol, timeframe], ...]")
        keys: list[Key] = []
        for pair in symbolsAndTimeframes:
            symbol, timeframe = pair[0], pair[1]
            market = await self._market_of(symbol)
            if timeframe not in bm_market.SDK_INTERVALS:
                raise NotSupported(
                    f"bitmusa watch_ohlcv timeframe {timeframe!r}: one of "
                    f"{', '.join(bm_market.SDK_INTERVALS)}"
                )
            keys.append(("ohlcv", market["symbol"], timeframe))
        done = await self._watch(keys)
        _, symbol, timeframe = done[0]
        candles = self.ohlcvs[symbol][timeframe]
        if self.newUpdates:
            limit = candles.getLimit(symbol, limit)
        filtered = self.filter_by_since_limit(candles, since, limit, 0, True)
        return self.create_ohlcv_object(symbol, timeframe, filtered)

    async def un_watch_ticker(self, symbol: str, params: dict[str, Any] | None = None) -> Any:
        return await self.un_watch_tickers([symbol], params)

    async def un_watch_tickers(
        self, symbols: list[str] | None = None, params: dict[str, Any] | None = None
    ) -> Any:
        await self.load_markets()
        chosen = self.market_symbols(symbols) if symbols else list(self.symbols)
        self._unwatch([("ticker", s) for s in chosen], self.tickers)
        return True

    async def un_watch_order_book(self, symbol: str, params: dict[str, Any] | None = None) -> Any:
        return await self.un_watch_order_book_for_symbols([symbol], params)

    async def un_watch_order_book_for_symbols(
        self, symbols: list[str], params: dict[str, Any] | None = None
    ) -> Any:
        chosen = [(await self._market_of(s))["symbol"] for s in symbols]
        for symbol in chosen:
            self._levels.pop(symbol, None)
        self._unwatch([("orderbook", s) for s in chosen], self.orderbooks)
        return True

    async def un_watch_trades(self, symbol: str, params: dict[str, Any] | None = None) -> Any:
        return await self.un_watch_trades_for_symbols([symbol], params)

    async def un_watch_trades_for_symbols(
        self, symbols: list[str], params: dict[str, Any] | None = None
    ) -> Any:
        chosen = [(await self._market_of(s))["symbol"] for s in symbols]
        for symbol in chosen:
            self._trade_marks.pop(symbol, None)
        self._unwatch([("trades", s) for s in chosen], self.trades)
        return True

    async def un_watch_ohlcv(
        self, symbol: str, timeframe: str = "1m", params: dict[str, Any] | None = None
    ) -> Any:
        return await self.un_watch_ohlcv_for_symbols([[symbol, timeframe]], params)

    async def un_watch_ohlcv_for_symbols(
        self, symbolsAndTimeframes: list[list[str]], params: dict[str, Any] | None = None
    ) -> Any:
        keys: list[Key] = []
        for symbol, timeframe in symbolsAndTimeframes:
            market = await self._market_of(symbol)
            keys.append(("ohlcv", market["symbol"], timeframe))
        self._unwatch(keys, None)
        for _, symbol, timeframe in keys:
            self.ohlcvs.get(symbol, {}).pop(timeframe, None)
        return True

    async def close(self) -> None:
        """Every public subscription ends: waiting calls raise ``ExchangeClosedByUser``."""
        keys = list(self._watched)
        self._stop(keys, ExchangeClosedByUser("bitmusa: close() was called"))
        self._unpriced.clear()
        self._marks.clear()
        self._let_go.clear()
        self._mark_at.clear()
        if self._hub is not None:
            self._hub.unsubscribe(self._public_feed)
            self._hub = None
        await super().close()

    # -- subscriptions -----------------------------------------------------------------------

    async def _market_of(self, symbol: str) -> Any:
        await self.load_markets()
        return self.market(symbol)

    async def _watch(self, keys: list[Key]) -> list[Key]:
        """Subscribe ``keys`` and wait for the next update of any of them; the keys that
        updated. Raises what the poll of one raised (a REST failure, as ccxt's class)."""
        loop = asyncio.get_running_loop()
        futures = []
        for key in keys:
            future: asyncio.Future[Key] = loop.create_future()
            self._waiters.setdefault(key, []).append(future)
            futures.append(future)
        try:
            for key in keys:
                self._want(key)
            done, _ = await asyncio.wait(futures, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for key, future in zip(keys, futures, strict=True):
                waiting = self._waiters.get(key, [])
                if future in waiting:
                    waiting.remove(future)
                    future.cancel()
        failed = [f for f in done if f.exception() is not None]
        if failed and len(failed) == len(done):
            raise failed[0].exception()  # type: ignore[misc]
        return [f.result() for f in done if f.exception() is None]

    def _resolve(self, key: Key, error: Exception | None = None) -> None:
        for future in self._waiters.pop(key, []):
            if not future.done():
                if error is None:
                    future.set_result(key)
                else:
                    future.set_exception(type(error)(*error.args))

    def _want(self, key: Key) -> None:
        """``key`` is watched: from the stream when it has one and the stream is up, else
        from a poller."""
        name = self._stream_name(key)
        if key not in self._watched or self._watched[key] != name:
            # new, or a book that now wants a deeper stream: frames of the old one are
            # ignored from here on (``_on_public`` matches the stream's name)
            self._watched[key] = name
            self._cache_for(key)
            self._sync_hub()
        if self._watched[key] is None or self._polling:
            self._start_poller(key)

    def _unwatch(self, keys: list[Key], caches: dict[str, Any] | None) -> None:
        self._stop(keys, UnsubscribeError("bitmusa: un_watch was called"))
        if caches is not None:
            for key in keys:
                caches.pop(key[1], None)
        self._sync_hub()

    def _stop(self, keys: list[Key], error: Exception) -> None:
        for key in keys:
            self._watched.pop(key, None)
            poller = self._pollers.pop(key, None)
            if poller is not None:
                poller.cancel()
            self._resolve(key, error)

    def _stream_name(self, key: Key) -> str | None:
        kind, symbol = key[0], key[1]
        ticker = self._symbols.ticker(symbol)
        if kind == "orderbook":
            speed = self._choice("publicDepthSpeed", pub.DEPTH_SPEEDS)
            return pub.depth_stream(ticker, self._levels.get(symbol, 5), speed)
        if kind == "ohlcv":
            return pub.kline_stream(ticker, bm_market.SDK_INTERVALS[key[2]])
        if kind == "mark":
            return pub.kline_stream(ticker, MARK_INTERVAL)
        return None  # tickers and trades: REST only

    def _cache_for(self, key: Key) -> None:
        kind, symbol = key[0], key[1]
        if kind == "trades" and symbol not in self.trades:
            self.trades[symbol] = ArrayCache(self.safe_integer(self.options, "tradesLimit", 1000))
        elif kind == "ohlcv":
            frames = self.ohlcvs.setdefault(symbol, {})
            if key[2] not in frames:
                frames[key[2]] = ArrayCacheByTimestamp(
                    self.safe_integer(self.options, "OHLCVLimit", 1000)
                )

    def _sync_hub(self) -> None:
        """The hub gets exactly the stream names watched now (the first opens it)."""
        wanted = {name for name in self._watched.values() if name is not None}
        hub = self._hub
        if hub is None:
            if not wanted:
                return
            hub = self._hub = self._session().public(self._public_config())
            self.options["publicFeed"] = STREAM
        current = hub.subscribed(self._public_feed)
        if wanted - current:
            hub.subscribe(self._public_feed, wanted - current)
        if current - wanted:
            hub.unsubscribe(self._public_feed, current - wanted)

    def _public_config(self) -> PublicConfig:
        ws_url: str = self.safe_string(self.urls["api"], "ws", DEFAULT_WS_URL)
        fallback = self.options.get("apiFallback", True)
        try:
            urls.check_url(ws_url, "ws")
            require_secure(ws_url, insecure=bool(self.safe_bool(self.options, "insecure", False)))
        except (urls.UrlError, InsecureURLError) as exc:
            raise BadRequest(f"bitmusa {exc}") from None
        window = self.safe_number(self.options, "publicWindow", 10.0)
        timing = self.safe_dict(self.options, "timing", {})
        return PublicConfig(
            ws_url,
            self._choice("publicWsPath", urls.PUBLIC_WS_PATHS),
            fallback=bool(fallback),
            window=window,
            silence=self.safe_number(self.options, "publicSilence", 10.0),
            open_timeout=min(10.0, window),
            retry_initial=float(timing.get("retry_initial", 0.5)),
            retry_max=float(timing.get("retry_max", 30.0)),
        )

    # -- the stream --------------------------------------------------------------------------

    def _on_public(self, item: pub.Depth | pub.Kline) -> None:
        if self._polling:
            return  # the pollers feed the caches until the hub says the stream is back
        symbol = self._symbols(item.ticker)
        if isinstance(item, pub.Depth):
            key: Key = ("orderbook", symbol)
            if self._watched.get(key) == item.stream:
                self._store_book(symbol, item.bids, item.asks, item.time)
            return
        if self._watched.get(("mark", symbol)) == item.stream:
            self._set_mark(symbol, item.close, "last")
        for key, name in list(self._watched.items()):
            if name == item.stream and key[0] == "ohlcv":
                candle = [item.start, item.open, item.high, item.low, item.close, item.volume]
                self.ohlcvs[symbol][key[2]].append(candle)
                self._resolve(key)

    def _store_book(self, symbol: str, bids: Any, asks: Any, timestamp: int | None) -> None:
        book = self.orderbooks.get(symbol)
        if book is None:
            return
        # a snapshot replaces the book: there is no sequence to apply deltas by
        book.reset(
            {
                "symbol": symbol,
                "bids": [[float(p), float(a)] for p, a in bids],
                "asks": [[float(p), float(a)] for p, a in asks],
                "timestamp": timestamp,
                "nonce": None,
            }
        )
        self._resolve(("orderbook", symbol))

    def _on_public_polling(self, polling: bool, reason: str) -> None:
        """The hub's verdict: no stream (poll REST) or the stream again (stop polling)."""
        if polling == self._polling:
            return
        self._polling = polling
        self.options["publicFeed"] = POLLING if polling else STREAM
        for key, name in list(self._watched.items()):
            if name is None:
                continue
            if polling:
                self._start_poller(key)
            else:
                poller = self._pollers.pop(key, None)
                if poller is not None:
                    poller.cancel()

    # -- REST polling ------------------------------------------------------------------------

    def _start_poller(self, key: Key) -> None:
        poller = self._pollers.get(key)
        if poller is None or poller.done():
            self._pollers[key] = asyncio.get_running_loop().create_task(self._poll(key))

    async def _poll(self, key: Key) -> None:
        """Read ``key`` from REST every ``publicPollInterval`` seconds, until it is no
        longer watched (or the stream is back). A failure goes to the calls waiting and
        the poll goes on."""
        interval = self.safe_number(self.options, "publicPollInterval", 2.0)
        read = self._reader(key)
        while key in self._watched:
            try:
                await read()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.debug("bitmusa poll %s failed: %s", key, exc)
                self._resolve(key, exc)
            await asyncio.sleep(interval)
        if self._pollers.get(key) is asyncio.current_task():
            del self._pollers[key]

    def _reader(self, key: Key) -> Callable[[], Awaitable[None]]:
        kind, symbol = key[0], key[1]
        interval = self.safe_number(self.options, "publicPollInterval", 2.0)

        async def ticker() -> None:
            self.tickers[symbol] = await self.fetch_ticker(symbol)
            self._resolve(key)

        async def book() -> None:
            level = self._levels.get(symbol, 5)
            snapshot = await self.fetch_order_book(symbol, level)
            self._store_book(symbol, snapshot["bids"], snapshot["asks"], snapshot["timestamp"])

        async def trades() -> None:
            fresh = self._new_trades(symbol, await self.fetch_trades(symbol))
            if fresh:
                for trade in fresh:
                    self.trades[symbol].append(trade)
                self._resolve(key)

        async def candles() -> None:
            # the forming candle and the one before (it may have closed since the last
            # poll): the cache gathers from the first call on, as from the stream
            rows = await self.fetch_ohlcv(symbol, key[2], None, 2)
            if key not in self._watched:
                return
            for row in rows:
                self.ohlcvs[symbol][key[2]].append(row)
            self._resolve(key)

        async def mark() -> None:
            # every instance of the process pricing this market shares one read per
            # interval: 1,000 accounts polling their positions' price cost one request
            await self.load_markets()
            market = self.market(symbol)
            shared = (asyncio.get_running_loop(), self._rest_url(), market["id"])
            record = await _shared_read(shared, interval, lambda: self._ticker_record(market))
            ticker = self.parse_ticker(record, market)
            price, which = ticker.get("markPrice"), "mark"
            if not price:
                price, which = ticker.get("last"), "last"
            if price:
                self._set_mark(symbol, float(price), which)

        return {"ticker": ticker, "orderbook": book, "trades": trades, "ohlcv": candles}.get(
            kind, mark
        )

    def _new_trades(self, symbol: str, trades: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The trades of a poll (oldest first) that the previous polls did not give: no
        trade has an id, so a trade is its (time, price, amount, side), counted at the
        newest time seen (two alike in the same ms are two trades)."""
        newest, at_newest = self._trade_marks.get(symbol, (-1, []))
        seen = list(at_newest)
        fresh = []
        for trade in trades:
            ts = trade["timestamp"] or 0
            token = (ts, trade["price"], trade["amount"], trade["side"])
            if ts < newest:
                continue
            if ts == newest and token in seen:
                seen.remove(token)
                continue
            fresh.append(trade)
        if trades:
            last = max(t["timestamp"] or 0 for t in trades)
            keep = [
                (t["timestamp"] or 0, t["price"], t["amount"], t["side"])
                for t in trades
                if (t["timestamp"] or 0) == last
            ]
            self._trade_marks[symbol] = (last, keep)
        if newest < 0:
            return fresh[-self.safe_integer(self.options, "tradesLimit", 1000) :]
        return fresh

    # -- positions' mark price ---------------------------------------------------------------

    def _on_position(self, position: dict[str, Any]) -> None:
        """A position from the user stream: priced with its market's price before it
        reaches the cache (an open one waits for its first price, or takes the mark its
        symbol's last position closed with moments ago: a flip). An open one keeps that
        price watched: the stream's 1-minute candle, or the REST ticker while the stream is
        absent; a closed one lets it go. Nothing of this spends the REST allowance while
        the stream is up (issue 21: 1,000 accounts start on the REST allowance alone)."""
        symbol = position["symbol"]
        key: Key = ("mark", symbol)
        if not position.get("contracts"):
            self._unpriced.pop((symbol, position["side"]), None)
            if key in self._watched and not self._open_position(symbol, position["side"]):
                self._stop([key], UnsubscribeError("bitmusa: the position closed"))
                last = self._marks.pop(symbol, None)
                at = self._mark_at.pop(symbol, None)
                if last is not None and at is not None:
                    self._let_go[symbol] = (*last, at)
                self._sync_hub()
            super()._on_position(position)
            return
        mark = self._marks.get(symbol)
        if mark is None:
            mark = self._recent_mark(symbol)
        if mark is not None:
            super()._on_position(self._priced(position, *mark))
        else:
            self._unpriced[(symbol, position["side"])] = position
            # no price within the public window (no stream, the ticker failing): the
            # position goes out unpriced (markPrice None) rather than never
            window = float(self.safe_number(self.options, "publicWindow", 10.0))
            asyncio.get_running_loop().call_later(
                window, self._unpriced_too_long, (symbol, position["side"]), position
            )
        if key in self._watched:
            return
        try:
            self._watched[key] = self._stream_name(key)
            self._sync_hub()
        except Exception as exc:  # a bad websocket URL: no mark price from the stream
            log.warning("bitmusa: no mark price for %s from the stream (%s)", symbol, exc)
            self._watched[key] = None  # the REST ticker, polled
        if self._watched[key] is None or self._polling:
            self._start_poller(key)

    def _recent_mark(self, symbol: str) -> tuple[float, str] | None:
        """The mark ``symbol`` had when its last position closed, if that price came at most
        ``publicPollInterval`` seconds ago, and never more than 2 s (a price as fresh as a
        poll's); it stands until the new subscription's first price re-derives the
        position. Expired marks of other symbols go too."""
        now = asyncio.get_running_loop().time()
        bound = min(2.0, float(self.safe_number(self.options, "publicPollInterval", 2.0)))
        for stale in [s for s, (_, _, at) in self._let_go.items() if now - at > bound]:
            del self._let_go[stale]
        let_go = self._let_go.pop(symbol, None)
        if let_go is None:
            return None
        self._marks[symbol] = let_go[:2]
        self._mark_at[symbol] = let_go[2]
        return let_go[:2]

    def _open_position(self, symbol: str, closed_side: str | None) -> bool:
        """Does the cache still hold an open position of ``symbol`` (the other side of a
        hedged account)?"""
        return any(
            p["symbol"] == symbol and p.get("contracts") and p["side"] != closed_side
            for p in self.positions or ()
        )

    def _set_mark(self, symbol: str, price: float, which: str) -> None:
        """A new price for ``symbol``: its open positions are re-derived and delivered
        (``watch_positions`` returns them), unless the price did not move."""
        previous = self._marks.get(symbol)
        self._marks[symbol] = (price, which)
        self._mark_at[symbol] = asyncio.get_running_loop().time()
        waiting = [k for k in self._unpriced if k[0] == symbol]
        for k in waiting:
            super()._on_position(self._priced(self._unpriced.pop(k), price, which))
        if previous == (price, which):
            return
        sides = {k[1] for k in waiting}  # delivered just now, at this price
        for position in [p for p in self.positions or () if p["symbol"] == symbol]:
            if position.get("contracts") and position["side"] not in sides:
                super()._on_position(self._priced(position, price, which))

    def _unpriced_too_long(self, key: tuple[str, str | None], position: dict[str, Any]) -> None:
        if self._unpriced.get(key) is position:  # still the one waiting, still unpriced
            del self._unpriced[key]
            log.warning(
                "bitmusa: no price for %s within publicWindow: its position is delivered "
                "with markPrice None",
                key[0],
            )
            super()._on_position(position)

    def _priced(self, position: dict[str, Any], price: float, which: str) -> dict[str, Any]:
        """``position`` at ``price``, derived by ccxt's own ``safe_position``: the notional
        (contracts x mark), the unrealized PnL (from the entry price and the side), the
        collateral (margin + PnL) and the percentage (PnL / initial margin). The initial
        margin stays the frame's (``value / leverage``: ``value`` is the entry notional),
        and an isolated position's margin is that initial margin (what it posted); the
        frame's own ``unpnl`` stays in ``info``."""
        fresh = dict(position)
        for derived in ("notional", "unrealizedPnl", "percentage", "collateral"):
            fresh[derived] = None
        if fresh.get("marginMode") == "isolated" and fresh.get("positionMargin") is None:
            fresh["positionMargin"] = fresh.get("initialMargin")
        fresh["markPrice"] = price
        if which == "last":
            fresh["lastPrice"] = price
        priced: dict[str, Any] = self.safe_position(fresh)
        # a second pass: safe_position reads the PnL before it derives it, so the
        # collateral (margin + PnL) derives only once the PnL is there
        priced = self.safe_position(priced)
        return priced


#: (loop, REST base, ticker) -> (when, the read): one ticker read per interval, shared
_READS: dict[tuple[asyncio.AbstractEventLoop, str, str], tuple[float, asyncio.Future[Any]]] = {}


async def _shared_read(
    key: tuple[asyncio.AbstractEventLoop, str, str],
    interval: float,
    read: Callable[[], Awaitable[Any]],
) -> Any:
    """``read()``'s answer, shared by every caller of the process within ``interval``
    seconds of it (its failure too)."""
    loop = key[0]
    now = loop.time()
    for stale in [k for k, (at, _) in _READS.items() if k[0].is_closed() or now - at >= interval]:
        del _READS[stale]
    entry = _READS.get(key)
    if entry is None:
        entry = _READS[key] = (now, asyncio.ensure_future(read()))
    return await asyncio.shield(entry[1])
