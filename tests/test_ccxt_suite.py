"""ccxt's own per-method tests, the ones ccxt ships in its package
(``ccxt/test/exchange/async/test_*.py``, ``ccxt/pro/test/Exchange/test_watch_*.py``),
against the drop-in on the simulator over loopback: called as ccxt's runner
(``ccxt/test/tests_async.py``) calls them, ``test_<method>(exchange, skipped_properties,
*args)``, with the arguments its runner passes and ``skipped_properties = {}`` (a
third-party class has no entry in ccxt's ``skip-tests.json``).

The cases are computed from ``has`` at collection time: every method whose ``has`` is true
and for which ccxt ships a test, plus the three the runner runs whatever ``has`` says
(``loadMarkets``, ``features``, ``afterConstruct``). A meta-test recomputes that set from
ccxt's directories, so a method with ``has`` true and a ccxt test can never be left out
silently; the one exception is :data:`NOT_RUN`, with its reason.

Stricter than ccxt's runner on purpose: the runner counts a ``NotSupported`` (and a
repeated network failure) as a pass; here any exception fails.

The simulator is quiet; each test gets real data: a resting order of this client, one of
another client of the same account (the web page), a position and fills that other client
made; while a ``watch_*`` test runs (ccxt's run 15 s and need an update for every call),
both clients keep trading and the market keeps moving.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import inspect
import re
from collections.abc import AsyncIterator, Callable
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import ccxt
import pytest

from bitmusa_plugin._ccxt.exchange import bitmusa
from bitmusa_plugin.simulator import Simulator
from bitmusa_plugin.simulator._engine import BUY, CLOSE, LIMIT, MARKET, OPEN, SELL, OrderRequest
from ccxt_reference import make_exchange

# time_scale 1: a listenKey lasts a real hour, so no lapse is a gap a test did not make
pytestmark = pytest.mark.bitmusa_simulator(script=False, event_interval=None, seed=7, time_scale=1)

CCXT = Path(ccxt.__file__).parent
#: where ccxt keeps its tests, by package: REST (``fetch*``, ``create*``, ...) and ccxt.pro
REST_TESTS = ("ccxt.test.exchange.async", CCXT / "test" / "exchange" / "async")
WS_TESTS = ("ccxt.pro.test.Exchange", CCXT / "pro" / "test" / "Exchange")

#: the tests ccxt's runner runs whatever ``has`` says (``tests_async.py``, ``test_method``:
#: ``is_load_markets``, ``is_feature_test``, ``is_constructor_test``)
ALWAYS = ("loadMarkets", "features", "afterConstruct")

#: ccxt tests of ``has``-true methods that are not run, and why (the meta-test checks that
#: each is a ``has``-true method with a ccxt test, and that nothing else is left out)
NOT_RUN = {
    "fetchMarkets": (
        "ccxt's runner never calls it (it is in none of run_public_tests' or "
        "run_private_tests' tables), and in ccxt 4.5.90 it asserts a dict where ccxt's own "
        "fetch_markets returns a list (ccxt.base.types: List[MarketInterface]): it fails for "
        "every exchange; test_load_markets runs ccxt's market checks on the same markets"
    ),
}

#: what ccxt's runner passes, where it is not one ``symbol`` (``run_public_tests``,
#: ``run_private_tests``; ``symbols`` is ``[primary, primary with ETH for BTC]``, ``code``
#: ``get_exchange_code``'s first of BTC, ETH, ... that the exchange has)
RUNNER_ARGS: dict[str, tuple[str, ...]] = {
    "features": (),
    "afterConstruct": (),
    "loadMarkets": (),
    "fetchStatus": (),
    "fetchTime": (),
    "fetchCurrencies": (),
    "fetchOrderBooks": (),
    "fetchBidsAsks": (),
    "fetchBalance": (),
    "fetchTradingFees": (),
    "fetchAccounts": (),
    "fetchTransactionFees": (),
    "signIn": (),
    "fetchLeverageTiers": ("symbols1",),
    "watchOrderBookForSymbols": ("symbols",),
    "watchTradesForSymbols": ("symbols",),
    "watchOHLCVForSymbols": ("symbol",),  # sic: the runner passes the primary symbol
    "watchBalance": ("code",),
    "fetchLedger": ("code",),
    "fetchDeposits": ("code",),
    "fetchWithdrawals": ("code",),
    "fetchTransfers": ("code",),
    "fetchBorrowInterest": ("code", "symbol"),
}


#: ccxt tests that fail in ccxt's own Python for every exchange, as shipped: run anyway,
#: expected to fail with exactly that exception (strict: when ccxt fixes it, the pass fails
#: this test and the entry goes)
CCXT_BROKEN: dict[str, tuple[type[BaseException], str]] = {
    "createOrder": (
        TypeError,
        "ccxt 4.5.90's Python test_create_order cannot pass for any exchange: it adds a float "
        "to a str in a debug print ('/' + initial_quote_balance), awaits "
        "test_shared_methods.fetch_best_bid_ask and fetch_order, plain functions that call "
        "the async exchange without await, rounds with ROUND_UP, which Python's "
        "decimal_to_precision refuses, and raises an undefined Error. The TypeError comes "
        "after balance[market['base']] (the KeyError the issue reported) and the quote "
        "balance check: those pass",
    ),
}

BTC = "BTC/USDT:USDT"
#: a bound that only turns a hang into a failure (ccxt's watch tests run 15 s each)
HANG = 90


def snake(method: str) -> str:
    """ccxt's ``convert_to_snake_case`` (``ccxt/test/tests_helpers.py``, which cannot be
    imported: it refuses an installed ccxt at import time)."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", method).lower().replace("o_h_l_c_v", "ohlcv")


