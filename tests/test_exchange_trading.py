"""Trading through the drop-in, against the simulator's matching engine over loopback: orders
placed, filled, partly filled and cancelled; what ``watch_*`` report checked against the
simulator's ground truth (``sim.engine()``) and by ccxt's own validators; exact sums of
trades; a gap during trading that loses no fill and duplicates none.

The simulator is quiet (no script, no timers): nothing moves but what a test does. Waiting
is for what a test means (an order's state, a sum reached), never for time; the
``wait_for`` bounds only turn a hang into a failure.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from decimal import Decimal
from typing import Any

import ccxt
import pytest
from ccxt.test.exchange.base.test_balance import test_balance as ccxt_balance
from ccxt.test.exchange.base.test_order import test_order as ccxt_order
from ccxt.test.exchange.base.test_position import test_position as ccxt_position
from ccxt.test.exchange.base.test_trade import test_trade as ccxt_trade

from bitmusa_plugin._ccxt import trading as bm_trading
from bitmusa_plugin._engine import rest as bm_rest
from bitmusa_plugin.simulator import Simulator
from bitmusa_plugin.simulator._engine import Engine
from ccxt_reference import POSITION_SKIPPED, ccxt_test, check_leverage, make_exchange

# time_scale 1: a listenKey lasts a real hour, so no lapse is a gap a test did not make
pytestmark = pytest.mark.bitmusa_simulator(script=False, event_interval=None, seed=7, time_scale=1)

BTC = "BTC/USDT:USDT"
ETH = "ETH/USDT:USDT"
#: the simulator's order states, as ccxt's
STATUS = {"TRADING": "open", "PARTIAL": "open", "FILLED": "closed", "CANCELLED": "canceled"}
#: a bound that only turns a hang into a failure
HANG = 20


def D(value: Any) -> Decimal:
    """A float of ccxt's, as the decimal it prints as (ccxt parses exact strings)."""
    return Decimal(repr(value)) if isinstance(value, float) else Decimal(value)


@pytest.fixture
async def exchange(sim: Simulator) -> AsyncIterator[Any]:
    await sim.set_price("BTCUSDT", "100000")
    await sim.set_price("ETHUSDT", "3000")
    exchange = make_exchange(sim)
    try:
        await exchange.load_markets()
        await asyncio.wait_for(exchange.watch_balance(), HANG)  # the stream is up
        yield exchange
    finally:
        await exchange.close()


async def until(
    watch: Callable[[], Awaitable[Any]], done: Callable[[], bool], bound: float = HANG
) -> None:
    """Call ``watch`` (a ``watch_*``) until ``done()`` holds."""

    async def loop() -> None:
        while not done():
            await watch()

    await asyncio.wait_for(loop(), bound)


def latest_orders(exchange: Any) -> dict[str, dict[str, Any]]:
    """The orders cache's latest state of each order."""
    return {order["id"]: order for order in exchange.orders or ()}


def agrees(exchange: Any, engine: Engine, ids: list[str]) -> bool:
    """The stream's last word on each order is the engine's: status and exact fill."""
    seen = latest_orders(exchange)
    for order_id in ids:
        truth, order = engine.orders[order_id], seen.get(order_id)
        if order is None or order["status"] != STATUS[truth.status]:
            return False
        if D(order["filled"]) != truth.traded:
            return False
    return True


def trades_of(exchange: Any, order_id: str) -> list[dict[str, Any]]:
    return [t for t in exchange.myTrades or () if t["order"] == order_id]


def trades_sum_up(exchange: Any, engine: Engine, ids: list[str]) -> bool:
    for order_id in ids:
        trades = trades_of(exchange, order_id)
        if sum((D(t["amount"]) for t in trades), Decimal(0)) != engine.orders[order_id].traded:
            return False
    return True


def validate_order(exchange: Any, order: dict[str, Any]) -> None:
    ccxt_order(exchange, {}, "watchOrders", order, order["symbol"], exchange.milliseconds())


