"""The ccxt drop-in against the simulator: ccxt.pro semantics, ccxt's validators."""

from __future__ import annotations

import asyncio
import importlib.util
import itertools
import os
from typing import Any

import ccxt
import ccxt.pro
import orjson
import pytest

import bitmusa_plugin
from bitmusa_plugin import load_exchange
from bitmusa_plugin._ccxt import SUPPORTED, PositionsCache, bitmusa
from bitmusa_plugin.simulator import DEMO_API_KEY, DEMO_AUTH_KEY, Simulator
from ccxt_reference import Reference, ccxt_test, make_exchange, validate
from conftest import ROOT

FAST_TIMING = {"retry_initial": 0.05, "retry_max": 0.3, "stable_after": 0.3}


# time_scale 60: a listenKey lasts a real minute (the fixture's 3600 makes it a second,
# and without a keep-alive that often, a key lapsing mid-test is a gap some tests do not
# expect: seen as a flaky order status)
pytestmark = pytest.mark.bitmusa_simulator(event_interval=0.01, seed=21, time_scale=60)


def make(sim: Simulator, **config: Any) -> bitmusa:
    base: dict[str, Any] = {
        "apiKey": DEMO_API_KEY,
        "secret": DEMO_AUTH_KEY,
        "urls": {"api": {"rest": sim.rest_url, "ws": sim.ws_url}},
        "options": {"timing": FAST_TIMING, "heartbeat": [0.2, 0.4]},
    }
    base.update(config)
    exchange = load_exchange("bitmusa", base)
    assert isinstance(exchange, bitmusa)
    return exchange


def test_the_class_describes_what_works() -> None:
    exchange = bitmusa()
    assert bitmusa_plugin.bitmusa is bitmusa
    assert isinstance(exchange, ccxt.async_support.Exchange)
    assert exchange.id == "bitmusa"
    assert exchange.pro is True
    true = {k for k, v in exchange.has.items() if v is True}
    assert true == SUPPORTED  # tests/test_exchange_*.py exercise each one
    assert {v for k, v in exchange.has.items() if k not in SUPPORTED} == {False}
    required = {k for k, v in exchange.requiredCredentials.items() if v}
    assert required == {"apiKey", "secret"}
    assert callable(exchange.watchOrders)  # ccxt's camelCase aliases
    assert callable(exchange.fetchOpenOrders)
    with pytest.raises(ccxt.AuthenticationError, match='requires "apiKey"'):
        exchange.check_required_credentials()


def test_load_exchange_finds_ccxt_pro_ids_and_registered_adapters() -> None:
    binance = load_exchange("binanceusdm", {"apiKey": "k", "secret": "s"})
    assert isinstance(binance, ccxt.pro.binanceusdm)  # constructed only, no network
    assert isinstance(load_exchange("bitmusa"), bitmusa)
    with pytest.raises(ccxt.ExchangeNotAvailable) as raised:
        load_exchange("no-such-exchange")
    assert "bitmusa" in str(raised.value)
    assert "binanceusdm" in str(raised.value)


async def test_watch_and_fetch_give_validator_clean_unified_objects(sim: Simulator) -> None:
    exchange = make(sim)
    ref = Reference()
    try:
        balance = await exchange.watch_balance()
        validate(ref, "on_wallet", balance)
        orders: list[dict[str, Any]] = []
        positions: list[dict[str, Any]] = []
        while len(orders) < 30 or not positions:
            orders += await asyncio.wait_for(exchange.watch_orders(), 5)
            if not positions:
                positions = await asyncio.wait_for(exchange.watch_positions(), 5)
        for order in orders:
            validate(ref, "on_order", order)
        for position in positions:
            validate(ref, "on_position", position)
        validate(ref, "on_wallet", await exchange.fetch_balance())
        sim.paused = True  # compare the snapshot with the exchange at one moment
        await asyncio.sleep(0.1)
        open_orders = await exchange.fetch_open_orders()
        for order in open_orders:
            validate(ref, "on_order", order)
            assert order["status"] == "open"
        assert {o["id"] for o in open_orders} == set(sim.account().scenario.orders)
        for position in await exchange.fetch_positions():
            validate(ref, "on_position", position)
        markets = await exchange.load_markets()
        assert all(m["contractSize"] == 1 and m["linear"] for m in markets.values())
        assert all(symbol.endswith(":USDT") for symbol in markets)
    finally:
        await exchange.close()
    assert sim.account().deletes == 1  # close() ended the stream cleanly