def ccxt_test_file(method: str) -> tuple[str, Path] | None:
    """The module and file of ccxt's test of ``method``, if ccxt ships one."""
    order = (WS_TESTS, REST_TESTS) if method.startswith("watch") else (REST_TESTS, WS_TESTS)
    for package, folder in order:
        path = folder / f"test_{snake(method)}.py"
        if path.is_file():
            return f"{package}.test_{snake(method)}", path
    return None


def has_true() -> set[str]:
    """The drop-in's ``has``, read from a fresh instance (no I/O)."""
    exchange = bitmusa()
    return {method for method, value in exchange.has.items() if value}


def cases(has: set[str] | None = None) -> list[str]:
    """What runs: ``has``-true methods with a ccxt test, and the runner's three."""
    has = has_true() if has is None else has
    methods = {m for m in has if ccxt_test_file(m) is not None} - set(NOT_RUN)
    return sorted(methods | set(ALWAYS))


def ccxt_function(method: str) -> Callable[..., Any]:
    """ccxt's ``test_<method>``, as shipped."""
    found = ccxt_test_file(method)
    assert found is not None, method
    module = importlib.import_module(found[0])
    return getattr(module, f"test_{snake(method)}")  # type: ignore[no-any-return]


def runner_args(method: str, function: Callable[..., Any], exchange: Any) -> list[Any]:
    """The arguments ccxt's runner passes (``get_valid_symbol``: BTC/USDT:USDT first for a
    swap; ``get_exchange_code``: BTC first)."""
    symbols = [BTC, BTC.replace("BTC", "ETH")]
    code = next(
        (c for c in ("BTC", "ETH", "XRP", "LTC", "BCH", "EOS", "BNB", "BSV", "USDT")
         if c in exchange.currencies),
        "BTC",
    )  # fmt: skip
    kinds = RUNNER_ARGS.get(method)
    if kinds is None:  # the runner's tables: one symbol for every other method
        kinds = tuple(list(inspect.signature(function).parameters)[2:])
        assert kinds in ((), ("symbol",)), f"{method}: ccxt's test takes {kinds}"
    values = {"symbol": BTC, "symbols": symbols, "symbols1": [BTC], "code": code}
    return [values[kind] for kind in kinds]


def case_params() -> list[Any]:
    params = []
    for method in cases():
        marks = []
        if method in CCXT_BROKEN:
            raises, reason = CCXT_BROKEN[method]
            marks.append(pytest.mark.xfail(strict=True, raises=raises, reason=reason))
        params.append(pytest.param(method, marks=marks, id=method))
    return params


# -- the account's data ---------------------------------------------------------------------


def other_client(
    sim: Simulator, side: str, direction: str, kind: str, qty: str, *, price: str | None = None
) -> Any:
    """An order another client of the same account places (the web page): the drop-in
    learns of it only from the stream."""
    request = OrderRequest(
        "BTCUSDT", side, direction, kind, Decimal(qty), None if price is None else Decimal(price)
    )

    def place(engine: Any, now: int) -> Any:
        return engine.place(request, now, origin="web")[1]

    return sim.act(sim.account(), place)


