"""The simulator as a trading exchange: the engine on its own (explicit prices and times,
no sockets), then the REST routes and the user stream over loopback.

Loopback tests run on a quiet simulator (``script=False``, no timers): nothing moves but
what the test does, so every frame and every number is known in advance.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import httpx
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus

from bitmusa_plugin.simulator import DEMO_API_KEY, DEMO_AUTH_KEY, Simulator
from bitmusa_plugin.simulator import _params as p
from bitmusa_plugin.simulator import _records as records
from bitmusa_plugin.simulator._engine import (
    BUY,
    CLOSE,
    LIMIT,
    MARKET,
    OPEN,
    SELL,
    STOP_LOSS,
    TAKE_PROFIT,
    ApiError,
    Engine,
    Frame,
    OrderRequest,
    Trigger,
)
from bitmusa_plugin.simulator._market import Market, bucket_start, period_length

D = Decimal
T0 = 1_800_000_000_000  # 2027-01-15T08:00:00Z
HEADERS = {"x-api-key": DEMO_API_KEY, "Authorization": f"Bearer {DEMO_AUTH_KEY}"}


# -- the engine, pure ----------------------------------------------------------------------------


def make(balance: str = "10000", **engine: Any) -> Engine:
    market = Market(1, backfill=False)
    market.set_price("BTCUSDT", D("100000"), T0)
    market.set_price("ETHUSDT", D("3000"), T0)
    return Engine(market, D(balance), **engine)


def limit(side: str, qty: str, price: str, ticker: str = "BTCUSDT", **kw: Any) -> OrderRequest:
    return OrderRequest(ticker, side, kw.pop("direction", OPEN), LIMIT, D(qty), D(price), **kw)


def market_order(side: str, qty: str, ticker: str = "BTCUSDT", **kw: Any) -> OrderRequest:
    return OrderRequest(ticker, side, kw.pop("direction", OPEN), MARKET, D(qty), **kw)


def move(
    engine: Engine, price: str, at: int, *, volume: str | None = None, **kw: Any
) -> list[Frame]:
    ticker = kw.pop("ticker", "BTCUSDT")
    mark = kw.pop("mark", None)
    engine.market.set_price(ticker, D(price), at, mark=None if mark is None else D(mark))
    return engine.on_tick(at, {ticker: None if volume is None else D(volume)}, tickers=[ticker])


def kinds(frames: list[Frame]) -> list[tuple[str, str | None]]:
    """(stream, status) of each frame."""
    return [(f["stream"], f["data"].get("status")) for f in frames]


def ledger_holds(engine: Engine) -> bool:
    expected = engine.deposits + engine.realized - engine.fees_paid + engine.absorbed
    return engine.free >= 0 and engine.locked >= 0 and engine.balance == expected


def test_a_limit_order_rests_locking_margin_and_the_taker_fee_reserve() -> None:
    engine = make()
    order_id, frames = engine.place(limit(BUY, "0.1", "99000"), T0 + 1)
    # margin 99000 x 0.1 / 10 = 990, reserve 9900 x 0.03 % = 2.97
    assert kinds(frames) == [("future_order", "TRADING"), ("future_wallet", None)]
    assert frames[1]["data"] == {"asset": "USDT", "free": "9007.03", "locked": "992.97"}
    order = engine.open_orders[order_id]
    assert (order.traded, order.locked, order.status) == (D(0), D("992.97"), "TRADING")
    assert order_id.startswith(f"F{T0 + 1}")
    assert len(order_id) == 16
    record = records.open_orders(engine)[0]
    assert record["status"] == 0
    assert (record["order_qty"], record["left_qty"], record["order_price"]) == (0.1, 0.1, 99000.0)
    assert record["order_time"] == "2027-01-15T08:00:00"
    assert ledger_holds(engine)


def test_a_resting_order_fills_partly_then_wholly_as_maker_when_the_price_reaches_it() -> None:
    engine = make()
    order_id, _ = engine.place(limit(BUY, "0.1", "99000"), T0)
    assert move(engine, "99100", T0 + 1, volume="1") == []  # not reached yet
    frames = move(engine, "99000", T0 + 2, volume="0.04")
    assert kinds(frames) == [
        ("future_order", "PARTIAL"),
        ("future_position", "OPEN"),
        ("future_wallet", None),
    ]
    order = frames[0]["data"]
    assert (order["tradedAmount"], order["value"], order["completedTime"]) == (0.04, 3960, None)
    assert frames[1]["data"]["amount"] == "0.04"
    assert frames[1]["data"]["price"] == "99000"
    assert records.open_orders(engine)[0]["status"] == 4  # partly filled
    frames = move(engine, "98900", T0 + 3, volume="5")
    assert kinds(frames)[0] == ("future_order", "FILLED")
    assert frames[0]["data"]["completedTime"] == T0 + 3
    assert frames[0]["data"]["tradedAmount"] == 0.1
    assert order_id not in engine.open_orders
    assert engine.orders[order_id].status == "FILLED"
    fills = list(engine.fills)
    assert [(f.role, f.qty, f.price, f.fee) for f in fills] == [
        ("MAKER", D("0.04"), D("99000"), D("0.792")),  # 3960 x 0.02 %
        ("MAKER", D("0.06"), D("99000"), D("1.188")),
    ]
    position = engine.positions[("BTCUSDT", BUY)]
    assert (position.amount, position.entry, position.margin) == (D("0.1"), D("99000"), D("990"))
    # the lock is gone; the fee difference (taker reserve - maker fee) came back
    assert engine.orders[order_id].fees == D("1.98")
    assert engine.free == D(10000) - D(990) - D("1.98")
    assert engine.locked == D(990)
    assert ledger_holds(engine)


def test_the_volume_fills_the_best_price_first_then_the_oldest() -> None:
    engine = make()
    low, _ = engine.place(limit(BUY, "0.05", "99000"), T0)
    first, _ = engine.place(limit(BUY, "0.05", "99500"), T0 + 1)
    second, _ = engine.place(limit(BUY, "0.05", "99500"), T0 + 2)
    move(engine, "99000", T0 + 3, volume="0.08")
    traded = {o: engine.orders[o].traded for o in (low, first, second)}
    assert traded == {low: D(0), first: D("0.05"), second: D("0.03")}
    sells = [
        engine.place(limit(SELL, "0.01", price, ticker="ETHUSDT"), T0)[0]
        for price in ("3002", "3001")
    ]
    move(engine, "3005", T0 + 4, ticker="ETHUSDT", volume="0.01")
    assert [engine.orders[o].traded for o in sells] == [D(0), D("0.01")]


def test_a_market_order_fills_at_once_at_the_last_price_as_taker() -> None:
    engine = make()
    order_id, frames = engine.place(market_order(SELL, "0.5", ticker="ETHUSDT"), T0)
    assert kinds(frames) == [
        ("future_order", "FILLED"),
        ("future_position", "OPEN"),
        ("future_wallet", None),
    ]
    data = frames[0]["data"]
    assert (data["type"], data["price"], data["tradedAmount"], data["value"]) == (
        "MARKET",
        0,
        0.5,
        1500,
    )
    (fill,) = engine.fills
    assert (fill.role, fill.price, fill.fee) == ("TAKER", D("3000"), D("0.45"))  # 0.03 %
    assert engine.positions[("ETHUSDT", SELL)].margin == D(75)  # 1500 / 20
    assert engine.free == D(10000) - D(75) - D("0.45")
    assert engine.market.trades["ETHUSDT"][-1].side == 1  # on the tape, a sell
    assert order_id not in engine.open_orders


def test_a_crossing_limit_order_takes_at_the_last_price_not_its_own() -> None:
    engine = make()
    _, frames = engine.place(limit(BUY, "0.1", "101000"), T0)
    assert frames[0]["data"]["status"] == "FILLED"
    (fill,) = engine.fills
    assert (fill.role, fill.price) == ("TAKER", D("100000"))
    assert engine.positions[("BTCUSDT", BUY)].entry == D(100000)


def test_a_crossing_post_only_order_is_accepted_then_cancelled_never_filled() -> None:
    engine = make()
    order_id, frames = engine.place(limit(BUY, "0.1", "100000", post_only=True), T0)
    assert kinds(frames) == [("future_order", "CANCELLED")]
    assert frames[0]["data"]["canceledTime"] == T0
    assert frames[0]["data"]["tradedAmount"] == 0
    assert not engine.fills
    assert engine.free == D(10000)
    assert engine.orders[order_id].status == "CANCELLED"
    # one that does not cross rests as usual
    _, frames = engine.place(limit(BUY, "0.1", "99999.9", post_only=True), T0)
    assert frames[0]["data"]["status"] == "TRADING"


def test_closing_realises_the_pnl_and_releases_the_margin() -> None:
    engine = make()
    engine.place(market_order(BUY, "0.1"), T0)
    free_before = engine.free
    move(engine, "101000", T0 + 1)
    order_id, frames = engine.place(market_order(SELL, "0.1", direction=CLOSE), T0 + 2)
    assert kinds(frames) == [
        ("future_order", "FILLED"),
        ("future_position", "USER_CLOSE"),
        ("future_wallet", None),
    ]
    assert frames[0]["data"]["direction"] == "CLOSE"
    position = frames[1]["data"]
    assert (position["closeTime"], position["amount"], position["position"]) == (
        str(T0 + 2),
        "0",
        "BUY",
    )
    assert not engine.positions
    fee = D("3.03")  # 10100 x 0.03 %
    assert engine.free == free_before + D(1000) + D(100) - fee  # margin back, pnl, fee
    assert engine.locked == 0
    fill = engine.fills[-1]
    assert (fill.direction, fill.pnl, fill.order_id) == (CLOSE, D(100), order_id)
    row = records.trade(engine, fill)
    assert (row["direction"], row["position"], row["profit_and_loss"], row["role"]) == (
        "CLOSE",
        "SELL",  # the trade side
        100.0,
        "TAKER",
    )
    assert ledger_holds(engine)


def test_a_reduce_only_order_is_capped_at_the_position_and_the_rest_cancelled() -> None:
    engine = make()
    engine.place(market_order(BUY, "0.01"), T0)
    _, frames = engine.place(market_order(SELL, "0.03", direction=CLOSE, reduce_only=True), T0)
    assert kinds(frames) == [
        ("future_order", "CANCELLED"),
        ("future_position", "USER_CLOSE"),
        ("future_wallet", None),
    ]
    assert frames[0]["data"]["tradedAmount"] == 0.01
    assert frames[0]["data"]["canceledTime"] == T0
    assert engine.fills[-1].qty == D("0.01")
    # a resting one: capped when it fills, after the position shrank meanwhile
    engine.place(market_order(BUY, "0.05"), T0 + 1)
    close_id, _ = engine.place(limit(SELL, "0.05", "100500", direction=CLOSE), T0 + 2)
    engine.place(market_order(SELL, "0.03", direction=CLOSE), T0 + 3)
    frames = move(engine, "100500", T0 + 4, volume="1")
    assert frames[0]["data"]["status"] == "CANCELLED"
    assert frames[0]["data"]["tradedAmount"] == 0.02
    assert engine.orders[close_id].traded == D("0.02")
    assert ("BTCUSDT", BUY) not in engine.positions
    assert ledger_holds(engine)


def test_a_close_order_without_an_opposite_position_is_refused() -> None:
    engine = make()
    with pytest.raises(ApiError) as raised:
        engine.place(market_order(SELL, "0.01", direction=CLOSE), T0)
    assert raised.value.code == 1014
    engine.place(market_order(SELL, "0.01"), T0)  # a short: a CLOSE sell reduces nothing
    with pytest.raises(ApiError) as raised:
        engine.place(limit(SELL, "0.01", "100100", direction=CLOSE), T0)
    assert raised.value.code == 1014
    engine.place(limit(BUY, "0.01", "99900", direction=CLOSE), T0)  # this one does


def test_insufficient_margin_is_refused_with_4001() -> None:
    engine = make(balance="99")
    before = (engine.free, dict(engine.open_orders), len(engine.orders))
    with pytest.raises(ApiError) as raised:
        engine.place(limit(BUY, "0.01", "99000"), T0)  # needs 99 + 0.297
    assert (raised.value.code, raised.value.message) == (4001, "INSUFFICIENT BALANCE")
    assert (engine.free, dict(engine.open_orders), len(engine.orders)) == before
    engine.place(limit(BUY, "0.01", "98000"), T0)  # 98 + 0.294 fits


def test_cancel_releases_the_lock_and_an_unknown_or_finished_order_is_4002() -> None:
    engine = make()
    order_id, _ = engine.place(limit(BUY, "0.1", "99000"), T0)
    frames = engine.cancel(order_id, T0 + 5)
    assert kinds(frames) == [("future_order", "CANCELLED"), ("future_wallet", None)]
    assert frames[0]["data"]["canceledTime"] == T0 + 5
    assert frames[1]["data"] == {"asset": "USDT", "free": "10000", "locked": "0"}
    for unknown in (order_id, "F123"):
        with pytest.raises(ApiError) as raised:
            engine.cancel(unknown, T0 + 6)
        assert (raised.value.code, raised.value.message) == (4002, "ORDER NOT FOUND")


def test_cancel_all_and_close_all() -> None:
    engine = make()
    engine.place(limit(BUY, "0.1", "99000"), T0)
    engine.place(limit(SELL, "1", "3100", ticker="ETHUSDT"), T0)
    engine.place(market_order(BUY, "0.01"), T0)
    engine.place(market_order(SELL, "1", ticker="ETHUSDT"), T0)
    frames = engine.cancel_all("ETHUSDT", T0 + 1)
    assert kinds(frames) == [("future_order", "CANCELLED"), ("future_wallet", None)]
    assert [o.ticker for o in engine.open_orders.values()] == ["BTCUSDT"]
    frames = engine.cancel_all(None, T0 + 2)
    assert not engine.open_orders
    frames = engine.close_all(None, T0 + 3)
    assert (
        kinds(frames)
        == [
            ("future_order", "FILLED"),
            ("future_position", "USER_CLOSE"),
            ("future_wallet", None),
        ]
        * 2
    )
    assert {(f["data"]["type"], f["data"]["direction"]) for f in frames[::3]} == {
        ("MARKET", "CLOSE")
    }
    assert not engine.positions
    assert engine.locked == 0
    assert engine.close_all(None, T0 + 4) == []
    assert ledger_holds(engine)


def test_one_way_mode_nets_an_opposite_open_order() -> None:
    engine = make()
    engine.place(market_order(BUY, "0.01"), T0)
    _, frames = engine.place(market_order(SELL, "0.03"), T0 + 1)
    assert kinds(frames) == [
        ("future_order", "FILLED"),
        ("future_position", "USER_CLOSE"),
        ("future_position", "OPEN"),
        ("future_wallet", None),
    ]
    assert [(k, p.amount) for k, p in engine.positions.items()] == [(("BTCUSDT", SELL), D("0.02"))]
    assert engine.positions[("BTCUSDT", SELL)].margin == D(200)
    assert ledger_holds(engine)


def test_hedge_mode_keeps_both_sides_and_close_reduces_the_opposite_one() -> None:
    engine = make()
    engine.set_mode("BTCUSDT", "HEDGE")
    engine.set_leverage("BTCUSDT", 20, "HEDGE_SELL")
    engine.place(market_order(BUY, "0.02"), T0)
    engine.place(market_order(SELL, "0.01"), T0)
    assert {k: (p.amount, p.leverage) for k, p in engine.positions.items()} == {
        ("BTCUSDT", BUY): (D("0.02"), 10),
        ("BTCUSDT", SELL): (D("0.01"), 20),
    }
    _, frames = engine.place(market_order(SELL, "0.005", direction=CLOSE), T0 + 1)
    assert frames[1]["data"]["position"] == "BUY"
    assert frames[1]["data"]["positionMode"] == "HEDGE"
    assert engine.positions[("BTCUSDT", BUY)].amount == D("0.015")
    assert engine.positions[("BTCUSDT", SELL)].amount == D("0.01")
    with pytest.raises(ApiError) as raised:
        engine.set_mode("BTCUSDT", "ONEWAY")  # positions open
    assert raised.value.code == 1013
    assert engine.mode("BTCUSDT") == "HEDGE"


def test_take_profit_fires_a_child_order_that_closes_the_position() -> None:
    engine = make()
    tp = Trigger(TAKE_PROFIT, "LAST", D("101000"))
    sl = Trigger(STOP_LOSS, "LAST", D("99000"))
    parent, _ = engine.place(market_order(BUY, "0.1", take_profit=tp, stop_loss=sl), T0)
    position = engine.positions[("BTCUSDT", BUY)]
    assert (position.take_profit.price, position.stop_loss.price) == (D(101000), D(99000))  # type: ignore[union-attr]
    assert move(engine, "100900", T0 + 1) == []
    frames = move(engine, "101000", T0 + 2)
    assert kinds(frames) == [
        ("future_order", "FILLED"),
        ("future_position", "TAKE_PROFIT"),
        ("future_wallet", None),
    ]
    child = engine.orders[frames[0]["data"]["orderId"]]
    assert (child.otype, child.direction, child.side, child.trigger_id) == (
        TAKE_PROFIT,
        CLOSE,
        SELL,
        parent,
    )
    assert engine.fills[-1].pnl == D(100)
    assert move(engine, "98000", T0 + 3) == []  # the stop-loss went with it


def test_a_stop_loss_on_the_mark_price_ignores_the_last_price() -> None:
    engine = make()
    sl = Trigger(STOP_LOSS, "MARK", D("3060"))
    engine.place(market_order(SELL, "1", ticker="ETHUSDT", stop_loss=sl), T0)
    assert move(engine, "3100", T0 + 1, ticker="ETHUSDT", mark="3059.99") == []
    frames = move(engine, "3055", T0 + 2, ticker="ETHUSDT", mark="3060")
    assert kinds(frames) == [
        ("future_order", "FILLED"),
        ("future_position", "STOP_LOSS"),
        ("future_wallet", None),
    ]
    assert frames[0]["data"]["type"] == "STOP_LOSS"
    assert engine.fills[-1].price == D("3055")  # a market child: at the last price
    assert engine.fills[-1].pnl == D(-55)


def test_a_trigger_fires_once() -> None:
    engine = make()
    sl = Trigger(STOP_LOSS, "LAST", D("99500"), LIMIT, D("99600"))  # rests above
    engine.place(market_order(BUY, "0.1", stop_loss=sl), T0)
    assert kinds(move(engine, "99400", T0 + 1)) == [("future_order", "TRADING")]
    assert move(engine, "99300", T0 + 2) == []
    assert len(engine.open_orders) == 1


def test_a_limit_take_profit_child_rests_until_its_price() -> None:
    engine = make()
    tp = Trigger(TAKE_PROFIT, "LAST", D("100500"), LIMIT, D("100800"))
    engine.place(market_order(BUY, "0.1", take_profit=tp), T0)
    frames = move(engine, "100600", T0 + 1)
    assert kinds(frames) == [("future_order", "TRADING")]
    child_id = frames[0]["data"]["orderId"]
    assert records.open_orders(engine)[0]["order_type"] == 2
    frames = move(engine, "100800", T0 + 2, volume="1")
    assert kinds(frames) == [
        ("future_order", "FILLED"),
        ("future_position", "TAKE_PROFIT"),
        ("future_wallet", None),
    ]
    assert frames[0]["data"]["orderId"] == child_id
    assert engine.fills[-1].role == "MAKER"


def test_the_stop_loss_still_protects_while_a_limit_take_profit_rests() -> None:
    engine = make()
    tp = Trigger(TAKE_PROFIT, "LAST", D("100500"), LIMIT, D("100800"))
    sl = Trigger(STOP_LOSS, "LAST", D("99500"))
    engine.place(market_order(BUY, "0.1", take_profit=tp, stop_loss=sl), T0)
    (child,) = move(engine, "100600", T0 + 1)  # the take-profit's limit child rests
    assert move(engine, "100600", T0 + 2) == []  # fired once only
    frames = move(engine, "99500", T0 + 3)
    assert kinds(frames) == [
        ("future_order", "FILLED"),
        ("future_position", "STOP_LOSS"),
        ("future_wallet", None),
    ]
    frames = move(engine, "100800", T0 + 4, volume="1")  # the child has nothing to close
    assert kinds(frames) == [("future_order", "CANCELLED")]
    assert frames[0]["data"]["orderId"] == child["data"]["orderId"]
    assert frames[0]["data"]["tradedAmount"] == 0
    assert not engine.open_orders
    assert ledger_holds(engine)


@pytest.mark.parametrize(
    ("side", "tp", "sl", "code"),
    [
        (BUY, "99000", None, 3007),  # a long's take-profit below the price
        (BUY, None, "101000", 3007),
        (SELL, "101000", None, 3007),
        (SELL, None, "99000", 3007),
        (BUY, "100000.05", None, 3007),  # off the price grid
    ],
)
def test_triggers_on_the_wrong_side_are_refused(
    side: str, tp: str | None, sl: str | None, code: int
) -> None:
    engine = make()
    request = market_order(
        side,
        "0.01",
        take_profit=None if tp is None else Trigger(TAKE_PROFIT, "LAST", D(tp)),
        stop_loss=None if sl is None else Trigger(STOP_LOSS, "LAST", D(sl)),
    )
    with pytest.raises(ApiError) as raised:
        engine.place(request, T0)
    assert raised.value.code == code
    assert not engine.orders


def test_a_limit_child_without_a_price_is_3008() -> None:
    engine = make()
    tp = Trigger(TAKE_PROFIT, "LAST", D("101000"), LIMIT, None)
    with pytest.raises(ApiError) as raised:
        engine.place(market_order(BUY, "0.01", take_profit=tp), T0)
    assert raised.value.code == 3008


def test_an_order_that_grows_a_position_uses_the_positions_leverage() -> None:
    """A position has one leverage: its margin stays its value / leverage, as the stream's
    positions (which carry no margin) let a client derive it."""
    engine = make()
    engine.place(market_order(BUY, "0.1"), T0)  # at the default 10x
    engine.set_leverage("BTCUSDT", 100)
    engine.place(market_order(BUY, "0.1"), T0 + 1)
    position = engine.positions[("BTCUSDT", BUY)]
    assert (position.leverage, position.margin) == (10, D(2000))
    assert ledger_holds(engine)


def test_liquidation_when_the_mark_price_reaches_the_liquidation_price() -> None:
    engine = make()
    engine.set_leverage("BTCUSDT", 100)
    engine.place(market_order(BUY, "0.1"), T0)
    position = engine.positions[("BTCUSDT", BUY)]
    assert position.margin == D(100)
    # (10000 - 100) / (0.1 x 0.995) = 99497.48..., rounded up to the grid
    assert engine.liquidation_price(position) == D("99497.5")
    assert move(engine, "99497.4", T0 + 1, mark="99497.6") == []  # the mark decides
    free = engine.free
    frames = move(engine, "99400", T0 + 2, mark="99497.5")
    assert kinds(frames) == [
        ("future_order", "FILLED"),
        ("future_position", "FORCE_CLOSE"),
        ("future_wallet", None),
    ]
    data = frames[0]["data"]
    assert (data["type"], data["direction"], data["price"]) == ("LIQUIDATION", "CLOSE", 99497.5)
    assert engine.free == free  # nothing back
    assert engine.locked == 0
    fill = engine.fills[-1]
    assert (fill.otype, fill.pnl, fill.fee) == ("LIQUIDATION", D(-100), D(0))
    assert ledger_holds(engine)


def test_leverage_and_mode_settings_are_checked() -> None:
    engine = make()
    for bad in (0, 126):
        with pytest.raises(ApiError) as raised:
            engine.set_leverage("BTCUSDT", bad)
        assert raised.value.code == 3005
    with pytest.raises(ApiError) as raised:
        engine.set_leverage("NOPEUSDT", 5)
    assert raised.value.code == 1014
    engine.set_leverage("BTCUSDT", 5)
    assert records.leverage(engine, "BTCUSDT") == [
        {"type": "ONEWAY", "leverage": 5},
        {"type": "HEDGE_SELL", "leverage": 10},
        {"type": "HEDGE_BUY", "leverage": 10},
    ]
    engine.place(limit(BUY, "0.01", "90000"), T0)
    with pytest.raises(ApiError) as raised:
        engine.set_mode("BTCUSDT", "HEDGE")  # an open order
    assert raised.value.code == 1013
    engine.set_mode("ETHUSDT", "HEDGE")
    assert engine.mode("ETHUSDT") == "HEDGE"


def test_the_position_reading_of_close_orders() -> None:
    specs = Market(1, backfill=False).specs
    body = {
        "ticker": "BTCUSDT",
        "direction": 1,
        "margin_mode": 0,
        "position": 0,
        "order_type": 0,
        "order_qty": "0.01",
    }
    assert p.order(body, specs, "trade").side == BUY  # buy: closes a short
    assert p.order(body, specs, "position").side == SELL  # closes the long: a sell
    reduce_only = dict(body, direction=0, is_reduce_only=True)
    assert p.order(reduce_only, specs, "position").side == SELL
    assert p.order(reduce_only, specs, "position").direction == CLOSE
    assert p.order(dict(body, direction=0), specs, "position").side == BUY  # OPEN: as is
    # and the records speak the same reading
    engine = make(close_side="position")
    engine.place(market_order(BUY, "0.01"), T0)
    engine.place(limit(SELL, "0.01", "100500", direction=CLOSE), T0)
    assert records.open_orders(engine)[0]["position"] == 0  # the long it closes
    assert records.open_orders(engine)[0]["direction"] == 1
    move(engine, "100500", T0 + 1)
    assert records.trade(engine, engine.fills[-1])["position"] == "BUY"
    assert records.trade(make(), engine.fills[-1])["position"] == "SELL"


def test_frames_follow_the_documented_payload_types() -> None:
    engine = make()
    _, frames = engine.place(limit(BUY, "0.02", "99000.5"), T0)
    order = frames[0]["data"]
    assert set(order) == {
        "orderId",
        "ticker",
        "direction",
        "type",
        "price",
        "amount",
        "tradedAmount",
        "value",
        "status",
        "createdTime",
        "canceledTime",
        "completedTime",
    }  # no side, no tif: the documented payload has none
    assert isinstance(order["price"], float)
    assert isinstance(order["amount"], float)
    assert isinstance(order["tradedAmount"], int)
    frames = move(engine, "99000", T0 + 1)
    position = frames[1]["data"]
    assert all(
        isinstance(position[k], str)
        for k in ("leverage", "price", "amount", "value", "liquidPrice", "unpnl", "closeTime")
    )
    assert position["closeTime"] == "null"
    assert isinstance(position["createdTime"], int)
    wallet = frames[2]["data"]
    assert all(isinstance(wallet[k], str) for k in ("free", "locked"))


Op = tuple[str, int, int, int]


@settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["limit", "market", "close", "reduce", "cancel", "move", "all"]),
            st.integers(0, 1),  # side
            st.integers(1, 40),  # size, in steps of 0.005 BTC
            st.integers(-30, 30),  # price offset, in 0.1 %
        ),
        max_size=40,
    ),
    st.booleans(),
)
def test_any_sequence_keeps_the_books_and_the_stream_consistent(ops: list[Op], hedge: bool) -> None:
    engine = make(balance="3000")
    if hedge:
        engine.set_mode("BTCUSDT", "HEDGE")
    frames: list[Frame] = []
    refused: list[int] = []
    now = T0
    for kind, side_code, size, offset in ops:
        now += 1000
        side = BUY if side_code == 0 else SELL
        qty = str(D("0.005") * size)
        last = engine.market.prices["BTCUSDT"]
        price = str((last * (1 + D(offset) / 1000)).quantize(D("0.1")))
        try:
            if kind == "limit":
                frames += engine.place(limit(side, qty, price), now)[1]
            elif kind == "market":
                frames += engine.place(market_order(side, qty), now)[1]
            elif kind in ("close", "reduce"):
                order = market_order(side, qty) if kind == "close" else limit(side, qty, price)
                order = dataclasses.replace(order, direction=CLOSE)
                frames += engine.place(order, now)[1]
            elif kind == "cancel" and engine.open_orders:
                frames += engine.cancel(
                    list(engine.open_orders)[size % len(engine.open_orders)], now
                )
            elif kind == "move":
                volume = None if size > 30 else str(D("0.01") * size)
                frames += move(engine, price, now, volume=volume, mark=price)
            elif kind == "all":
                frames += engine.close_all(None, now) if side_code else engine.cancel_all(None, now)
        except ApiError as exc:
            refused.append(exc.code)
        assert set(refused) <= {4001, 1014}
        assert ledger_holds(engine)
        assert all(p.amount > 0 and p.margin >= 0 for p in engine.positions.values())
    # the stream tells the whole story: the last wallet frame is the wallet, and the last
    # status of every order is its status now
    wallets = [f["data"] for f in frames if f["stream"] == "future_wallet"]
    if wallets:
        assert D(wallets[-1]["free"]) == engine.free
        assert D(wallets[-1]["locked"]) == engine.locked
    statuses: dict[str, str] = {}
    for f in frames:
        if f["stream"] == "future_order":
            statuses[f["data"]["orderId"]] = f["data"]["status"]
    live = {o for o, s in statuses.items() if s in ("TRADING", "PARTIAL")}
    assert live == set(engine.open_orders)
    assert all(engine.orders[o].status == s for o, s in statuses.items())
    positions: dict[tuple[str, str], str] = {}
    for f in frames:
        if f["stream"] == "future_position":
            data = f["data"]
            positions[(data["ticker"], data["position"])] = data["amount"]
    held = {k: D(v) for k, v in positions.items() if D(v) > 0}
    assert held == {k: p.amount for k, p in engine.positions.items()}
    assert sum(f.qty for f in engine.fills if f.direction == OPEN) >= 0


# -- request parameters --------------------------------------------------------------------------

SPECS = Market(1, backfill=False).specs
GOOD = {
    "ticker": "BTCUSDT",
    "direction": 0,
    "margin_mode": 0,
    "position": 0,
    "order_type": 1,
    "order_price": "99000.5",
    "order_qty": "0.01",
}


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"ticker": None}, 3009),
        ({"ticker": ""}, 3009),
        ({"ticker": "DOGEUSDT"}, 1014),
        ({"direction": None}, 3010),
        ({"direction": 2}, 3001),
        ({"direction": "OPEN"}, 3001),
        ({"margin_mode": None}, 3011),
        ({"margin_mode": 3}, 3002),
        ({"margin_mode": 1}, 3002),  # cross margin: not modelled
        ({"position": None}, 3012),
        ({"position": 2}, 3003),
        ({"order_type": None}, 3013),
        ({"order_type": 2}, 3004),
        ({"order_qty": None}, 3014),
        ({"order_qty": ""}, 3014),
        ({"order_qty": "0"}, 3016),
        ({"order_qty": "0.0001"}, 3016),
        ({"order_qty": "-1"}, 3016),
        ({"order_qty": "0.0015"}, 1014),  # not a multiple of the step
        ({"order_qty": "abc"}, 1014),
        ({"order_qty": True}, 1014),
        ({"order_price": None}, 1008),
        ({"order_price": ""}, 1008),
        ({"order_price": "0"}, 1009),
        ({"order_price": -5}, 1009),
        ({"order_price": "99000.55"}, 1014),  # off the price grid
        ({"order_price": "NaN"}, 1014),
        ({"is_post_only": "maybe"}, 1014),
        ({"is_take_profit": True}, 3006),
        ({"is_take_profit": True, "take_profit_trigger_type": 3}, 3018),
        ({"is_take_profit": True, "take_profit_trigger_type": 1}, 3007),
        (
            {
                "is_stop_loss": True,
                "stop_loss_trigger_type": 2,
                "stop_loss_trigger_price": "90000",
                "stop_loss_order_type": 1,
            },
            3008,
        ),
        (
            {
                "is_stop_loss": True,
                "stop_loss_trigger_type": 2,
                "stop_loss_trigger_price": "90000",
                "stop_loss_order_type": 5,
            },
            3004,
        ),
    ],
)
def test_order_parameters_are_refused_with_their_codes(change: dict[str, Any], code: int) -> None:
    body = {k: v for k, v in {**GOOD, **change}.items() if v is not None}
    with pytest.raises(ApiError) as raised:
        p.order(body, SPECS, "trade")
    assert raised.value.code == code


@pytest.mark.parametrize("price", [None, 0, "0", "123.45", 96500])
def test_a_market_orders_price_is_ignored_whatever_it_is(price: Any) -> None:
    body = {**GOOD, "order_type": 0, "order_price": price}
    if price is None:
        del body["order_price"]
    request = p.order(body, SPECS, "trade")
    assert (request.order_type, request.price) == (MARKET, None)


def test_numbers_strings_and_flags_in_either_form() -> None:
    as_numbers = p.order(
        {**GOOD, "order_price": 99000.5, "order_qty": 0.01, "is_post_only": False}, SPECS, "trade"
    )
    as_strings = p.order(
        {**GOOD, "direction": "0", "position": "0", "order_type": "1", "is_post_only": "false"},
        SPECS,
        "trade",
    )
    assert as_numbers == as_strings
    assert as_numbers.price == D("99000.5")
    assert p.order({**GOOD, "is_reduce_only": "true"}, SPECS, "trade").direction == CLOSE
    tp = p.order(
        {
            **GOOD,
            "is_take_profit": True,
            "take_profit_trigger_type": "1",
            "take_profit_trigger_price": 101000,
            "take_profit_order_type": 1,
            "take_profit_order_price": "101100",
        },
        SPECS,
        "trade",
    ).take_profit
    assert tp == Trigger(TAKE_PROFIT, "MARK", D(101000), LIMIT, D(101100))
    assert p.leverage({"leverage": "7"}) == p.leverage({"leverage": 7}) == 7
    for bad, code in ((None, 3015), ("0", 3005), (126, 3005), (2.5, 3005), ("x", 3005)):
        with pytest.raises(ApiError) as raised:
            p.leverage({} if bad is None else {"leverage": bad})
        assert raised.value.code == code
    with pytest.raises(ApiError) as raised:
        p.leverage_type({"leverage_type": 3})
    assert raised.value.code == 3019
    for bad, code in ((None, 3027), (2, 3028)):
        with pytest.raises(ApiError) as raised:
            p.position_mode({} if bad is None else {"position_mode": bad})
        assert raised.value.code == code


# -- the market -----------------------------------------------------------------------------------


def test_the_market_is_seeded_on_its_grids_and_backfilled() -> None:
    a, b = Market(4, start_ms=T0), Market(4, start_ms=T0)
    for step in range(200):
        assert a.walk(T0 + step * 1000) == b.walk(T0 + step * 1000)
    assert a.prices == b.prices
    assert Market(5, start_ms=T0).walk(T0) != Market(4, start_ms=T0).walk(T0)
    for ticker, spec in a.specs.items():
        assert a.prices[ticker] == a.prices[ticker].quantize(spec.tick)
        assert a.marks[ticker] == a.marks[ticker].quantize(spec.tick)
    candles = list(a.candles["BTCUSDT"])
    assert candles[0].start == T0 - 24 * 60 * 60_000  # a day of history before the start
    assert [c.start for c in candles] == sorted({c.start for c in candles})
    assert candles[1439].close == a.specs["BTCUSDT"].start  # the history ends at the start


def test_candles_aggregate_into_periods() -> None:
    market = Market(1, start_ms=T0)
    hours = market.candles_for("BTCUSDT", "60", T0 - 6 * 3_600_000, T0)
    assert len(hours) == 6
    minutes = list(market.minute_candles("BTCUSDT", hours[0].start, hours[0].start + 3_599_999))
    assert hours[0].open == minutes[0].open
    assert hours[0].close == minutes[-1].close
    assert hours[0].high == max(m.high for m in minutes)
    assert hours[0].qty == sum((m.qty for m in minutes), D(0))
    # weeks start on Monday, months on the 1st (UTC)
    assert bucket_start("1W", T0) == 1_799_625_600_000  # Monday 2027-01-11
    assert bucket_start("1M", T0) == 1_798_761_600_000  # 2027-01-01
    assert period_length("1M", 1_798_761_600_000) == 31 * 86_400_000


def test_the_book_has_21_levels_a_side_and_shows_own_orders() -> None:
    market = Market(1, backfill=False)
    market.set_price("BTCUSDT", D("100000"), T0)
    bids, asks = market.book("BTCUSDT", [(BUY, D("99999"), D("7"))])
    assert len(bids) == len(asks) == 21
    assert [b.price for b in bids] == sorted((b.price for b in bids), reverse=True)
    assert [a.price for a in asks] == sorted(a.price for a in asks)
    assert bids[0].price == D("99999.9")
    assert asks[0].price == D("100000.1")
    assert next(b.qty for b in bids if b.price == D("99999")) > 7
    assert market.book("BTCUSDT") == market.book("BTCUSDT")  # stable until the price moves


# -- over loopback -------------------------------------------------------------------------------


pytestmark = pytest.mark.bitmusa_simulator(script=False, event_interval=None, seed=5)


@pytest.fixture
async def sim(bitmusa_simulator: Simulator) -> Simulator:
    """The shipped fixture, quiet (the module's marker: no script, no timers), with BTC at
    100,000 and ETH at 3,000."""
    await bitmusa_simulator.set_price("BTCUSDT", "100000")
    await bitmusa_simulator.set_price("ETHUSDT", "3000")
    return bitmusa_simulator


@pytest.fixture
async def client(sim: Simulator) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=sim.rest_url, headers=HEADERS, timeout=5) as c:
        yield c


class Stream:
    """The account's user stream, read frame by frame."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.frames: list[dict[str, Any]] = []

    async def take(self, count: int) -> list[dict[str, Any]]:
        got = [orjson.loads(await asyncio.wait_for(self.ws.recv(), 5)) for _ in range(count)]
        self.frames += got
        return got


@pytest.fixture
async def stream(sim: Simulator, client: httpx.AsyncClient) -> AsyncIterator[Stream]:
    key = (await client.post("/future/userDataStream")).json()["data"]["listenKey"]
    async with connect(f"{sim.ws_url}/ws/future/{key}") as ws:
        yield Stream(ws)


def ok(response: httpx.Response) -> Any:
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["code"] == 0, body
    return body.get("data")


def code(response: httpx.Response) -> int:
    assert response.status_code == 200, response.text
    return int(response.json()["code"])


def order_body(**fields: Any) -> dict[str, Any]:
    return {
        "ticker": "BTCUSDT",
        "direction": 0,
        "margin_mode": 0,
        "position": 0,
        "order_type": 1,
        "order_qty": "0.01",
        **fields,
    }


async def test_a_limit_order_over_rest_rests_then_fills_on_the_stream(
    sim: Simulator, client: httpx.AsyncClient, stream: Stream
) -> None:
    order_id = ok(await client.post("/future/order", json=order_body(order_price="99000")))
    assert isinstance(order_id, str)
    assert order_id.startswith("F")
    trading, wallet = await stream.take(2)
    assert (trading["stream"], trading["data"]["status"]) == ("future_order", "TRADING")
    assert trading["data"]["orderId"] == order_id
    assert wallet["data"]["locked"] == "99.297"
    (record,) = ok(await client.get("/future/order", params={"ticker": "BTCUSDT"}))
    assert (record["order_id"], record["status"], record["left_qty"]) == (order_id, 0, 0.01)

    await sim.set_price("BTCUSDT", "99000", volume="0.004")
    partial, position, wallet = await stream.take(3)
    assert partial["data"]["status"] == "PARTIAL"
    assert partial["data"]["tradedAmount"] == 0.004
    assert (position["stream"], position["data"]["status"]) == ("future_position", "OPEN")
    assert ok(await client.get("/future/order"))[0]["status"] == 4

    await sim.set_price("BTCUSDT", "98990", volume="1")
    filled, position, wallet = await stream.take(3)
    assert filled["data"]["status"] == "FILLED"
    assert isinstance(filled["data"]["completedTime"], int)
    assert position["data"]["amount"] == "0.01"
    assert ok(await client.get("/future/order")) == []
    history = ok(await client.get("/future/trade/history", params={"ticker": "BTCUSDT"}))
    assert [(t["order_id"], t["traded_qty"], t["role"]) for t in history] == [
        (order_id, 0.006, "MAKER"),  # newest first
        (order_id, 0.004, "MAKER"),
    ]
    assert history[0]["trading_fee"] == pytest.approx(0.1188)  # 594 x 0.02 %
    (held,) = ok(await client.get("/future/position"))
    assert (held["qty"], held["entry_price"], held["position"]) == (0.01, 99000.0, 0)
    (balance,) = ok(await client.get("/future/wallet"))
    engine = sim.engine()
    assert balance["total_available_balance"] == float(engine.free)
    assert balance["total_wallet_balance"] == float(engine.free + engine.locked)
    assert wallet["data"] == {"asset": "USDT", "free": "9900.802", "locked": "99"}
    assert engine.free == D("9900.802")  # 10000 - 990 margin... of 0.01: 99, fees 0.198
    assert [f.text for f in sim.sent] == [orjson.dumps(f).decode() for f in stream.frames]


async def test_both_sdks_request_shapes_are_accepted(
    sim: Simulator, client: httpx.AsyncClient, stream: Stream
) -> None:
    # node-bitmusa-api: numbers, MARKET with order_price 0, a JSON copy of GET params
    ok(
        await client.post(
            "/future/order",
            json=order_body(order_type=0, order_price=0, order_qty=0.01, is_reduce_only=False),
        )
    )
    # ninjaxt: strings, no order_price on MARKET, is_post_only always sent
    ok(
        await client.post(
            "/future/order",
            json=order_body(order_type=0, order_qty="0.01", is_post_only=False, position=1),
        )
    )
    await stream.take(6)
    assert not sim.engine().positions  # bought then sold: flat (one-way)
    params: dict[str, str | int] = {"ticker": "BTCUSDT", "size": 5}
    via_query = ok(await client.get("/future/market/orderbook", params=params))
    via_both = ok(
        await client.request(
            "GET", "/future/market/orderbook", params=params, content=orjson.dumps(params)
        )
    )
    assert via_query == via_both
    assert len(via_query["buy"]) == 5
    for name in ("symbol", "ticker"):
        assert ok(await client.get("/future/market", params={name: "ETHUSDT"}))["ticker"] == (
            "ETHUSDT"
        )
        trades = ok(await client.get("/future/market/trade", params={name: "BTCUSDT"}))
        assert trades[0]["qty"] == "0.0100000000000000"  # our own market sell, newest
    for leverage in ("5", 6):
        ok(await client.post("/future/leverage", json={"ticker": "BTCUSDT", "leverage": leverage}))
    assert ok(await client.get("/future/leverage", params={"ticker": "BTCUSDT"}))[0] == {
        "type": "ONEWAY",
        "leverage": 6,
    }
    # cancel/all and close/all: ticker in the query (node) or in the body
    for _ in range(2):
        ok(await client.post("/future/order", json=order_body(order_price="90000")))
    ok(await client.post("/future/order/cancel/all", params={"ticker": "BTCUSDT"}))
    ok(await client.post("/future/order", json=order_body(order_price="90000")))
    ok(await client.post("/future/order/cancel/all", json={"ticker": "all"}))
    assert not sim.engine().open_orders
    ok(await client.post("/future/order", json=order_body(order_type=0)))
    ok(await client.post("/future/position/close/all", params={"ticker": "BTCUSDT"}))
    assert not sim.engine().positions
    ok(await client.post("/future/order", json=order_body(order_type=0)))
    ok(await client.post("/future/position/close/all", json={"ticker": "BTCUSDT"}))
    assert not sim.engine().positions


GETS: list[tuple[str, dict[str, Any]]] = [
    ("/future/market", {"symbol": "BTCUSDT"}),
    ("/future/market/orderbook", {"ticker": "ETHUSDT", "size": 3}),
    ("/future/market/trade", {"ticker": "XRPUSDT", "size": 4}),
    (
        "/future/market/kline/history",
        {"ticker": "BTCUSDT", "period": "1", "startTime": 0, "endTime": 1},
    ),
    ("/future/market/kline", {"ticker": "BTCUSDT", "interval": "5min", "size": 2}),
    ("/future/market/kline/current", {"ticker": "BTCUSDT", "period": "1D"}),
    ("/future/market/exchange-info", {}),
    ("/future/wallet", {}),
    ("/future/wallet/noposition", {}),
    ("/future/position", {"ticker": "BTCUSDT"}),
    ("/future/order", {"ticker": "BTCUSDT", "size": 5, "start_time": 0}),
    ("/future/trade/history", {"ticker": "BTCUSDT", "size": 1, "page": 1}),
    ("/future/leverage", {"ticker": "BTCUSDT"}),
    ("/future/position/mode", {"ticker": "BTCUSDT"}),
]


@pytest.mark.parametrize(("path", "params"), GETS)
async def test_every_get_reads_the_query_and_tolerates_a_json_copy_in_the_body(
    sim: Simulator, client: httpx.AsyncClient, path: str, params: dict[str, Any]
) -> None:
    ok(await client.post("/future/order", json=order_body(order_type=0)))
    ok(await client.post("/future/order", json=order_body(order_price="90000")))
    plain = ok(await client.get(path, params=params))
    # node-bitmusa-api: the same values in the query and as a JSON body
    both = ok(await client.request("GET", path, params=params, content=orjson.dumps(params)))
    # only in the body: read too (a GET body is a courtesy copy, never required)
    body = ok(await client.request("GET", path, content=orjson.dumps(params)))
    assert plain == both == body
    assert plain is not None


async def test_cancel_and_its_errors_over_rest(
    sim: Simulator, client: httpx.AsyncClient, stream: Stream
) -> None:
    order_id = ok(await client.post("/future/order", json=order_body(order_price="99000")))
    await stream.take(2)
    assert ok(await client.post(f"/future/order/cancel/{order_id}")) is None
    cancelled, wallet = await stream.take(2)
    assert (cancelled["data"]["status"], cancelled["data"]["orderId"]) == ("CANCELLED", order_id)
    assert isinstance(cancelled["data"]["canceledTime"], int)
    assert wallet["data"] == {"asset": "USDT", "free": "10000", "locked": "0"}
    response = await client.post(f"/future/order/cancel/{order_id}")
    assert response.json() == {"code": 4002, "message": "ORDER NOT FOUND"}
    assert code(await client.post("/future/order/cancel/F1")) == 4002


async def test_close_all_tp_sl_and_liquidation_over_rest(
    sim: Simulator, client: httpx.AsyncClient, stream: Stream
) -> None:
    ok(await client.post("/future/order", json=order_body(order_type=0, position=1)))
    await stream.take(3)
    ok(await client.post("/future/position/close/all", params={"ticker": "all"}))
    close, flat, _ = await stream.take(3)
    assert (close["data"]["type"], close["data"]["direction"]) == ("MARKET", "CLOSE")
    assert flat["data"]["status"] == "USER_CLOSE"
    # a bracket, then the take-profit fires
    ok(
        await client.post(
            "/future/order",
            json=order_body(
                order_type=0,
                is_take_profit=True,
                take_profit_trigger_type=2,
                take_profit_trigger_price="101000",
                take_profit_order_type=0,
                is_stop_loss=True,
                stop_loss_trigger_type=1,
                stop_loss_trigger_price="99000",
                stop_loss_order_type=0,
            ),
        )
    )
    await stream.take(3)
    assert ok(await client.get("/future/position"))[0]["take_profit_price"] == 101000.0
    await sim.set_price("BTCUSDT", "101000")
    child, closed, _ = await stream.take(3)
    assert (child["data"]["type"], closed["data"]["status"]) == ("TAKE_PROFIT", "TAKE_PROFIT")
    # liquidation at 100x
    ok(await client.post("/future/leverage", json={"ticker": "BTCUSDT", "leverage": 100}))
    ok(await client.post("/future/order", json=order_body(order_type=0, position=1)))
    await stream.take(3)
    (short,) = ok(await client.get("/future/position"))
    await sim.set_price("BTCUSDT", str(short["liquid_price"]))
    liquidation, forced, _ = await stream.take(3)
    assert (liquidation["data"]["type"], forced["data"]["status"]) == (
        "LIQUIDATION",
        "FORCE_CLOSE",
    )
    kinds_seen = [
        t["order_type"] for t in ok(await client.get("/future/trade/history", params={"size": 50}))
    ]
    assert kinds_seen == ["LIQUIDATION", "MARKET", "TAKE_PROFIT", "MARKET", "MARKET", "MARKET"]


async def test_every_error_is_http_200_with_its_code(
    sim: Simulator, client: httpx.AsyncClient
) -> None:
    cases: list[tuple[str, str, dict[str, Any], int]] = [
        ("POST", "/future/order", {"json": order_body(order_qty=None)}, 3014),
        ("POST", "/future/order", {"json": order_body(order_qty="0.0001")}, 3016),
        ("POST", "/future/order", {"json": order_body()}, 1008),
        ("POST", "/future/order", {"json": order_body(direction=7, order_price="1")}, 3001),
        ("POST", "/future/order", {"json": order_body(position=7, order_price="1")}, 3003),
        ("POST", "/future/order", {"json": order_body(order_type=7)}, 3004),
        ("POST", "/future/order", {"json": order_body(ticker=None)}, 3009),
        ("POST", "/future/order", {"content": b"not json"}, 1014),
        ("POST", "/future/order", {"json": order_body(order_type=0, order_qty="10")}, 4001),
        ("POST", "/future/order", {"json": order_body(order_type=0, direction=1)}, 1014),
        ("POST", "/future/leverage", {"json": {"ticker": "BTCUSDT", "leverage": 126}}, 3005),
        ("POST", "/future/leverage", {"json": {"ticker": "BTCUSDT"}}, 3015),
        ("POST", "/future/leverage/hedge", {"json": {"ticker": "BTCUSDT"}}, 3020),
        (
            "POST",
            "/future/leverage/hedge",
            {"json": {"ticker": "BTCUSDT", "buy_leverage": 5}},
            3021,
        ),
        (
            "POST",
            "/future/leverage",
            {"json": {"ticker": "BTCUSDT", "leverage": 5, "leverage_type": 9}},
            3019,
        ),
        (
            "POST",
            "/future/position/mode",
            {"json": {"ticker": "BTCUSDT", "position_mode": 2}},
            3028,
        ),
        ("GET", "/future/position/mode", {}, 3009),
        ("GET", "/future/leverage", {"params": {"ticker": "DOGEUSDT"}}, 1014),
        ("GET", "/future/order", {"params": {"size": "many"}}, 1014),
        ("POST", "/future/position/mode", {"json": {"ticker": "BTCUSDT"}}, 3027),
        ("POST", "/future/order/cancel/all", {}, 3009),
        ("POST", "/future/position/close/all", {"params": {"ticker": "NOPE"}}, 1014),
        ("GET", "/future/market", {}, 3009),
        ("GET", "/future/market/kline/history", {"params": {"ticker": "BTCUSDT"}}, 1016),
        (
            "GET",
            "/future/market/kline/history",
            {"params": {"ticker": "BTCUSDT", "period": "1"}},
            1010,
        ),
        (
            "GET",
            "/future/market/kline/history",
            {"params": {"ticker": "BTCUSDT", "period": "1", "startTime": 5, "endTime": 5}},
            1015,
        ),
        ("GET", "/future/market/orderbook", {"params": {"ticker": "BTCUSDT", "size": 0}}, 1014),
        ("GET", "/future/trade/history", {"params": {"position": "LONG"}}, 3003),
    ]
    for method, path, kwargs, expected in cases:
        response = await client.request(method, path, **kwargs)
        assert code(response) == expected, (path, kwargs, response.text)
    assert not sim.engine().orders  # none of them placed anything
    async with httpx.AsyncClient(base_url=sim.rest_url) as anonymous:
        assert code(await anonymous.get("/future/market", params={"ticker": "BTCUSDT"})) == 1003
        assert (await anonymous.get(sim.rest_url[: -len("/api/v2")] + "/api/health")).json() == {
            "code": 0,
            "message": "success",
            "data": "OK",
        }
        wrong = {"x-api-key": DEMO_API_KEY, "Authorization": "Bearer nope"}
        assert code(await anonymous.post("/future/order", json=order_body(), headers=wrong)) == 1001


async def test_market_data_shapes(sim: Simulator, client: httpx.AsyncClient) -> None:
    ticker = ok(await client.get("/future/market", params={"ticker": "BTCUSDT"}))
    assert ticker["last_price"] == 100000.0
    assert ticker["change_price"] == pytest.approx(ticker["last_price"] - ticker["base_price"])
    assert (ticker["last_updated_time"] + ticker["remaining_funding_time"]) % 3_600_000 == 0
    book = ok(
        await client.get("/future/market/orderbook", params={"ticker": "BTCUSDT", "size": 50})
    )
    assert len(book["buy"]) == len(book["sell"]) == 21  # clamped
    buys = [float(level["price"]) for level in book["buy"]]
    sells = [float(level["price"]) for level in book["sell"]]
    assert buys == sorted(buys, reverse=True)
    assert sells == sorted(sells, reverse=True)  # descending too: the best ask is last
    assert sells[-1] == 100000.1
    assert book["sell"][0]["total_qty"] > book["sell"][-1]["total_qty"]
    assert all(isinstance(level["qty"], str) for level in book["buy"])
    trades = ok(await client.get("/future/market/trade", params={"ticker": "BTCUSDT", "size": 3}))
    assert len(trades) == 3
    assert trades[0]["traded_time"] >= trades[1]["traded_time"]
    assert len(trades[0]["price"].split(".")[1]) == 16
    end = sim.market.now
    rows = ok(
        await client.get(
            "/future/market/kline/history",
            params={
                "ticker": "BTCUSDT",
                "period": "1",
                "startTime": end - 10 * 60_000,
                "endTime": end,
            },
        )
    )
    assert 10 <= len(rows) <= 11
    assert all(len(row) == 6 for row in rows)
    assert rows[0][0] > rows[1][0]  # newest first
    assert rows[0][0] - rows[1][0] == 60_000
    sdk_rows = ok(
        await client.get(
            "/future/market/kline", params={"ticker": "BTCUSDT", "interval": "1H", "size": 3}
        )
    )
    assert len(sdk_rows) == 3
    assert sdk_rows[0][0] - sdk_rows[1][0] == 3_600_000
    current = ok(
        await client.get(
            "/future/market/kline/current", params={"ticker": "BTCUSDT", "period": "1"}
        )
    )
    assert current["period"] == "1min"
    assert current["close_price"] == 100000.0
    info = {m["ticker"]: m for m in ok(await client.get("/future/market/exchange-info"))}
    assert set(info) == {"BTCUSDT", "ETHUSDT", "XRPUSDT"}
    assert (info["BTCUSDT"]["baseCoinPrecision"], info["BTCUSDT"]["quoteCoinPrecision"]) == (1, 3)
    assert (info["XRPUSDT"]["baseCoinPrecision"], info["XRPUSDT"]["quoteCoinPrecision"]) == (4, 0)
    assert (info["ETHUSDT"]["takerFee"], info["ETHUSDT"]["makerFee"]) == ("0.03", "0.02")


async def test_trade_history_filters_pages_and_the_paged_shape(
    sim: Simulator, client: httpx.AsyncClient
) -> None:
    for body in (
        order_body(order_type=0),
        order_body(order_type=0, ticker="ETHUSDT", order_qty="1"),
        order_body(order_type=0, position=1, direction=1),
    ):
        ok(await client.post("/future/order", json=body))
    everything = ok(await client.get("/future/trade/history"))
    assert [t["ticker"] for t in everything] == ["BTCUSDT", "ETHUSDT", "BTCUSDT"]
    only = ok(await client.get("/future/trade/history", params={"direction": "CLOSE"}))
    assert [(t["direction"], t["position"]) for t in only] == [("CLOSE", "SELL")]
    buys = ok(
        await client.get("/future/trade/history", params={"position": 0, "ticker": "BTCUSDT"})
    )
    assert [t["direction"] for t in buys] == ["OPEN"]
    page2 = ok(await client.get("/future/trade/history", params={"size": 2, "page": 2}))
    assert [t["id"] for t in page2] == [everything[2]["id"]]
    first = everything[-1]
    late = ok(
        await client.get(
            "/future/trade/history", params={"order_type": "MARKET", "startTime": 10**13}
        )
    )
    assert late == []
    sim.trade_history = "paged"
    paged = ok(await client.get("/future/trade/history", params={"size": 2}))
    assert [t["id"] for t in paged["content"]] == [t["id"] for t in everything[:2]]
    assert (paged["totalElements"], paged["totalPages"], paged["last"]) == (3, 2, False)
    assert first["order_type"] == "MARKET"


async def test_position_mode_and_hedge_leverage_over_rest(
    sim: Simulator, client: httpx.AsyncClient
) -> None:
    assert ok(await client.get("/future/position/mode", params={"ticker": "BTCUSDT"})) == "ONEWAY"
    ok(await client.post("/future/position/mode", json={"ticker": "BTCUSDT", "position_mode": 1}))
    assert ok(await client.get("/future/position/mode", params={"ticker": "BTCUSDT"})) == "HEDGE"
    assert ok(await client.get("/future/position/mode", params={"ticker": "ETHUSDT"})) == "ONEWAY"
    ok(
        await client.post(
            "/future/leverage/hedge",
            json={"ticker": "BTCUSDT", "buy_leverage": "3", "sell_leverage": 4},
        )
    )
    ok(await client.post("/future/order", json=order_body(order_type=0)))
    ok(await client.post("/future/order", json=order_body(order_type=0, position=1)))
    held = {p["position"]: p for p in ok(await client.get("/future/position"))}
    assert {side: (p["leverage"], p["position_mode"]) for side, p in held.items()} == {
        0: (3, 1),
        1: (4, 1),
    }
    response = await client.post(
        "/future/position/mode", json={"ticker": "BTCUSDT", "position_mode": 0}
    )
    assert code(response) == 1013  # positions open
    ok(await client.post("/future/position/close/all", params={"ticker": "BTCUSDT"}))
    assert ok(await client.get("/future/position")) == []


@pytest.mark.parametrize(
    ("ws_path", "served", "refused"),
    [
        ("documented", ["/ws/future/"], ["/ws/future/wallet/"]),
        ("wallet", ["/ws/future/wallet/"], ["/ws/future/"]),
        ("both", ["/ws/future/", "/ws/future/wallet/"], []),
    ],
)
async def test_the_user_stream_path_readings(
    ws_path: Any, served: list[str], refused: list[str]
) -> None:
    async with (
        Simulator(script=False, event_interval=None, ws_path=ws_path) as sim,
        httpx.AsyncClient(base_url=sim.rest_url, headers=HEADERS) as c,
    ):
        key = ok(await c.post("/future/userDataStream"))["listenKey"]
        for path in served:
            async with connect(sim.ws_url + path + key) as ws:
                await sim.emit()
                assert orjson.loads(await asyncio.wait_for(ws.recv(), 5))["stream"]
        for path in refused:
            with pytest.raises(InvalidStatus) as raised:
                await connect(sim.ws_url + path + key)
            assert raised.value.response.status_code == 404


@pytest.mark.parametrize(
    ("prefix", "served", "refused"),
    [
        ("v2", ["/api/v2"], ["/api/v1"]),
        ("v1", ["/api/v1"], ["/api/v2"]),
        ("both", ["/api/v1", "/api/v2"], []),
    ],
)
async def test_the_keepalive_prefix_readings(
    prefix: Any, served: list[str], refused: list[str]
) -> None:
    async with Simulator(script=False, event_interval=None, keepalive_prefix=prefix) as sim:
        root = sim.rest_url[: -len("/api/v2")]
        async with httpx.AsyncClient(base_url=root, headers=HEADERS) as c:
            ok(await c.post("/api/v2/future/userDataStream"))  # POST: always /api/v2
            assert (await c.post("/api/v1/future/userDataStream")).status_code == 404
            for path in refused:
                assert (await c.put(path + "/future/userDataStream")).status_code == 404
                assert (await c.delete(path + "/future/userDataStream")).status_code == 404
            for path in served:
                ok(await c.put(path + "/future/userDataStream"))
            ok(await c.delete(served[0] + "/future/userDataStream"))
            assert sim.account().key is None


async def test_faults_hit_the_new_endpoints_by_method_and_path(
    sim: Simulator, client: httpx.AsyncClient
) -> None:
    sim.fail_rest("503", path="/future/order", method="POST")
    assert (await client.get("/future/order")).status_code == 200  # a GET: not this one
    assert (await client.post("/future/order", json=order_body(order_type=0))).status_code == 503
    assert not sim.engine().orders
    sim.fail_rest("1011", path="/future/market/*")
    assert code(await client.get("/future/market/orderbook", params={"ticker": "BTCUSDT"})) == 1011
    ok(await client.get("/future/market/orderbook", params={"ticker": "BTCUSDT"}))
    sim.fail_rest("429")  # any call
    assert (await client.get("/future/market/exchange-info")).status_code == 429
    sim.reject_orders(2, 999, "INTERNAL SERVER ERROR")
    for _ in range(2):
        response = await client.post("/future/order", json=order_body(order_type=0))
        assert response.json() == {"code": 999, "message": "INTERNAL SERVER ERROR"}
    assert not sim.engine().orders
    ok(await client.post("/future/order", json=order_body(order_type=0)))
    assert len(sim.engine().orders) == 1


async def test_an_order_timeout_may_or_may_not_place_the_order(
    sim: Simulator, client: httpx.AsyncClient, stream: Stream
) -> None:
    sim.fail_rest("timeout", path="/future/order", method="POST")
    with pytest.raises(httpx.ReadTimeout):
        await client.post("/future/order", json=order_body(order_price="99000"), timeout=0.3)
    assert not sim.engine().orders  # never carried out
    sim.fail_rest("timeout_after", path="/future/order", method="POST")
    with pytest.raises(httpx.ReadTimeout):
        await client.post("/future/order", json=order_body(order_price="99000"), timeout=0.3)
    # carried out, only the answer lost (a loaded loop may need a moment for the handler)
    for _ in range(500):
        if sim.engine().open_orders:
            break
        await asyncio.sleep(0.01)
    (order,) = sim.engine().open_orders.values()
    trading, _ = await stream.take(2)
    assert trading["data"]["orderId"] == order.order_id
    assert [o["order_id"] for o in ok(await client.get("/future/order"))] == [order.order_id]


async def test_the_documented_rate_limits_answer_1011() -> None:
    async with (
        Simulator(script=False, event_interval=None, rate_limits=((8, 60.0), (200, 60.0))) as sim,
        httpx.AsyncClient(base_url=sim.rest_url, headers=HEADERS) as c,
    ):
        codes = [code(await c.get("/future/market/exchange-info")) for _ in range(10)]
    assert codes == [0] * 8 + [1011] * 2


async def test_script_off_the_market_moves_and_paused_stops_it() -> None:
    async with (
        Simulator(script=False, event_interval=0.01, market_interval=0.01) as sim,
        httpx.AsyncClient(base_url=sim.rest_url, headers=HEADERS) as c,
    ):
        ok(await c.post("/future/userDataStream"))
        moves = dict(sim.market.moves)
        await asyncio.sleep(0.3)
        assert all(sim.market.moves[t] > moves[t] for t in moves)
        sim.paused = True
        await asyncio.sleep(0.05)
        frozen = dict(sim.market.moves)
        await asyncio.sleep(0.2)
        assert sim.market.moves == frozen
        ok(await c.post("/future/order", json=order_body(order_type=0)))  # REST still acts
    assert [f for f in sim.engine().orders.values() if f.origin != "rest"] == []
    assert len(sim.engine().orders) == 1


async def test_scripted_and_rest_orders_share_one_account() -> None:
    async with (
        Simulator(event_interval=None, seed=3) as sim,
        httpx.AsyncClient(base_url=sim.rest_url, headers=HEADERS) as c,
    ):
        ok(await c.post("/future/userDataStream"))
        await sim.emit(count=30)
        order_id = ok(await c.post("/future/order", json=order_body(order_price="10000")))
        scenario = sim.account().scenario
        assert order_id in scenario.orders  # the names the older tests use see it too
        assert any(o.origin == "script" for o in sim.engine().orders.values())
        (wallet,) = ok(await c.get("/future/wallet"))
        assert wallet["total_available_balance"] == float(scenario.free)
        assert wallet["total_wallet_balance"] == float(scenario.free + scenario.locked)
        listed = {o["order_id"] for o in ok(await c.get("/future/order", params={"size": 500}))}
        assert listed == set(scenario.orders)
        history = ok(await c.get("/future/trade/history", params={"size": 1000}))
        assert history == scenario.rest_trade_history()
        assert len(history) == len(sim.engine().fills) > 0


# -- the draft public market stream ---------------------------------------------------------------


async def test_the_market_stream_pushes_depth_snapshots_and_candles(
    sim: Simulator, client: httpx.AsyncClient
) -> None:
    url = f"{sim.ws_url}/ws/future/stream?BTCUSDT@depth5@100ms/ETHUSDT@kline_1min"
    async with connect(url) as ws:

        async def next_of(stream: str) -> dict[str, Any]:
            while True:
                frame: dict[str, Any] = orjson.loads(await asyncio.wait_for(ws.recv(), 5))
                if frame["stream"] == stream:
                    return frame

        book = (await next_of("BTCUSDT@depth5@100ms"))["data"]
        assert [b["price"] for b in book["bids"]] == [99999.9, 99999.8, 99999.7, 99999.6, 99999.5]
        assert [a["price"] for a in book["asks"]] == [
            100000.1,
            100000.2,
            100000.3,
            100000.4,
            100000.5,
        ]
        shown = book["bids"][4]["amount"]
        candle = (await next_of("ETHUSDT@kline_1min"))["data"]
        assert (candle["s"], candle["i"], candle["c"]) == ("ETH/USDT", "1min", 3000.0)
        assert candle["t"] <= candle["u"] <= candle["T"] == candle["t"] + 59_999
        # a resting order shows in the book; a move shows at the next push
        ok(
            await client.post(
                "/future/order", json=order_body(order_price="99999.5", order_qty="0.5")
            )
        )
        expected = round(shown + 0.5, 3)
        while book["bids"][4]["amount"] != expected:
            book = (await next_of("BTCUSDT@depth5@100ms"))["data"]
        level = ok(await client.get("/future/market/orderbook", params={"ticker": "BTCUSDT"}))
        assert [b["qty"] for b in level["buy"] if b["price"] == "99999.5"] == [f"{expected:.3f}"]
        await sim.set_price("BTCUSDT", "100100")
        while book["bids"][0]["price"] != 100099.9:
            book = (await next_of("BTCUSDT@depth5@100ms"))["data"]
        # paused: nothing is pushed (once what was already on its way is read)
        sim.paused = True
        await asyncio.sleep(0.3)
        for _ in range(100):
            try:
                await asyncio.wait_for(ws.recv(), 0.05)
            except asyncio.TimeoutError:
                break
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(ws.recv(), 0.6)


async def test_the_market_stream_refuses_unknown_streams(sim: Simulator) -> None:
    for query in ("BTCUSDT@depth7", "DOGEUSDT@depth5", "BTCUSDT@kline_2min", "BTCUSDT@trade", ""):
        with pytest.raises(InvalidStatus) as raised:
            await connect(f"{sim.ws_url}/ws/future/stream?{query}")
        assert raised.value.response.status_code == 400
    async with connect(f"{sim.ws_url}/ws/future/public?stream=XRPUSDT@depth") as ws:
        frame = orjson.loads(await asyncio.wait_for(ws.recv(), 5))
    assert frame["stream"] == "XRPUSDT@depth"
    assert len(frame["data"]["bids"]) == 5  # level 5 by default
