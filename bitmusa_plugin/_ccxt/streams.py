"""The drop-in's ccxt.pro side: ``watch_balance``, ``watch_orders``, ``watch_positions`` and
``watch_my_trades``, fed by the engine's hooks into ccxt's own caches.

Better than ccxt.pro's own user streams, on purpose:

* the stream engine keeps running between ``watch_*`` calls, and a call returns at once
  when updates arrived since the previous one (ccxt#10754: nothing is lost between calls);
* a closed position replaces its row in the positions cache (one-way accounts keep one row
  per symbol) instead of leaving a stale one beside the new one;
* transient disconnects are healed by the engine (with a resync) and never raise;
* a stream that cannot start fails loudly, never hangs (issue #13): a call raises the ccxt
  class a ``fetch_*`` would for the same cause: bad keys at once, a wrong REST or
  websocket path at once, an unreachable server once the start-up window has passed; the
  calls waiting then raise, and so does every later call, until ``close()``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections import Counter
from typing import Any

from ccxt.async_support.base.ws.cache import ArrayCacheBySymbolById, ArrayCacheBySymbolBySide
from ccxt.base.errors import BadRequest, ExchangeClosedByUser, ExchangeError, NetworkError

from bitmusa_hookspecs import hookimpl
from bitmusa_plugin._core import machine as lc
from bitmusa_plugin._engine.aio import within
from bitmusa_plugin._engine.secrets import redact
from bitmusa_plugin._engine.stream import AccountStream

from .base import Base
from .errors import ccxt_error

log = logging.getLogger(__name__)

#: what each watch waits for
KINDS = ("orders", "positions", "balance", "myTrades")


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

    def __init__(self, exchange: Streams) -> None:
        self.exchange = exchange

    @hookimpl
    async def on_order(self, order: dict[str, Any]) -> None:
        self.exchange._on_order(order)

    @hookimpl
    async def on_trade(self, trade: dict[str, Any]) -> None:
        self.exchange._on_trade(trade)

    @hookimpl
    async def on_position(self, position: dict[str, Any]) -> None:
        self.exchange._on_position(position)

    @hookimpl
    async def on_wallet(self, balance: dict[str, Any]) -> None:
        self.exchange._on_balance(balance)

    @hookimpl
    async def on_stream_state(self, state: dict[str, Any]) -> None:
        self.exchange._on_state(state)


class _Run:
    """One run of the user stream: what each watch scope has seen, and how it ended. A
    caller waits on the run it started with, so ``close()`` can end it while a new run
    begins."""

    def __init__(self) -> None:
        self.changed = asyncio.Condition()
        self.versions: dict[str, Counter[Any]] = {kind: Counter() for kind in KINDS}
        self.seen: dict[tuple[str, Any], int] = {}
        self.dirty: dict[tuple[str, Any], set[str]] = {}
        self.stream: AccountStream | None = None
        #: set once: every waiting and later call raises (a fresh copy of) it
        self.failure: Exception | None = None
        #: set when the websocket first connected (or the run ended): from then on, what
        #: an order does reaches this run's stream
        self.connected = asyncio.Event()


def _fresh(failure: Exception) -> Exception:
    """A new exception of the same class and message: raising one instance again and again
    would chain every raise's traceback onto it."""
    return type(failure)(*failure.args)