async def test_orders_fill_partly_wholly_and_cancel_as_the_engine_says(
    sim: Simulator, exchange: Any
) -> None:
    engine = sim.engine()
    # a limit buy rests; the market reaches it for 0.004, then for the rest
    rests = await exchange.create_order(BTC, "limit", "buy", 0.01, 99000)
    validate_order(exchange, rests)
    assert rests["info"]["request"]["order_qty"] == "0.01"  # a decimal string, rounded
    assert rests["info"]["request"]["order_price"] == "99000"
    buy = rests["id"]
    await until(exchange.watch_orders, lambda: agrees(exchange, engine, [buy]))
    await sim.set_price("BTCUSDT", "99000", volume="0.004")
    await until(exchange.watch_orders, lambda: agrees(exchange, engine, [buy]))
    partial = latest_orders(exchange)[buy]
    assert (partial["status"], partial["filled"], partial["remaining"]) == ("open", 0.004, 0.006)
    assert (await exchange.fetch_order(buy))["filled"] == 0.004  # open: from REST
    await sim.set_price("BTCUSDT", "98990")
    # a market sell fills at once and reduces the long
    sold = await exchange.create_order(BTC, "market", "sell", 0.006, None, {"reduceOnly": True})
    # a limit sell partly fills, then is cancelled; another never fills and is cancelled
    rest_sell = await exchange.create_order(BTC, "limit", "sell", 0.003, 99500)
    never = await exchange.create_order(BTC, "limit", "buy", 0.002, 90000)
    await sim.set_price("BTCUSDT", "99500", volume="0.001")
    ids = [buy, sold["id"], rest_sell["id"], never["id"]]
    await until(exchange.watch_orders, lambda: agrees(exchange, engine, ids[:3]))
    canceled = await exchange.cancel_order(rest_sell["id"], BTC)
    assert (canceled["status"], canceled["filled"]) == ("canceled", 0.001)  # the stream's
    await exchange.cancel_order(never["id"])
    await until(exchange.watch_orders, lambda: agrees(exchange, engine, ids))
    await until(exchange.watch_my_trades, lambda: trades_sum_up(exchange, engine, ids))
    await until(
        exchange.watch_balance,
        lambda: D(exchange.balance["USDT"]["free"]) == engine.free,
    )

    # watch_orders: every order as the engine has it, each valid for ccxt
    orders = latest_orders(exchange)
    assert {engine.orders[i].status for i in ids} == {"FILLED", "CANCELLED"}
    for order_id in ids:
        order, truth = orders[order_id], engine.orders[order_id]
        validate_order(exchange, order)
        assert order["side"] == truth.side.lower()
        assert (D(order["amount"]), D(order["filled"])) == (truth.amount, truth.traded)
        assert D(order["cost"] or 0) == truth.value
        # watch_my_trades: the trades of each order sum to its filled and cost, exactly
        trades = trades_of(exchange, order_id)
        assert sum((D(t["amount"]) for t in trades), Decimal(0)) == D(order["filled"])
        assert sum((D(t["cost"]) for t in trades), Decimal(0)) == truth.value
        assert all(t["side"] == order["side"] for t in trades)
    assert orders[never["id"]]["filled"] == 0
    assert not trades_of(exchange, never["id"])
    # fetch_order: a finished order from the stream's cache; a stranger is OrderNotFound
    assert (await exchange.fetch_order(sold["id"]))["status"] == "closed"
    with pytest.raises(ccxt.OrderNotFound, match="not open"):
        await exchange.fetch_order("F1700000000000123")
    now = exchange.milliseconds()
    for trade in exchange.myTrades:
        ccxt_trade(exchange, {}, "watchMyTrades", trade, BTC, now, False)
    assert len({t["id"] for t in exchange.myTrades}) == len(exchange.myTrades)

    # fetch_my_trades: one trade per fill of the engine, with its fee and role
    history = await exchange.fetch_my_trades(BTC)
    assert sorted((t["order"], D(t["amount"])) for t in history) == sorted(
        (f.order_id, f.qty) for f in engine.fills
    )
    fees = {str(f.trade_id): f.fee for f in engine.fills}
    assert {t["id"]: D(t["fee"]["cost"]) for t in history} == fees
    assert {t["takerOrMaker"] for t in history} == {"maker", "taker"}
    assert await ccxt_test("fetch_my_trades")(exchange, {}, BTC)

    # watch_positions and watch_balance: the engine's position and wallet
    (held,) = engine.positions.values()
    await until(
        exchange.watch_positions,
        lambda: any(D(p["contracts"]) == held.amount for p in exchange.positions),
    )
    (position,) = [p for p in exchange.positions if p["symbol"] == BTC]
    assert (position["side"], D(position["contracts"])) == ("long", held.amount)
    assert D(position["entryPrice"]) == held.entry
    ccxt_position(exchange, dict(POSITION_SKIPPED), "watchPositions", position, BTC, now)
    balance = exchange.balance
    ccxt_balance(exchange, {}, "watchBalance", balance)
    assert (D(balance["USDT"]["free"]), D(balance["USDT"]["used"])) == (
        engine.free,
        engine.locked,
    )
    # and REST says the same, valid for ccxt
    assert await ccxt_test("fetch_balance")(exchange, {})
    assert await ccxt_test("fetch_positions")(exchange, {}, BTC)
    assert await ccxt_test("fetch_open_orders")(exchange, {}, BTC)
    assert await exchange.fetch_open_orders(BTC) == []