async def test_no_update_is_lost_between_two_watch_orders_calls(sim: Simulator) -> None:
    """Updates that come while the bot is busy elsewhere wait for its next call. The orders
    are another client's, so each waits up to ``sideWait`` for its side: the last burst's
    may come on a later call than the one right after it, never not at all."""

    def truth() -> dict[str, tuple[Any, Any]]:
        ref = Reference()
        last: dict[str, tuple[Any, Any]] = {}
        for frame in sim.sent:
            if frame.conns and '"future_order"' in frame.text:
                order = ref.parse_frame(orjson.loads(frame.text))[1]
                last[order["id"]] = (order["status"], order["filled"])
        return last

    sim.paused = True
    exchange = make(sim)
    latest: dict[str, tuple[Any, Any]] = {}
    try:
        await exchange.watch_balance()  # the stream is up
        for _ in range(5):
            await sim.emit(count=40)  # a burst while the bot is busy elsewhere
            await asyncio.sleep(0.3)
            for order in await asyncio.wait_for(exchange.watch_orders(), 5):
                latest[order["id"]] = (order["status"], order["filled"])
        sent = truth()  # paused: nothing is sent after the bursts
        assert sent
        while latest != sent:  # each call brings more, or times out (lost): bounded
            for order in await asyncio.wait_for(exchange.watch_orders(), 5):
                latest[order["id"]] = (order["status"], order["filled"])
    finally:
        await exchange.close()
    assert latest == truth()  # the last state of every order reached the bot


async def test_positions_cache_keeps_one_row_per_symbol_for_one_way_accounts() -> None:
    cache = PositionsCache()
    long = {"symbol": "XRP/USDT:USDT", "side": "long", "contracts": 1.0, "hedged": False}
    cache.append(long)
    cache.append(dict(long, contracts=0.0))  # closed
    cache.append(dict(long, side="short", contracts=2.0))  # reopened on the other side
    assert [(p["side"], p["contracts"]) for p in cache] == [("short", 2.0)]
    hedged = PositionsCache()
    hedged.append(dict(long, hedged=True))
    hedged.append(dict(long, side="short", hedged=True))
    assert len(hedged) == 2  # hedged accounts do hold both sides


async def test_closed_positions_leave_no_stale_rows(sim: Simulator) -> None:
    """Once the account stops moving, the cache's open rows are the engine's positions,
    one row per symbol. The last updates land within a bound: a position that opened just
    before the pause waits for its market's first price, which a paused market does not
    send, so up to ``publicWindow`` (10 s) before it goes out unpriced."""

    def open_rows() -> dict[str, tuple[Any, Any]]:
        return {p["symbol"]: (p["side"], p["contracts"]) for p in rows if p["contracts"]}

    exchange = make(sim)
    try:
        for _ in range(40):
            await asyncio.wait_for(exchange.watch_positions(), 5)
        sim.paused = True
        scenario = sim.account().scenario.positions
        expected = {
            t[:-4] + "/USDT:USDT": ("long" if p.side == "BUY" else "short", float(p.amount))
            for t, p in scenario.items()
        }
        for _ in range(300):  # bounded: 15 s
            rows = list(exchange.positions)
            if open_rows() == expected:
                break
            await asyncio.sleep(0.05)
    finally:
        await exchange.close()
    symbols = [p["symbol"] for p in rows]
    assert len(symbols) == len(set(symbols))  # one row per symbol
    assert open_rows() == expected  # every row is current: no stale row beside a new one


async def test_an_outage_heals_silently_and_resync_catches_up(sim: Simulator) -> None:
    exchange = make(sim)
    try:
        await exchange.watch_balance()
        sim.refuse(30)
        sim.drop()
        await asyncio.sleep(0.8)  # trading goes on while the bot is cut off
        sim.accept()
        for _ in range(3):  # no exception: transient trouble is the engine's business
            await asyncio.wait_for(exchange.watch_orders(), 5)
        sim.paused = True
        expected = set(sim.account().scenario.orders)

        def open_ids() -> set[str]:
            return {o["id"] for o in exchange.orders if o["status"] == "open"}

        # the last frames may still be on their way, or an order of the scenario (another
        # client's) held for its side (options.sideWait): caught up within a bound
        for _ in range(500):
            if open_ids() == expected:
                break
            await asyncio.sleep(0.01)
        caught_up = open_ids()
    finally:
        await exchange.close()
    assert caught_up == expected


