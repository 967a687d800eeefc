"""The ccxt drop-in: ``bitmusa``, a ``ccxt.async_support.Exchange`` with ccxt.pro's
``watch_balance`` / ``watch_orders`` / ``watch_positions`` and REST snapshots.

This is the only module that imports ccxt. ``bitmusa_plugin.bitmusa`` and
``load_exchange`` reach it lazily, and it is registered in the ``ccxt.exchanges``
entry-point group so a bot can find it by name.

Better than ccxt.pro's own user streams, on purpose:

* the stream engine keeps running between ``watch_*`` calls, and a call returns at once
  when updates arrived since the previous one (ccxt#10754: nothing is lost between calls);
* a closed position replaces its row in the positions cache (one-way accounts keep one row
  per symbol) instead of leaving a stale one beside the new one;
* transient disconnects are healed by the engine (with a resync) and never raise;
  permanent failures raise ccxt's own exception classes carrying Bitmusa's code.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from typing import Any

from ccxt.async_support.base.exchange import Exchange
from ccxt.async_support.base.ws.cache import ArrayCacheBySymbolById, ArrayCacheBySymbolBySide
from ccxt.base.errors import (
    AuthenticationError,
    ExchangeError,
    NetworkError,
    PermissionDenied,
    RateLimitExceeded,
)

from bitmusa_hookspecs import hookimpl
from bitmusa_plugin._core import build, wire
from bitmusa_plugin._core import machine as lc
from bitmusa_plugin._core.errors import BitmusaError, RateLimitedError
from bitmusa_plugin._core.errors import NetworkError as BitmusaNetworkError
from bitmusa_plugin._core.symbols import SymbolMap
from bitmusa_plugin._engine import rest as bm_rest
from bitmusa_plugin._engine.limiter import RateLimiter
from bitmusa_plugin._engine.secrets import Credentials, InsecureURLError
from bitmusa_plugin._engine.session import Session
from bitmusa_plugin._engine.stream import DEFAULT_WS_URL, AccountConfig, AccountStream, Heartbeat

log = logging.getLogger(__name__)


def ccxt_error(exc: BitmusaError) -> Any:
    """The ccxt exception class for a Bitmusa REST error, carrying the code."""
    text = f"bitmusa {exc.code} {exc.message}" if exc.code is not None else f"bitmusa {exc.message}"
    if exc.code in (1001, 1003, 401):
        return AuthenticationError(text)
    if exc.code in (1002, 1005, 1012, 403):
        return PermissionDenied(text)
    if isinstance(exc, RateLimitedError):
        return RateLimitExceeded(text)
    if isinstance(exc, BitmusaNetworkError):
        return NetworkError(text)
    return ExchangeError(text)


_LIMITER: RateLimiter | None = None


def _shared_limiter() -> RateLimiter:
    """One limiter for every bitmusa instance of the process (the limits may be per IP)."""
    global _LIMITER
    if _LIMITER is None:
        _LIMITER = RateLimiter()
    return _LIMITER


class PositionsCache(ArrayCacheBySymbolBySide):  # type: ignore[misc]
    """ccxt's positions cache, where a one-way account keeps one row per symbol: a position
    that closes and reopens on the other side replaces its row instead of leaving a stale
    one beside it."""

    def append(self, item: dict[str, Any]) -> None:
        if not item.get("hedged"):
            symbol, side = item["symbol"], item["side"]
            for other in [s for s in self.hashmap.get(symbol, {}) if s != side]:
                token = (symbol, other)
                index = self._index.index(token)
                del self._deque[index]
                del self._index[index]
                del self.hashmap[symbol][other]
        super().append(item)


class _Feed:
    """The drop-in's own plugin: feeds ccxt's caches from the engine's hooks."""

    def __init__(self, exchange: bitmusa) -> None:
        self.exchange = exchange

    @hookimpl
    async def on_order(self, order: dict[str, Any]) -> None:
        self.exchange._on_order(order)

    @hookimpl
    async def on_position(self, position: dict[str, Any]) -> None:
        self.exchange._on_position(position)

    @hookimpl
    async def on_wallet(self, balance: dict[str, Any]) -> None:
        self.exchange._on_balance(balance)

    @hookimpl
    async def on_stream_state(self, state: dict[str, Any]) -> None:
        self.exchange._on_state(state)