async def test_a_gap_during_trading_loses_no_fill_and_duplicates_none(
    sim: Simulator, exchange: Any
) -> None:
    engine = sim.engine()
    first = await exchange.create_order(BTC, "limit", "buy", 0.01, 99000)
    second = await exchange.create_order(BTC, "limit", "buy", 0.004, 98000)
    ids = [first["id"], second["id"]]
    await sim.set_price("BTCUSDT", "99000", volume="0.003")
    await until(exchange.watch_my_trades, lambda: trades_sum_up(exchange, engine, ids))

    # the connection drops, and stays down while fills happen
    sim.refuse(10_000)
    assert sim.drop() == 1
    await sim.set_price("BTCUSDT", "98900", volume="0.005")  # first: 0.008 of 0.01
    await sim.set_price("BTCUSDT", "97000")  # first filled; second filled
    assert engine.orders[first["id"]].status == engine.orders[second["id"]].status == "FILLED"
    missed = [f for f in engine.fills if f.order_id in ids]
    assert not trades_sum_up(exchange, engine, ids)  # the stream has not told them yet
    sim.accept()

    await until(exchange.watch_my_trades, lambda: trades_sum_up(exchange, engine, ids))
    await until(exchange.watch_orders, lambda: agrees(exchange, engine, ids))
    after = await exchange.create_order(BTC, "market", "sell", 0.002)  # and trading goes on
    ids.append(after["id"])
    await until(exchange.watch_my_trades, lambda: trades_sum_up(exchange, engine, ids))

    trades = list(exchange.myTrades)
    assert len({t["id"] for t in trades}) == len(trades)  # none twice
    for order_id in ids:
        truth = engine.orders[order_id]
        mine = trades_of(exchange, order_id)
        assert sum((D(t["amount"]) for t in mine), Decimal(0)) == truth.traded
        assert sum((D(t["cost"]) for t in mine), Decimal(0)) == truth.value
    # the outage's fills came back from the trade history: with their fee and role
    recovered = [t for t in trades if t["order"] in ids[:2] and t["takerOrMaker"] is not None]
    assert recovered
    assert all(t["fee"] is not None for t in recovered)
    assert len(missed) >= 3