@pytest.mark.parametrize(
    ("fault", "error"),
    [
        ("1001", ccxt.AuthenticationError),
        ("1002", ccxt.PermissionDenied),
        ("1005", ccxt.PermissionDenied),
    ],
)
async def test_permanent_failures_raise_ccxt_errors_with_the_code(
    sim: Simulator, fault: Any, error: type[Exception]
) -> None:
    sim.fail_rest(fault)
    exchange = make(sim)
    try:
        with pytest.raises(error, match=f"bitmusa {fault}"):
            await asyncio.wait_for(exchange.watch_orders(), 5)
        with pytest.raises(error):  # and again, at once
            await asyncio.wait_for(exchange.watch_balance(), 1)
    finally:
        await exchange.close()


async def test_bad_credentials_raise_authentication_error(sim: Simulator) -> None:
    exchange = make(sim, apiKey="wrong", secret="wrong-too")
    try:
        with pytest.raises(ccxt.AuthenticationError, match="1001"):
            await asyncio.wait_for(exchange.watch_orders(), 5)
        with pytest.raises(ccxt.AuthenticationError, match="1001"):
            await exchange.fetch_balance()
    finally:
        await exchange.close()


async def test_the_multi_exchange_bot_runs_against_the_simulator(
    sim: Simulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BITMUSA_API_KEY", DEMO_API_KEY)
    monkeypatch.setenv("BITMUSA_SECRET", DEMO_AUTH_KEY)
    monkeypatch.setenv("BITMUSA_REST_URL", sim.rest_url)
    monkeypatch.setenv("BITMUSA_WS_URL", sim.ws_url)
    for name in ("BINANCEUSDM_API_KEY", "BINANCEUSDM_SECRET"):
        monkeypatch.delenv(name, raising=False)
    spec = importlib.util.spec_from_file_location(
        "bot", ROOT / "examples" / "multi_exchange_bot.py"
    )
    assert spec is not None
    assert spec.loader is not None
    bot = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bot)
    seen = await asyncio.wait_for(bot.main(["bitmusa", "binanceusdm"], updates=5), 20)
    assert len(seen) >= 5
    assert all(line.startswith("bitmusa") for line in seen)
    assert os.environ.get("BINANCEUSDM_API_KEY") is None
    # --trade: the same code places, watches and cancels an order
    traded = await asyncio.wait_for(bot.main(["bitmusa", "binanceusdm"], trade=True), 20)
    (placed,) = [o for o in sim.engine().orders.values() if o.origin == "rest"]
    assert placed.status == "CANCELLED"
    assert placed.traded == 0
    assert [line.split()[3] for line in traded][-1] == "canceled"
    assert "open" in [line.split()[3] for line in traded]
    assert all(line.startswith("bitmusa") for line in traded)


async def test_the_same_handler_serves_hooks_and_the_ccxt_class() -> None:
    spec = importlib.util.spec_from_file_location("same", ROOT / "examples" / "same_handler.py")
    assert spec is not None
    assert spec.loader is not None
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    via_hooks, via_ccxt = await asyncio.wait_for(example.main(2.5), 30)
    assert via_hooks
    assert via_ccxt


@pytest.mark.bitmusa_simulator(script=False, event_interval=None, time_scale=1)
async def test_ccxt_pros_own_watch_my_trades_test_passes(sim: Simulator) -> None:
    """ccxt.pro's ``test_watch_my_trades``, as shipped: it calls ``watch_my_trades`` again
    and again for 15 s of the exchange's clock and runs ccxt's trade validator on each
    batch. Each call is preceded by a market order of this process (the trades of orders
    placed elsewhere have no side: the stream carries none), and the exchange's clock runs
    ten times fast so that ccxt's 15 s take 1.4 (some hundred orders, not thousands)."""
    await sim.set_price("BTCUSDT", "100000")
    exchange = make_exchange(sim)
    real = exchange.milliseconds
    start = real()
    exchange.milliseconds = lambda: real() + 10 * (real() - start)
    watch = exchange.watch_my_trades
    sides = itertools.cycle(["buy", "sell"])
    placed: list[str] = []

    async def trade_then_watch(*args: Any, **kwargs: Any) -> Any:
        order = await exchange.create_order("BTC/USDT:USDT", "market", next(sides), 0.001)
        placed.append(order["id"])
        return await watch(*args, **kwargs)

    exchange.watch_my_trades = trade_then_watch
    try:
        await exchange.load_markets()
        assert await ccxt_test("watch_my_trades")(exchange, {}, "BTC/USDT:USDT")
    finally:
        await exchange.close()
    assert len(placed) >= 2
    assert {t["order"] for t in exchange.myTrades} <= set(placed)