@pytest.fixture
async def exchange(sim: Simulator) -> AsyncIterator[Any]:
    """The drop-in as ccxt's runner sets an exchange up (``enableRateLimit``, a 30 s
    timeout, ``fetchHistoryCacheSize`` 5), its stream up, and an account with a history:
    resting orders of both clients, a position and fills the other client made."""
    await sim.set_price("BTCUSDT", "100000")
    await sim.set_price("ETHUSDT", "3000")
    # sideWait: ccxt's tests require a side on every trade, and another client's order
    # gets one within sideWait; on a loaded machine its lookup took longer than the 0.25 s
    # default (a side None, reported as side_unknown, as designed: not what these test)
    exchange = make_exchange(sim, options={"sideWait": 5.0}, enableRateLimit=True, timeout=30000)
    exchange.fetchHistoryCacheSize = exchange.fetch_history_cache_size = 5
    try:
        await exchange.load_markets()
        await asyncio.wait_for(exchange.watch_balance(), HANG)  # the stream is up
        await exchange.create_order(BTC, "limit", "buy", 0.002, 90000)
        await other_client(sim, SELL, OPEN, LIMIT, "0.002", price="110000")
        await other_client(sim, BUY, OPEN, MARKET, "0.003")
        await other_client(sim, SELL, CLOSE, MARKET, "0.001")
        yield exchange
    finally:
        await exchange.close()


async def keep_trading(sim: Simulator, exchange: Any) -> None:
    """Until cancelled: both clients trade (orders, fills, the position, the wallet
    change) and the market moves (the public streams' updates)."""
    while True:
        await other_client(sim, BUY, OPEN, MARKET, "0.001")
        placed = await exchange.create_order(BTC, "limit", "sell", 0.001, 120000)
        await sim.tick_market()
        await asyncio.sleep(0.1)
        await exchange.cancel_order(placed["id"], BTC)
        await other_client(sim, SELL, CLOSE, MARKET, "0.001")
        await sim.tick_market()
        await asyncio.sleep(0.1)


@pytest.mark.parametrize("method", case_params())
async def test_ccxt_own_test_passes(sim: Simulator, exchange: Any, method: str) -> None:
    function = ccxt_function(method)
    args = runner_args(method, function, exchange)
    loop = asyncio.get_running_loop()
    # skipped_properties: {} (ccxt's skip list has no entry for a third-party class)
    test = loop.create_task(asyncio.wait_for(function(exchange, {}, *args), HANG))
    if not method.startswith("watch"):
        await test
        return
    driver = loop.create_task(keep_trading(sim, exchange))
    try:
        await asyncio.wait({test, driver}, return_when=asyncio.FIRST_COMPLETED)
        if driver.done():  # the data stopped: say why, rather than wait for the bound
            test.cancel()
            driver.result()
            pytest.fail("the simulator's driver stopped")
        await test
    finally:
        for task in (driver, test):
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task


# -- the harness itself ---------------------------------------------------------------------


def test_every_has_true_method_with_a_ccxt_test_runs() -> None:
    """From ccxt's directories, independently of :func:`cases`: every test file whose
    method ``has`` is true runs, or is in :data:`NOT_RUN` with a reason."""
    has = has_true()
    shipped = {
        path.stem.removeprefix("test_")
        for _, folder in (REST_TESTS, WS_TESTS)
        for path in folder.glob("test_*.py")
    }
    tested = {m for m in has if snake(m) in shipped}
    assert set(NOT_RUN) <= tested, "a NOT_RUN entry is no longer a has-true method with a test"
    assert tested - set(NOT_RUN) <= set(cases())
    assert set(ALWAYS) <= set(cases())
    # the ones the issue names: test_features, test_create_order and the private watches
    assert {"features", "createOrder", "watchBalance", "watchOrders"} <= set(cases())
    assert {"watchPositions", "watchMyTrades"} <= set(cases())


#: the public streams the issue names
PUBLIC_WATCHES = (
    "watchTicker",
    "watchTickers",
    "watchOrderBook",
    "watchOrderBookForSymbols",
    "watchTrades",
    "watchTradesForSymbols",
    "watchOHLCV",
    "watchOHLCVForSymbols",
)


def test_the_public_watches_run_with_the_runners_arguments() -> None:
    """ccxt ships a test for each public ``watch_*``; ``has`` is true for each, so each
    runs here, with the arguments ccxt's runner gives it."""
    assert all(ccxt_test_file(m) is not None for m in PUBLIC_WATCHES)
    assert set(PUBLIC_WATCHES) <= set(cases())

    exchange = SimpleNamespace(currencies={"BTC": {}, "USDT": {}})

    def args(method: str) -> list[Any]:
        return runner_args(method, ccxt_function(method), exchange)

    assert args("watchOrderBookForSymbols") == [[BTC, "ETH/USDT:USDT"]]
    assert args("watchOHLCVForSymbols") == [BTC]
    assert args("watchTicker") == [BTC]
    assert args("watchBalance") == ["BTC"]