async def test_orders_carry_reduce_only_post_only_and_triggers(
    sim: Simulator, exchange: Any
) -> None:
    engine = sim.engine()
    await exchange.create_order(BTC, "market", "buy", 0.01)
    order = await exchange.create_order(
        BTC,
        "limit",
        "buy",
        0.0123456,
        98765.4321,
        {
            "postOnly": True,
            "takeProfit": {"triggerPrice": 105000.04},
            "stopLoss": {"triggerPrice": 95000, "price": 94999.99, "priceType": "mark"},
        },
    )
    body = order["info"]["request"]
    assert (body["order_qty"], body["order_price"]) == ("0.012", "98765.4")  # ccxt's rounding
    assert (body["is_post_only"], body["order_type"]) == (True, 1)
    assert (body["take_profit_trigger_price"], body["take_profit_order_type"]) == ("105000", 0)
    assert (body["stop_loss_order_price"], body["stop_loss_trigger_type"]) == ("95000", 1)
    placed = engine.orders[order["id"]]
    assert (placed.post_only, placed.amount, placed.price) == (True, D("0.012"), D("98765.4"))
    assert placed.take_profit is not None
    assert placed.stop_loss is not None
    assert (order["takeProfitPrice"], order["stopLossPrice"]) == (105000.0, 95000.0)
    validate_order(exchange, order)
    # a partial take-profit (ccxt's takeProfitAmount) cannot be expressed: refused, not sent
    # for the whole amount
    orders_before = len(engine.orders)
    with pytest.raises(ccxt.NotSupported, match="'amount'"):
        await exchange.create_order_with_take_profit_and_stop_loss(
            BTC, "limit", "buy", 0.01, 90000, 110000, None, {"takeProfitAmount": 0.005}
        )
    assert len(engine.orders) == orders_before
    # a post-only order that would take is cancelled, never filled (docs/ccxt.md)
    crossing = await exchange.create_order(BTC, "limit", "buy", 0.001, 100500, {"postOnly": True})
    await until(
        exchange.watch_orders,
        lambda: latest_orders(exchange).get(crossing["id"], {}).get("status") == "canceled",
    )
    assert engine.orders[crossing["id"]].traded == 0
    # reduce-only closes: no more than the position (0.01 long)
    closing = await exchange.create_order(BTC, "market", "sell", 0.02, None, {"reduceOnly": True})
    assert engine.orders[closing["id"]].direction == "CLOSE"
    assert engine.orders[closing["id"]].traded == D("0.01")
    assert not engine.positions
    for refused, params in (
        ("timeInForce", {"timeInForce": "IOC"}),
        ("stopLossPrice", {"stopLossPrice": 90000}),
        ("clientOrderId", {"clientOrderId": "mine"}),
    ):
        with pytest.raises(ccxt.NotSupported, match=refused):
            await exchange.create_order(BTC, "limit", "buy", 0.001, 90000, params)
    with pytest.raises(ccxt.NotSupported, match="cancel it and create another"):
        await exchange.edit_order(order["id"], BTC, "limit", "buy", 0.001, 90000)


async def test_cancel_all_and_close_positions(sim: Simulator, exchange: Any) -> None:
    engine = sim.engine()
    await exchange.create_order(BTC, "market", "buy", 0.01)
    await exchange.create_order(ETH, "market", "sell", 0.1)
    await exchange.create_order(BTC, "limit", "buy", 0.001, 90000)
    await exchange.create_order(ETH, "limit", "sell", 0.1, 3500)
    assert await exchange.cancel_all_orders(BTC) == []  # Bitmusa does not say which
    assert [o.ticker for o in engine.open_orders.values()] == ["ETHUSDT"]
    await exchange.cancel_all_orders()
    assert not engine.open_orders
    closed = await exchange.close_position(BTC)
    assert (closed["symbol"], closed["reduceOnly"]) == (BTC, True)
    assert [ticker for ticker, _ in engine.positions] == ["ETHUSDT"]
    with pytest.raises(ccxt.NotSupported, match="every side"):
        await exchange.close_position(ETH, "short")
    assert await exchange.close_all_positions() == []
    assert not engine.positions
    await until(
        exchange.watch_positions,
        lambda: all(p["contracts"] == 0 for p in exchange.positions),
    )