class bitmusa(Exchange):  # type: ignore[misc]  # ccxt names its classes by exchange id
    """Bitmusa futures for ccxt: ``bitmusa({'apiKey': <x-api-key>, 'secret': <auth key>})``."""

    def describe(self) -> dict[str, Any]:
        return self.deep_extend(  # type: ignore[no-any-return]
            super().describe(),
            {
                "id": "bitmusa",
                "name": "Bitmusa",
                "countries": ["KR"],
                "pro": True,
                "rateLimit": 125,  # 8 requests per second
                "has": {
                    "CORS": None,
                    "publicAPI": False,  # the user stream and its snapshots are all private
                    "privateAPI": True,
                    "spot": False,
                    "margin": False,
                    "swap": True,
                    "future": False,
                    "option": False,
                    "fetchMarkets": True,
                    "fetchBalance": True,
                    "fetchPositions": True,
                    "fetchOpenOrders": True,
                    "watchBalance": True,
                    "watchOrders": True,
                    "watchPositions": True,
                    "fetchCurrencies": False,
                    "fetchTicker": False,
                    "fetchTickers": False,
                    "fetchOrderBook": False,
                    "fetchOHLCV": False,
                    "fetchTrades": False,
                    "fetchMyTrades": False,
                    "fetchOrder": False,
                    "fetchOrders": False,
                    "fetchClosedOrders": False,
                    "createOrder": False,
                    "cancelOrder": False,
                    "watchTicker": False,
                    "watchTrades": False,
                    "watchOrderBook": False,
                    "watchMyTrades": False,
                },
                "urls": {
                    "api": {"rest": bm_rest.DEFAULT_REST_URL, "ws": DEFAULT_WS_URL},
                    "www": "https://www.bitmusa.com",
                    "doc": ["https://github.com/bitmusa-docs/apidocs"],
                },
                "requiredCredentials": {"apiKey": True, "secret": True},
                "options": {
                    "ordersLimit": 1000,  # ccxt's default cache size for orders
                    "markets": {},  # ticker -> unified symbol, for tickers beyond the rule
                    "account": "bitmusa",
                    "keepaliveInterval": 30 * 60.0,
                    "rotateAfter": 23 * 3600 + 50 * 60.0,
                    "keepListenKey": False,
                    "resync": True,
                },
            },
        )

    def __init__(self, config: dict[str, Any] | None = None) -> None:
        super().__init__(config or {})
        #: the engine: one pool, TLS context and limiter for every fetch and the stream
        self._engine: Session | None = None
        self._stream: AccountStream | None = None
        self._changed: asyncio.Condition | None = None
        self._versions: dict[str, Counter[Any]] = {
            "orders": Counter(),
            "positions": Counter(),
            "balance": Counter(),
        }
        self._seen: dict[tuple[str, Any], int] = {}
        self._dirty: dict[tuple[str, Any], set[str]] = {}
        self._failure: Exception | None = None
        self._symbols = SymbolMap(self.safe_dict(self.options, "markets", {}))
        self.orders: Any = None
        self.positions: Any = None

    # -- markets (offline) --------------------------------------------------------------

    async def fetch_markets(self, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """Markets from the user's ``markets`` option and every ticker seen so far:
        linear perpetuals settled in their quote (``XRP/USDT:USDT``, contract size 1)."""
        return [self._market(ticker, symbol) for ticker, symbol in self._symbols.known.items()]

    def _market(self, ticker: str, symbol: str) -> dict[str, Any]:
        base, _, rest = symbol.partition("/")
        quote, _, settle = rest.partition(":")
        return self.safe_market_structure(  # type: ignore[no-any-return]
            {
                "id": ticker,
                "symbol": symbol,
                "base": base,
                "quote": quote,
                "settle": settle or quote,
                "baseId": base,
                "quoteId": quote,
                "settleId": settle or quote,
                "type": "swap",
                "spot": False,
                "margin": False,
                "swap": True,
                "future": False,
                "option": False,
                "active": True,
                "contract": True,
                "linear": True,
                "inverse": False,
                "contractSize": self.parse_number("1"),
                "info": {},
            }
        )

    def _ticker(self, symbol: str) -> str:
        return self._symbols.ticker(symbol)

    # -- REST snapshots -------------------------------------------------------------------

    def _config(self) -> AccountConfig:
        """The account, from the credentials, the URLs and the options."""
        self.check_required_credentials()
        try:
            return AccountConfig(
                self.safe_string(self.options, "account", "bitmusa"),
                Credentials(self.apiKey, self.secret),
                self.safe_string(self.urls["api"], "rest", bm_rest.DEFAULT_REST_URL),
                self.safe_string(self.urls["api"], "ws", DEFAULT_WS_URL),
                insecure=bool(self.safe_bool(self.options, "insecure", False)),
            )
        except InsecureURLError as exc:
            raise ExchangeError(f"bitmusa {exc}") from None

    def _session(self) -> Session:
        """The engine, started at first use (a fetch or a watch)."""
        if self._engine is None:
            timing = lc.Timing(
                keepalive_interval=self.safe_number(self.options, "keepaliveInterval", 1800.0),
                rotate_after=self.safe_number(self.options, "rotateAfter", 85800.0),
            )
            timing = lc.replace_timing(timing, self.safe_dict(self.options, "timing", {}))
            beat = self.safe_list(self.options, "heartbeat")
            self._engine = Session(
                {"ccxt-feed": _Feed(self)},
                command="ccxt",
                limiter=_shared_limiter(),
                markets=self.safe_dict(self.options, "markets", {}),
                timing=timing,
                heartbeat=Heartbeat(float(beat[0]), float(beat[1])) if beat else None,
                keep_listen_key=bool(self.safe_bool(self.options, "keepListenKey", False)),
                resync=bool(self.safe_bool(self.options, "resync", True)),
                rest_timeout=self.timeout / 1000,
            )
            self._symbols = self._engine.pipeline.symbols  # tickers seen become markets
            self._engine.start()
        return self._engine

    async def _get(self, what: str, **kwargs: Any) -> list[dict[str, Any]]:
        client = self._session().account_client(self._config())
        try:
            records: list[dict[str, Any]] = await getattr(client, what)(**kwargs)
            return records
        except BitmusaError as exc:
            raise ccxt_error(exc) from None

    async def fetch_balance(self, params: dict[str, Any] | None = None) -> dict[str, Any]:
        """GET /future/wallet: free = available, used = wallet - available."""
        records = await self._get("wallet")
        assets = dict(build.asset(wire.rest_wallet_fields(record)) for record in records)
        balance: dict[str, Any] = dict(build.balance(assets, records, None))
        return balance

    async def fetch_positions(
        self, symbols: list[str] | None = None, params: dict[str, Any] | None = None
    ) -> list[dict[str, Any]]:
        """GET /future/position, mapped like the stream's positions."""
        records = await self._get("positions")
        positions = []
        for record in records:
            fields = wire.rest_position_fields(record)
            positions.append(dict(build.position(fields, None, self._symbols, record)))
        return self.filter_by_array_positions(positions, "symbol", symbols)  # type: ignore[no-any-return]

    async def fetch_open_orders(
        self,
        symbol: str | None = None,
        since: int | None = None,
        limit: int | None = None,
        params: dict[str, Any] | None = None,
    ) -> list[dict[str, Any]]:
        """GET /future/order, mapped like the stream's orders."""
        ticker = self._ticker(symbol) if symbol else None
        records = await self._get("open_orders", ticker=ticker, size=limit or 500)
        orders = [
            dict(build.order(wire.rest_order_fields(record), None, self._symbols, record))
            for record in records
        ]
        orders = self.sort_by(orders, "timestamp")
        return self.filter_by_symbol_since_limit(orders, symbol, since, limit)  # type: ignore[no-any-return]

    # -- streams ----------------------------------------------------------------------------

    async def watch_balance(self, params: dict[str, Any] | None = None) -> dict[str, Any]:
        await self._wait("balance", None)
        return self.balance

    async def watch_orders(
        self,
        symbol: str | None = None,
        since: int | None = None,
        limit: int | None = None,
        params: dict[str, Any] | None = None,
    ) -> list[dict[str, Any]]:
        await self._wait("orders", None if symbol is None else (symbol,))
        orders = self.orders
        if self.newUpdates:
            limit = orders.getLimit(symbol, limit)
        return self.filter_by_symbol_since_limit(orders, symbol, since, limit, True)  # type: ignore[no-any-return]

    async def watch_positions(
        self,
        symbols: list[str] | None = None,
        since: int | None = None,
        limit: int | None = None,
        params: dict[str, Any] | None = None,
    ) -> list[dict[str, Any]]:
        scope = None if not symbols else tuple(sorted(symbols))
        changed = await self._wait("positions", scope)
        positions = list(self.positions)
        if self.newUpdates:
            positions = [p for p in positions if p["symbol"] in changed]
        return self.filter_by_symbols_since_limit(positions, symbols, since, limit, True)  # type: ignore[no-any-return]

    async def close(self) -> None:
        """Stop the stream (DELETE the listenKey unless ``keepListenKey``), then ccxt's."""
        if self._engine is not None:
            await self._engine.aclose()
        self._engine = self._stream = None
        await super().close()

    # -- the engine -------------------------------------------------------------------------

    def _start(self) -> None:
        if self._failure is not None:
            raise self._failure
        if self._stream is not None:
            return
        config = self._config()
        self._changed = asyncio.Condition()
        self.orders = ArrayCacheBySymbolById(self.safe_integer(self.options, "ordersLimit", 1000))
        self.positions = PositionsCache()
        session = self._session()
        self._stream = session.add(config)
        session.finished(config.label).add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[lc.Finish]) -> None:
        if task.cancelled() or task.exception() is not None:
            return  # a crash is logged by the session
        result = task.result()
        if result.failed:
            stream = self._stream
            last = stream.last_error if stream is not None else None
            self._failure = (
                ccxt_error(last) if last is not None else ExchangeError(f"bitmusa {result.reason}")
            )
            self._notify()

    async def _wait(self, kind: str, symbols: tuple[str, ...] | None) -> set[str]:
        """Return as soon as ``kind`` has updates this scope has not seen; the symbols
        they concern."""
        self._start()
        scope = (kind, symbols)
        self._dirty.setdefault(scope, set())
        assert self._changed is not None
        async with self._changed:
            while True:
                if self._failure is not None:
                    raise self._failure
                versions = self._versions[kind]
                current = versions[None] if symbols is None else sum(versions[s] for s in symbols)
                if current > self._seen.get(scope, 0):
                    first = scope not in self._seen
                    self._seen[scope] = current
                    changed = self._dirty[scope]
                    self._dirty[scope] = set()
                    if first:  # everything so far is new to a first call
                        changed = {p["symbol"] for p in self.positions} | changed
                    return changed
                await self._changed.wait()

    def _bump(self, kind: str, symbol: str | None) -> None:
        versions = self._versions[kind]
        versions[None] += 1
        if symbol is not None:
            versions[symbol] += 1
            for (scope_kind, scope), dirty in self._dirty.items():
                if scope_kind == kind and (scope is None or symbol in scope):
                    dirty.add(symbol)
        self._notify()

    def _notify(self) -> None:
        if self._changed is None:
            return

        async def notify(condition: asyncio.Condition) -> None:
            async with condition:
                condition.notify_all()

        asyncio.get_running_loop().create_task(notify(self._changed))

    def _on_order(self, order: dict[str, Any]) -> None:
        self.orders.append(order)
        self._bump("orders", order["symbol"])

    def _on_position(self, position: dict[str, Any]) -> None:
        self.positions.append(position)
        self._bump("positions", position["symbol"])

    def _on_balance(self, balance: dict[str, Any]) -> None:
        self.balance = balance
        self._bump("balance", None)

    def _on_state(self, state: dict[str, Any]) -> None:
        log.info(
            "bitmusa stream %s%s",
            state["status"],
            f" ({state['reason']})" if state.get("reason") else "",
        )