class Streams(Base):
    """``watch_*`` over the engine's user stream, and the order sides this process knows."""

    def __init__(self, config: dict[str, Any] | None = None) -> None:
        super().__init__(config)
        self._run: _Run | None = None
        self.orders: Any = None
        self.positions: Any = None
        self.myTrades: Any = None

    def _plugins(self) -> dict[str, object]:
        return {"ccxt-feed": _Feed(self)}

    # -- the calls ---------------------------------------------------------------------------

    async def watch_balance(self, params: dict[str, Any] | None = None) -> dict[str, Any]:
        await self._wait("balance", None)
        balance: dict[str, Any] = self.balance
        return balance

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

    async def watch_my_trades(
        self,
        symbol: str | None = None,
        since: int | None = None,
        limit: int | None = None,
        params: dict[str, Any] | None = None,
    ) -> list[dict[str, Any]]:
        """The account's fills, one trade each (``on_trade``): live from the order stream,
        and recovered from the trade history after a gap; ids ``"<order>:<filled>"``."""
        await self._wait("myTrades", None if symbol is None else (symbol,))
        trades = self.myTrades
        if self.newUpdates:
            limit = trades.getLimit(symbol, limit)
        return self.filter_by_symbol_since_limit(trades, symbol, since, limit, True)  # type: ignore[no-any-return]

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
        """End the stream: calls waiting raise ``ExchangeClosedByUser``; the next call
        starts a new stream."""
        run, self._run = self._run, None
        if run is not None and run.failure is None:
            run.failure = ExchangeClosedByUser("bitmusa: close() was called")
            self._notify(run)
        await super().close()

    # -- the engine --------------------------------------------------------------------------

    def _start(self) -> _Run:
        """The stream's run, started at the first call; raises how it ended, if it has."""
        run = self._run
        if run is not None:
            if run.failure is not None:
                raise _fresh(run.failure)
            return run
        config = self._config()
        session = self._session()
        run = self._run = _Run()
        self.orders = ArrayCacheBySymbolById(self.safe_integer(self.options, "ordersLimit", 1000))
        self.myTrades = ArrayCacheBySymbolById(self.safe_integer(self.options, "tradesLimit", 1000))
        self.positions = PositionsCache()
        run.stream = session.add(config)
        session.finished(config.label).add_done_callback(functools.partial(self._finished, run))
        return run

    async def _ensure_stream(self) -> None:
        """Start the stream if it is not running, and wait (once per run, at most
        ``options['startupWindow']``) for its first connection: an order placed before it
        would fill unseen (a start-up snapshot is a state, not fills), and its trades
        would never reach ``watch_my_trades``. Its failure is the watch calls' to report,
        not the trading call's: the order goes out anyway."""
        try:
            run = self._run if self._run is not None else self._start()
        except Exception:
            return
        if not run.connected.is_set():
            window = self.safe_number(self.options, "startupWindow", 30.0)
            with contextlib.suppress(asyncio.TimeoutError):  # TimeoutError from 3.11 on
                await within(run.connected.wait(), window)

    def _finished(self, run: _Run, task: asyncio.Task[lc.Finish]) -> None:
        """The stream ended: every call waiting on this run, and every later one, raises
        why (its ccxt class), instead of waiting for updates that will not come."""
        run.connected.set()  # nobody waits for a connection that will not come
        if run.failure is not None:
            return  # close() ended it
        if task.cancelled():
            run.failure = ExchangeClosedByUser("bitmusa: the stream was stopped")
        elif task.exception() is not None:  # a bug of ours; the session logged it
            run.failure = ExchangeError(f"bitmusa: the stream crashed ({task.exception()!r})")
        elif task.result().failed:
            run.failure = self._failure_of(run, task.result())
        else:
            run.failure = ExchangeClosedByUser("bitmusa: the stream was stopped")
        self._notify(run)

    def _failure_of(self, run: _Run, result: lc.Finish) -> Any:
        """Why the stream failed, as the ccxt class a REST call would raise for it: the
        last REST failure when that is what ended it (bad keys, a wrong path, no answer),
        else the websocket's (a refused handshake: a wrong path; no answer past the
        start-up window)."""
        reason = result.reason
        last = run.stream.last_error if run.stream is not None else None
        if last is not None and reason.startswith((redact(last.message), last.message)):
            code = f"{last.code} " if last.code is not None else ""
            return ccxt_error(self, last, text=f"bitmusa {code}{reason}")
        text = f"bitmusa {reason}"
        if reason.startswith("internal"):
            return ExchangeError(text)
        if "start-up window" in reason:  # the machine's verdict on an unreachable server
            return NetworkError(text)
        return BadRequest(text)  # the websocket's path is wrong, or nothing speaks websocket

    async def _wait(self, kind: str, symbols: tuple[str, ...] | None) -> set[str]:
        """Return as soon as ``kind`` has updates this scope has not seen; the symbols
        they concern. Raises the stream's failure, at once or when it comes."""
        run = self._start()
        scope = (kind, symbols)
        run.dirty.setdefault(scope, set())
        async with run.changed:
            while True:
                if run.failure is not None:
                    raise _fresh(run.failure)
                versions = run.versions[kind]
                current = versions[None] if symbols is None else sum(versions[s] for s in symbols)
                if current > run.seen.get(scope, 0):
                    first = scope not in run.seen
                    run.seen[scope] = current
                    changed = run.dirty[scope]
                    run.dirty[scope] = set()
                    if first:  # everything so far is new to a first call
                        changed = {p["symbol"] for p in self.positions} | changed
                    return changed
                await run.changed.wait()

    def _bump(self, kind: str, symbol: str | None) -> None:
        run = self._run
        if run is None:
            return
        versions = run.versions[kind]
        versions[None] += 1
        if symbol is not None:
            versions[symbol] += 1
            for (scope_kind, scope), dirty in run.dirty.items():
                if scope_kind == kind and (scope is None or symbol in scope):
                    dirty.add(symbol)
        self._notify(run)

    def _notify(self, run: _Run) -> None:
        async def notify(condition: asyncio.Condition) -> None:
            async with condition:
                condition.notify_all()

        asyncio.get_running_loop().create_task(notify(run.changed))

    # -- the feed ----------------------------------------------------------------------------

    def _on_order(self, order: dict[str, Any]) -> None:
        # its side comes from the engine (``_engine/sides.py``), for every order
        self.orders.append(order)
        self._bump("orders", order["symbol"])

    def _on_trade(self, trade: dict[str, Any]) -> None:
        self.myTrades.append(trade)
        self._bump("myTrades", trade["symbol"])

    def _on_position(self, position: dict[str, Any]) -> None:
        self.positions.append(position)
        self._bump("positions", position["symbol"])

    def _on_balance(self, balance: dict[str, Any]) -> None:
        self.balance = balance
        self._bump("balance", None)

    def _on_state(self, state: dict[str, Any]) -> None:
        if state["status"] == "connected" and self._run is not None:
            self._run.connected.set()
        log.info(
            "bitmusa stream %s%s",
            state["status"],
            f" ({state['reason']})" if state.get("reason") else "",
        )

    # -- what the stream does not say --------------------------------------------------------

    def _cached_order(self, order_id: str) -> dict[str, Any] | None:
        """The stream's latest state of ``order_id``, if this run has seen it."""
        if self.orders is None:
            return None
        for order in self.orders:
            if order["id"] == order_id:
                return order  # type: ignore[no-any-return]
        return None

    def _learn(self, order_id: str, side: str) -> None:
        """An order this process placed: its side, told to the engine, which owns the
        sides of the stream's orders and trades (the order stream carries none); and
        given to what this run's caches hold of it with none (the stream can beat the
        POST's answer, and the engine's wait for a side can run out)."""
        cached = self._cached_order(order_id)
        if cached is not None and cached["side"] is None:
            cached["side"] = side  # the dicts a watch returned are these
        for trade in self.myTrades or ():
            if trade["order"] == order_id and trade["side"] is None:
                trade["side"] = side
        if self._engine is not None and (cached is None or cached["status"] == "open"):
            pipeline = self._engine.pipeline
            pipeline.mapper(self._label)  # the account's fills exist
            pipeline.fills[self._label].learn(order_id, side)
            gate = pipeline.side_gates.get(self._label)
            if gate is not None:  # its frame, held for its side, goes out with it now
                gate.settle(order_id, side)