async def test_leverage_and_position_mode(sim: Simulator, exchange: Any) -> None:
    engine = sim.engine()
    await exchange.set_leverage(20, BTC)
    leverage = await exchange.fetch_leverage(BTC)
    check_leverage(exchange, leverage, BTC)
    assert (leverage["longLeverage"], leverage["shortLeverage"]) == (20, 20)
    assert engine.leverages["BTCUSDT"]["ONEWAY"] == 20
    with pytest.raises(ccxt.BadRequest, match="1 to 125"):
        await exchange.set_leverage(126, BTC)
    for wrong in (2.5, "ten", None):
        with pytest.raises(ccxt.BadRequest, match="a whole number"):
            await exchange.set_leverage(wrong, BTC)
    await exchange.set_leverage("8", BTC)  # as a string, as config files give it
    assert engine.leverages["BTCUSDT"]["ONEWAY"] == 8
    await exchange.set_leverage(20, BTC)
    with pytest.raises(ccxt.ArgumentsRequired):
        await exchange.set_leverage(5)

    assert (await exchange.fetch_position_mode(BTC))["hedged"] is False
    await exchange.set_position_mode(True, BTC)
    assert engine.modes["BTCUSDT"] == "HEDGE"
    assert (await exchange.fetch_position_mode(BTC))["hedged"] is True
    await exchange.set_leverage(7, BTC, {"side": "short"})
    hedged = await exchange.fetch_leverage(BTC)
    check_leverage(exchange, hedged, BTC)
    assert (hedged["longLeverage"], hedged["shortLeverage"]) == (10, 7)  # per type
    await exchange.set_position_mode(False)  # no symbol: every market
    assert set(engine.modes.values()) == {"ONEWAY"}


async def test_the_first_order_waits_for_the_stream_so_its_fill_is_seen(sim: Simulator) -> None:
    """An order placed before any watch: the stream starts, and the POST waits for its
    connection (else the fill would happen unseen, and be a start-up state, not a trade)."""
    await sim.set_price("BTCUSDT", "100000")
    exchange = make_exchange(sim)
    try:
        order = await exchange.create_order(BTC, "market", "buy", 0.002)
        trades = await asyncio.wait_for(exchange.watch_my_trades(BTC), HANG)
        assert [(t["order"], t["amount"], t["side"]) for t in trades] == [
            (order["id"], 0.002, "buy")
        ]
    finally:
        await exchange.close()


async def test_fetch_my_trades_since_reads_back_past_a_full_answer(
    sim: Simulator, exchange: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The history comes newest first, a limited number a call: the first trades after
    ``since`` are behind a full answer, and must be read, not silently cut."""
    engine = sim.engine()
    for _ in range(7):
        await exchange.create_order(BTC, "market", "buy", 0.001)
    base = engine.fills[0].time // 1000 * 1000
    # a second apart: the history's times are whole seconds
    spread = [replace(f, time=base + i * 1000) for i, f in enumerate(engine.fills)]
    engine.fills.clear()
    engine.fills.extend(spread)
    for module in (bm_rest, bm_trading):  # two records a call
        monkeypatch.setattr(module, "HISTORY_PAGE", 2)
        monkeypatch.setattr(module, "HISTORY_PAGES", 1)
    got = await exchange.fetch_my_trades(BTC, since=base + 1000, limit=3)
    assert [t["timestamp"] for t in got] == [base + 1000, base + 2000, base + 3000]
    everything = await exchange.fetch_my_trades(BTC, since=base)
    assert len(everything) == len({t["id"] for t in everything}) == 7
    monkeypatch.setattr(bm_trading, "_HISTORY_ROUNDS", 2)
    with pytest.raises(ccxt.ExchangeError, match="fills since"):
        await exchange.fetch_my_trades(BTC, since=base)  # more than 2 calls' worth: said


async def test_verbose_prints_each_request_and_answer_as_ccxt_does_and_never_a_secret(
    sim: Simulator, capsys: pytest.CaptureFixture[str]
) -> None:
    """ccxt's ``verbose``: every REST call on the drop-in's pool (its own, and the stream's
    listenKey POST) printed as ccxt's ``fetch`` prints it, the keys and listenKeys masked;
    nothing while it is off."""
    from bitmusa_plugin.simulator import DEMO_API_KEY, DEMO_AUTH_KEY

    await sim.set_price("BTCUSDT", "100000")
    exchange = make_exchange(sim)
    try:
        await exchange.load_markets()
        assert capsys.readouterr().out == ""  # off by default
        exchange.verbose = True
        await exchange.fetch_ticker(BTC)
        await asyncio.wait_for(exchange.watch_balance(), HANG)  # the stream: POST listenKey
        key = sim.account().key
        order = await exchange.create_order(BTC, "limit", "buy", 0.001, 90000)
        out = capsys.readouterr().out

        def broken(*parts: Any) -> None:
            raise UnicodeEncodeError("ascii", "\uc8fc", 0, 1, "a terminal that cannot")

        exchange.log = broken  # printing fails: the calls do not
        assert (await exchange.fetch_ticker(BTC))["symbol"] == BTC
        exchange.verbose = False
        await exchange.cancel_order(order["id"], BTC)
        assert "RequestBody" not in capsys.readouterr().out
    finally:
        await exchange.close()
    lines = [line for line in out.splitlines() if line]
    requests = [line for line in lines if line.startswith("fetch Request: bitmusa ")]
    answers = [line for line in lines if line.startswith("fetch Response: bitmusa ")]
    assert any(" GET " in r and "/future/market?symbol=BTCUSDT" in r for r in requests)
    assert any(" POST " in r and "userDataStream" in r for r in requests), requests
    assert any(" POST " in r and "ticker" in r and "RequestBody: {" in r for r in requests)
    assert any(" GET " in a and "/future/market?symbol=BTCUSDT" in a for a in answers)
    assert any(" POST " in a and a.endswith('"data":"' + order["id"] + '"}') for a in answers)
    assert all(" 200 " in a for a in answers), answers
    assert any('"listenKey":"***"' in a.replace(" ", "") for a in answers), answers
    assert key is not None
    for secret in (DEMO_API_KEY, DEMO_AUTH_KEY, key):
        assert secret not in out
    assert "'x-api-key': '***'" in out.lower()


async def test_a_moved_price_leaves_rest_positions_margins_as_ccxt_defines_them(
    sim: Simulator, exchange: Any
) -> None:
    """ccxt's ``collateral`` is the margin plus the unrealized PnL, and ``positionMargin``
    what the position posted: once the price has moved, a collateral that is the bare
    margin fails ccxt's isolated-margin check (remaining collateral at the liquidation
    price against ``maintenanceMargin``)."""
    engine = sim.engine()
    await exchange.create_order(ETH, "market", "sell", 1.0)
    await sim.set_price("ETHUSDT", "3010", volume=0)
    await exchange.create_order(ETH, "market", "sell", 0.8)  # margin != value / leverage
    await sim.set_price("ETHUSDT", "2900", volume=0)  # a short's PnL
    (held,) = engine.positions.values()
    upnl = engine.unrealized(held)
    assert upnl > 0
    (position,) = [p for p in await exchange.fetch_positions() if p["symbol"] == ETH]
    assert D(position["unrealizedPnl"]) == upnl
    assert D(position["positionMargin"]) == held.margin
    assert D(position["collateral"]) == held.margin + upnl
    assert D(position["maintenanceMargin"]) == engine.maintenance_margin(held)
    assert await ccxt_test("fetch_positions")(exchange, {}, ETH)
