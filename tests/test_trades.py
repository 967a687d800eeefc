"""Fills as trades: one per fill, adding up exactly to the order's, the same id however
learnt, recovered from the trade history after a gap, never a snapshot. The pure parts on
their own; then trading against the simulator's matching engine, with a gap, compared with
its ground truth fill by fill."""

from __future__ import annotations

from decimal import Decimal as D
from typing import Any

import httpx
import orjson
import pytest
from recording import Recorder, place, until

from bitmusa_plugin import AccountConfig, Credentials, Session
from bitmusa_plugin._core import machine as lc
from bitmusa_plugin._core import resync
from bitmusa_plugin._core.fills import Fills, side_of
from bitmusa_plugin._core.mapping import Mapped, Mapper
from bitmusa_plugin._core.numbers import pair
from bitmusa_plugin._engine.stream import Heartbeat
from bitmusa_plugin.simulator import DEMO_API_KEY, DEMO_AUTH_KEY, Simulator
from bitmusa_plugin.testing import order_frame, replay

HEADERS = {"x-api-key": DEMO_API_KEY, "Authorization": f"Bearer {DEMO_AUTH_KEY}"}


def mapped_order(mapper: Mapper, **fields: Any) -> dict[str, Any]:
    result = mapper.feed(order_frame(**fields), 0)
    assert isinstance(result, Mapped)
    return result.obj


def dec(value: Any) -> D:
    return D(repr(value)) if isinstance(value, float) else D(str(value))


# -- live: one trade per fill -------------------------------------------------------------


def test_each_fill_is_one_trade_and_the_trades_add_up_exactly() -> None:
    frames = [
        order_frame("F1", amount="1", status="TRADING"),
        order_frame("F1", amount="1", status="PARTIAL", filled="0.1", value="0.05001"),
        order_frame("F1", amount="1", status="PARTIAL", filled="0.3", value="0.15003"),
        order_frame("F1", amount="1", status="PARTIAL", filled="0.3", value="0.15003"),  # again
        order_frame("F1", amount="1", status="FILLED", filled="1", value="0.50013"),
    ]
    result = replay(object(), frames)
    trades = result.trades
    assert [t["id"] for t in trades] == ["F1:0.1", "F1:0.3", "F1:1"]
    assert [t["amount"] for t in trades] == [0.1, 0.2, 0.7]
    assert sum(dec(t["amount"]) for t in trades) == dec(result.orders[-1]["filled"])
    assert sum(dec(t["cost"]) for t in trades) == dec(result.orders[-1]["cost"])  # exactly
    assert trades[1]["price"] == pytest.approx(0.10002 / 0.2)
    assert all(t["order"] == "F1" and t["symbol"] == "XRP/USDT:USDT" for t in trades)
    assert all(t["fee"] is None for t in trades)  # the stream does not say
    # each trade right after the order update that showed it
    hooks = [name for name, _ in result.calls if name in ("on_order", "on_trade")]
    assert hooks == [
        *("on_order", "on_order", "on_trade", "on_order", "on_trade"),
        *("on_order", "on_order", "on_trade"),
    ]


def test_an_older_update_come_again_sets_nothing_back_and_repeats_no_trade() -> None:
    """A stopping stream's drain can deliver again what the standby flushed: 1, 2, 1, 2."""
    frames = [
        order_frame("F1", amount="1", status="PARTIAL", filled="0.1", value="0.05"),
        order_frame("F1", amount="1", status="PARTIAL", filled="0.2", value="0.1"),
        order_frame("F1", amount="1", status="PARTIAL", filled="0.1", value="0.05"),  # again
        order_frame("F1", amount="1", status="PARTIAL", filled="0.2", value="0.1"),  # again
    ]
    trades = replay(object(), frames).trades
    assert [t["id"] for t in trades] == ["F1:0.1", "F1:0.2"]
    assert sum(dec(t["amount"]) for t in trades) == D("0.2")


def test_a_fills_figures_are_those_of_the_orders_floats_however_the_text_is_written() -> None:
    """The fills step takes the exact decimals the mapping read from the text where they
    are the floats' own (at most 15 digits); a longer text is the float's repr, as ccxt's
    fields are, so ids and sums stay those of the delivered order."""
    long = "0.12345678901234567890"  # 20 digits: the float holds 17 of them
    frames = [
        order_frame("F1", amount="1", status="PARTIAL", filled="0.100", value="0.0500"),
        order_frame("F1", amount="1", status="PARTIAL", filled=long, value=long),
        order_frame("F1", amount="1", status="CANCELLED", filled=long, value=long),  # no fill
        order_frame("F1", amount="1", status="CANCELLED", filled=long, value=long),  # again
    ]
    result = replay(object(), frames)
    trades = result.trades
    # the id is the cumulative filled: the delivered float's decimal, not the longer text
    assert [t["id"] for t in trades] == ["F1:0.1", f"F1:{float(long)!r}"]
    assert trades[1]["amount"] == float(D(repr(float(long))) - D("0.1"))
    assert trades[1]["cost"] == float(D(repr(float(long))) - D("0.05"))
    assert [o["status"] for o in result.orders] == ["open", "open", "canceled", "canceled"]


def test_a_market_fill_is_taker_a_post_only_one_maker_and_others_unknown() -> None:
    result = replay(
        object(),
        [
            order_frame("M", type="MARKET", status="FILLED", amount="2", filled="2", value="1"),
            order_frame("P", status="FILLED", amount="2", filled="2", value="1", tif="PO"),
            order_frame("L", status="FILLED", amount="2", filled="2", value="1"),
        ],
    )
    assert [t["takerOrMaker"] for t in result.trades] == ["taker", "maker", None]


def test_the_side_the_stream_lacks_is_learnt_and_filled_in() -> None:
    mapper, fills = Mapper("a"), None
    fills = Fills(mapper.symbols)
    order = mapped_order(mapper, order_id="F9", side=None, status="PARTIAL", filled="1", value="2")
    assert order["side"] is None
    fills.learn("F9", "sell")  # from the REST open orders, the history, or create_order
    (trade,) = fills.on_order(order, 1)
    assert order["side"] == "sell"
    assert trade["side"] == "sell"
    done = mapped_order(mapper, order_id="F9", side=None, status="FILLED", filled="2", value="4")
    fills.on_order(done, 2)
    assert fills.side("F9") is None  # a finished order is forgotten: memory stays bounded
    assert fills.known("F9") is None


@pytest.mark.parametrize(
    ("position", "direction", "reading", "side"),
    [
        ("BUY", "OPEN", "trade", "buy"),
        ("BUY", "CLOSE", "trade", "buy"),
        ("BUY", "CLOSE", "position", "sell"),
        ("SELL", "CLOSE", "position", "buy"),
        (1, 0, "position", "sell"),
        (None, "OPEN", "trade", None),
    ],
)
def test_close_side_readings(position: Any, direction: Any, reading: Any, side: Any) -> None:
    assert side_of(position, direction, reading) == side


# -- after a gap: recovered from the history ---------------------------------------------


def history(order_id: str, qty: str, value: str, n: int, **extra: Any) -> dict[str, Any]:
    return {
        "id": n,
        "order_id": order_id,
        "ticker": "BTCUSDT",
        "symbol": "USDT",
        "position": "BUY",
        "direction": "OPEN",
        "order_type": "LIMIT",
        "role": "MAKER",
        "price": float(D(value) / D(qty)),
        "traded_qty": float(qty),
        "traded_value": float(value),
        "trading_fee": float(D(value) * D("0.0002")),
        "transaction_time": f"2026-12-01T10:00:{n:02d}",
        **extra,
    }


def rest_order(order_id: str, filled: str, cost: str, amount: str = "1") -> dict[str, Any]:
    return {
        "order_id": order_id,
        "ticker": "BTCUSDT",
        "status": 4,
        "order_type": 1,
        "position": 0,
        "direction": 0,
        "order_price": 100,
        "order_qty": float(amount),
        "traded_qty": float(filled),
        "traded_value": float(cost),
        "left_qty": float(D(amount) - D(filled)),
        "order_time": "2026-12-01T09:59:00",
    }


def gap_plan(history_records: list[dict[str, Any]] | None) -> tuple[resync.Plan, Fills]:
    """Before the gap: F1 open, 0.1 filled (delivered live); F2 open, nothing filled.
    Meanwhile F1 filled to 0.4 (two fills), F2 filled wholly and vanished, and F3 was
    placed and filled within the gap."""
    mapper = Mapper("a")
    ledger = resync.Ledger()
    fills = Fills(mapper.symbols)
    for order in (
        mapped_order(mapper, order_id="F1", ticker="BTCUSDT", amount="1", price="100",
                     status="PARTIAL", filled="0.1", value="10"),
        mapped_order(mapper, order_id="F2", ticker="BTCUSDT", amount="0.5", price="100"),
    ):  # fmt: skip
        fills.on_order(order, 1)
        ledger.record("on_order", order)
    plan = resync.plan(
        ledger,
        mapper.assets,
        mapper.symbols,
        wallet=[],
        positions=[],
        orders=[rest_order("F1", "0.4", "40")],
        held=set(),
    )
    return resync.plan_fills(plan, ledger, fills, history_records), fills


HISTORY = [
    history("F1", "0.1", "10", 1),  # before the gap: delivered live already
    history("F1", "0.2", "20", 2),
    history("F2", "0.25", "25", 3),
    history("F1", "0.1", "10", 4),
    history("F2", "0.25", "25", 5),
    history("F3", "0.3", "30.3", 6, role="TAKER", order_type="MARKET"),
    history("F1", "0.2", "20", 7),  # after the snapshot: the live stream brings it
]


def test_a_gaps_fills_are_recovered_from_the_history_after_their_orders() -> None:
    plan, _ = gap_plan(HISTORY)
    sequence = [
        (d.hook, d.obj["id"], d.obj.get("status"), d.obj.get("amount")) for d in plan.deliveries
    ]
    assert sequence == [
        ("on_order", "F1", "open", 1.0),
        ("on_trade", "F1:0.3", None, 0.2),
        ("on_trade", "F1:0.4", None, 0.1),
        ("on_order", "F2", "closed", 0.5),  # the history shows it wholly filled
        ("on_trade", "F2:0.25", None, 0.25),
        ("on_trade", "F2:0.5", None, 0.25),
        ("on_trade", "F3:0.3", None, 0.3),  # placed and filled within the gap
    ]
    trades = {d.obj["id"]: d.obj for d in plan.deliveries if d.hook == "on_trade"}
    assert trades["F1:0.3"]["fee"] == {"cost": 0.004, "currency": "USDT"}
    assert trades["F1:0.3"]["takerOrMaker"] == "maker"
    assert trades["F3:0.3"]["takerOrMaker"] == "taker"
    assert trades["F3:0.3"]["type"] == "market"
    assert trades["F3:0.3"]["side"] == "buy"
    assert plan.vanished_orders == []  # F2's end is known now
    assert plan.estimated == []


def test_fills_the_history_lacks_are_one_estimated_trade_and_reported() -> None:
    plan, _ = gap_plan(None)  # the history could not be fetched
    trades = [d.obj for d in plan.deliveries if d.hook == "on_trade"]
    (estimate,) = trades
    assert estimate["id"] == "F1:0.4"  # the id the real fills' last would have had
    assert estimate["amount"] == pytest.approx(0.3)
    assert estimate["cost"] == pytest.approx(30)
    assert estimate["info"]["estimated"] is True
    assert estimate["fee"] is None
    assert plan.estimated == ["F1"]
    assert plan.vanished_orders == ["F2"]  # unknown end: still reported


def test_the_recovered_state_is_where_live_fills_continue() -> None:
    plan, fills = gap_plan(HISTORY)
    ledger = resync.Ledger()
    resync.apply(plan, ledger, Mapper("a"), fills)
    known = fills.known("F1")
    assert known == (pair(0.4), pair(40.0))
    mapper = Mapper("a")
    live = mapped_order(mapper, order_id="F1", ticker="BTCUSDT", amount="1", price="100",
                        status="PARTIAL", filled="0.6", value="60")  # fmt: skip
    (trade,) = fills.on_order(live, 9)
    assert (trade["id"], trade["amount"]) == ("F1:0.6", 0.2)  # F1's 7th record, once
    assert fills.known("F2") is None


def test_an_order_gone_partly_filled_is_not_traded_again_by_its_late_final_frame() -> None:
    """F2 filled 0.25 of 0.5 in the gap and vanished (cancelled, the stream will say): the
    history's 0.25 is delivered, and the late CANCELLED frame at 0.25 is no new trade; one
    at 0.3 (a fill the history missed) is 0.05, once."""
    records = [history("F1", "0.1", "10", 1), history("F2", "0.25", "25", 3)]
    for late_fill, late_value, expected in (("0.25", "25", []), ("0.3", "30", [("F2:0.3", 0.05)])):
        plan, fills = gap_plan(records)
        recovered = [
            (d.obj["id"], d.obj["amount"]) for d in plan.deliveries if d.hook == "on_trade"
        ]
        assert ("F2:0.25", 0.25) in recovered
        assert plan.vanished_orders == ["F2"]  # its end is unknown
        resync.apply(plan, resync.Ledger(), Mapper("a"), fills)
        late = mapped_order(Mapper("a"), order_id="F2", ticker="BTCUSDT", amount="0.5",
                            price="100", status="CANCELLED", filled=late_fill,
                            value=late_value)  # fmt: skip
        got = [(t["id"], dec(t["amount"])) for t in fills.on_order(late, 10)]
        assert got == [(i, dec(a)) for i, a in expected], late_fill
        assert fills.on_order(late, 11) == []  # and its repetition: nothing


def test_an_order_the_gap_closed_leaves_nothing_remembered_but_that_it_is_done() -> None:
    """F2 closed within the gap: its trades come after it in the plan, and remembering its
    side from them would keep an entry for every such order (the reconnect-memory test
    saw it grow by one a cycle)."""
    plan, fills = gap_plan(HISTORY)
    resync.apply(plan, resync.Ledger(), Mapper("a"), fills)
    assert fills.side("F2") is None
    assert fills.known("F2") is None
    assert fills.finished("F2")
    assert fills.side("F1") == "buy"  # still open: its side stays known
    # the held live frame of F2's fill, after the plan: no trade again, and its side from
    # the tombstone (kept DONE_KEEP_MS), as a repeated final frame of an order done live
    held = mapped_order(Mapper("a"), order_id="F2", ticker="BTCUSDT", amount="0.5",
                        price="100", status="FILLED", filled="0.5", value="50",
                        side=None)  # fmt: skip
    assert held["side"] is None  # a frame without the position field
    assert fills.on_order(held, 9) == []
    assert held["side"] == "buy"


def test_an_order_delivered_closed_before_the_gap_brings_no_trade_from_its_history() -> None:
    """The gap's history starts a little before the gap: an order that filled and closed
    live just before it is in that history, and must not be traded again."""
    mapper = Mapper("a")
    ledger = resync.Ledger()
    fills = Fills(mapper.symbols)
    closed = mapped_order(mapper, order_id="F9", ticker="BTCUSDT", amount="0.5", price="100",
                          status="FILLED", filled="0.5", value="50")  # fmt: skip
    (live,) = fills.on_order(closed, 1)
    ledger.record("on_order", closed)
    assert fills.on_order(closed, 2) == []  # a repeated final frame: nothing again
    plan = resync.plan(ledger, mapper.assets, mapper.symbols, wallet=[], positions=[],
                       orders=[], held=set())  # fmt: skip
    plan = resync.plan_fills(plan, ledger, fills, [history("F9", "0.5", "50", 1)])
    assert [d for d in plan.deliveries if d.hook == "on_trade"] == []
    assert live["id"] == "F9:0.5"


def test_an_order_recovered_from_the_history_is_not_traded_again_by_its_held_frame() -> None:
    """Placed and filled while the snapshot was in flight: the history brings its fill,
    then its held live frame shows the same cumulative fill, which is no new trade."""
    mapper = Mapper("a")
    ledger = resync.Ledger()
    fills = Fills(mapper.symbols)
    plan = resync.plan(ledger, mapper.assets, mapper.symbols, wallet=[], positions=[],
                       orders=[], held=set())  # fmt: skip
    plan = resync.plan_fills(plan, ledger, fills, [history("F7", "0.3", "30", 1)])
    assert [d.obj["id"] for d in plan.deliveries if d.hook == "on_trade"] == ["F7:0.3"]
    resync.apply(plan, ledger, mapper, fills)
    held = mapped_order(mapper, order_id="F7", ticker="BTCUSDT", amount="0.5", price="100",
                        status="PARTIAL", filled="0.3", value="30")  # fmt: skip
    assert fills.on_order(held, 2) == []
    more = mapped_order(mapper, order_id="F7", ticker="BTCUSDT", amount="0.5", price="100",
                        status="FILLED", filled="0.5", value="50")  # fmt: skip
    (trade,) = fills.on_order(more, 3)
    assert (trade["id"], trade["amount"]) == ("F7:0.5", 0.2)


def test_an_order_that_filled_before_the_window_keeps_its_cumulative_ids() -> None:
    """0.004 filled (and delivered) long before the gap, 0.006 during it; the history
    window holds only the 0.006: what came before it is the snapshot's fill less the
    window's, so the gap's fill is 0.006 with id F5:0.01, not a 0.002 slice of it. A new
    owner that delivered nothing of F5 (a worker takeover) gives it the same id, which
    consumers de-duplicate by."""
    snapshot = [rest_order("F5", "0.01", "1", amount="0.02")]
    window = [history("F5", "0.006", "0.6", 2)]
    for delivered in (True, False):
        mapper = Mapper("a")
        ledger = resync.Ledger()
        fills = Fills(mapper.symbols)
        if delivered:
            before = mapped_order(mapper, order_id="F5", ticker="BTCUSDT", amount="0.02",
                                  price="100", status="PARTIAL", filled="0.004",
                                  value="0.4")  # fmt: skip
            fills.on_order(before, 1)
            ledger.record("on_order", before)
        plan = resync.plan(ledger, mapper.assets, mapper.symbols, wallet=[], positions=[],
                           orders=snapshot, held=set())  # fmt: skip
        plan = resync.plan_fills(plan, ledger, fills, window)
        trades = [(d.obj["id"], d.obj["amount"]) for d in plan.deliveries if d.hook == "on_trade"]
        assert trades == [("F5:0.01", 0.006)], delivered
        assert plan.estimated == []
    # a window that also holds a fill the live stream delivered before the gap: skipped
    mapper, ledger = Mapper("a"), resync.Ledger()
    fills = Fills(mapper.symbols)
    before = mapped_order(mapper, order_id="F5", ticker="BTCUSDT", amount="0.02", price="100",
                          status="PARTIAL", filled="0.004", value="0.4")  # fmt: skip
    fills.on_order(before, 1)
    ledger.record("on_order", before)
    plan = resync.plan(ledger, mapper.assets, mapper.symbols, wallet=[], positions=[],
                       orders=snapshot, held=set())  # fmt: skip
    both = [history("F5", "0.003", "0.3", 1), *window]  # 0.001 before the window, 0.003 in
    plan = resync.plan_fills(plan, ledger, fills, both)
    trades = [(d.obj["id"], d.obj["amount"]) for d in plan.deliveries if d.hook == "on_trade"]
    assert trades == [("F5:0.01", 0.006)]


def test_an_old_order_that_vanished_in_the_gap_keeps_its_cumulative_ids() -> None:
    """Placed long ago, 0.004 filled and delivered; it filled to 0.01 during the gap and is
    gone from the snapshot. The window holds only the 0.006: its id is F5:0.01, and the
    order is known closed (the history shows it wholly filled)."""
    mapper = Mapper("a")
    ledger = resync.Ledger()
    fills = Fills(mapper.symbols)
    before = mapped_order(mapper, order_id="F5", ticker="BTCUSDT", amount="0.01", price="100",
                          status="PARTIAL", filled="0.004", value="0.4",
                          created_time=1_796_119_000_000)  # fmt: skip
    fills.on_order(before, 1)
    ledger.record("on_order", before)
    plan = resync.plan(ledger, mapper.assets, mapper.symbols, wallet=[], positions=[],
                       orders=[], held=set())  # fmt: skip
    gap_ms = 1_796_119_201_500  # history(n) is 2026-12-01T10:00:n: n=2 is in the gap
    plan = resync.plan_fills(plan, ledger, fills, [history("F5", "0.006", "0.6", 2)],
                             window_start_ms=gap_ms - 5_000, gap_ms=gap_ms)  # fmt: skip
    trades = [(d.obj["id"], d.obj["amount"]) for d in plan.deliveries if d.hook == "on_trade"]
    assert trades == [("F5:0.01", 0.006)]
    assert [d.obj["status"] for d in plan.deliveries if d.hook == "on_order"] == ["closed"]


@pytest.mark.parametrize("inherited", [True, False], ids=["inherited", "from-nothing"])
def test_a_takeover_that_inherits_the_order_states_counts_no_delivered_fill_again(
    inherited: bool,
) -> None:
    """A worker takes an account over after the previous owner died, and reads the trade
    history from a margin before the last event it wrote. Its orders, filled before that
    window and again in it, are unknown here: without their last delivered states (the
    Redis sink's orders hash) their fills are counted from zero, under other ids than the
    previous owner gave them, and counted twice."""
    previous = Mapper("a")
    delivered = [  # what the previous owner delivered last of each order, as jsonl records
        mapped_order(previous, order_id="F7", ticker="BTCUSDT", amount="0.005", price="100",
                     status="FILLED", filled="0.005", value="0.5", event_time=1),
        mapped_order(previous, order_id="F8", ticker="BTCUSDT", amount="0.01", price="100",
                     status="PARTIAL", filled="0.004", value="0.4", event_time=2,
                     created_time=1_796_119_000_000),
    ]  # fmt: skip
    records = [
        orjson.loads(orjson.dumps({"hook": "on_order", "order": o, "event": {"eventTime": t}}))
        for t, o in enumerate(delivered, 1)
    ]
    mapper = Mapper("a")
    ledger = resync.Ledger()
    fills = Fills(mapper.symbols)
    if inherited:
        assert resync.inherit(ledger, fills, [*records, {"hook": "on_order"}]) == 2
    plan = resync.plan(ledger, mapper.assets, mapper.symbols, wallet=[], positions=[],
                       orders=[], held=set())  # fmt: skip
    gap_ms = 1_796_119_201_500  # history(n) is 2026-12-01T10:00:n: n=0 is before the gap
    window = [
        history("F7", "0.002", "0.2", 0),  # F7 filled 0.001 long before, then these two
        history("F7", "0.002", "0.2", 1),
        history("F8", "0.003", "0.3", 0),  # F8 filled 0.001 long before, then 0.003...
        history("F8", "0.006", "0.6", 2),  # ...and in the gap the rest: it is gone
    ]
    plan = resync.plan_fills(plan, ledger, fills, window, window_start_ms=gap_ms - 5_000,
                             gap_ms=gap_ms)  # fmt: skip
    trades = [(d.obj["id"], d.obj["amount"]) for d in plan.deliveries if d.hook == "on_trade"]
    if inherited:
        assert trades == [("F8:0.01", 0.006)]  # only the gap's fill, under its true id
        assert [d.obj["status"] for d in plan.deliveries if d.hook == "on_order"] == ["closed"]
    else:  # what a takeover did before: F7's and F8's delivered fills again, other ids
        assert ("F7:0.004", 0.002) in trades
        assert ("F8:0.003", 0.003) in trades


# -- trading against the simulator, with a gap ----------------------------------------------


# time_scale 1: a listenKey lasts a real hour (at the default 3600 it lasts a real second,
# and a loaded machine misses keep-alives: gaps the test did not make)
@pytest.mark.bitmusa_simulator(script=False, event_interval=None, seed=5, time_scale=1)
async def test_trading_through_a_gap_loses_and_duplicates_no_fill(sim: Simulator) -> None:
    await sim.set_price("BTCUSDT", "100000")
    seen = Recorder()
    timing = lc.Timing(
        retry_initial=0.05, retry_max=0.2, stable_after=0.3, keepalive_interval=60,
        key_validity=3600, rotate_after=600,
    )  # fmt: skip
    config = AccountConfig("a", Credentials(DEMO_API_KEY, DEMO_AUTH_KEY), sim.rest_url, sim.ws_url)
    async with (
        httpx.AsyncClient(base_url=sim.rest_url, headers=HEADERS, timeout=5) as client,
        Session([seen], command="test", timing=timing, heartbeat=Heartbeat(2.0, 10.0)) as s,
    ):
        s.add(config)
        await until(lambda: "connected" in seen.states, seen=seen)
        # live: a limit order fills in three parts
        first = await place(client, order_type=1, order_price="99000", order_qty="0.01")
        await sim.set_price("BTCUSDT", "99000", volume="0.003")
        await sim.set_price("BTCUSDT", "99000", volume="0.002")
        await until(lambda: len(seen.trades) == 2, seen=seen)
        # the gap: the stream is down while the order fills further, another one is placed
        # and filled, and a third rests untouched
        sim.refuse(1000)
        sim.drop()
        await until(lambda: "disconnected" in seen.states, seen=seen)
        await sim.set_price("BTCUSDT", "98990", volume="0.004")
        second = await place(client, order_type=0, order_price="0", order_qty="0.02")
        await place(client, order_type=1, order_price="90000", order_qty="0.01")
        gap_fills = len(sim.engine().fills)
        sim.accept()
        await until(lambda: "gap" in seen.states, seen=seen)
        await until(lambda: sum(1 for t in seen.trades if t["order"] == second) == 1, seen=seen)
        # live again: the first order's last part
        await sim.set_price("BTCUSDT", "98980", volume="1")
        await until(lambda: seen.orders.get(first, {}).get("status") == "closed", seen=seen)
        await s.drain(5)
    truth = list(sim.engine().fills)
    assert len(truth) > gap_fills >= 4
    # every fill of the engine is one trade, none twice, the amounts and costs exact
    assert len(seen.trades) == len(truth)
    assert len({t["id"] for t in seen.trades}) == len(seen.trades)
    for order_id in {f.order_id for f in truth}:
        fills = [f for f in truth if f.order_id == order_id]
        trades = [t for t in seen.trades if t["order"] == order_id]
        assert sum(dec(t["amount"]) for t in trades) == sum(f.qty for f in fills)
        assert sum(dec(t["cost"]) for t in trades) == sum(f.value for f in fills)
    # the gap's fills came from the history: fee and role as the engine charged them
    recovered = [t for t in seen.trades if t["fee"] is not None]
    assert recovered
    by_id = {str(f.trade_id): f for f in truth}
    for trade in recovered:
        fill = by_id[str(trade["info"]["id"])]
        assert dec(trade["fee"]["cost"]) == fill.fee
        assert trade["takerOrMaker"] == fill.role.lower()
    assert [e for e in seen.errors if e["kind"] == "trade_estimated"] == []


def test_orders_done_are_remembered_longer_than_the_gap_history_reaches_back() -> None:
    """A gap's history begins GAP_HISTORY_MARGIN_MS before the gap: an order delivered done
    within that margin must still be known as done when the history comes."""
    from bitmusa_plugin._core.fills import DONE_KEEP_MS
    from bitmusa_plugin._engine.stream import GAP_HISTORY_MARGIN_MS

    assert DONE_KEEP_MS > GAP_HISTORY_MARGIN_MS
    mapper = Mapper("a")
    fills = Fills(mapper.symbols)
    for n, order_id in enumerate(("F1", "F2", "F3")):
        closed = mapped_order(mapper, order_id=order_id, ticker="BTCUSDT", amount="0.1",
                              price="100", status="FILLED", filled="0.1",
                              value="10")  # fmt: skip
        fills.on_order(closed, 1_000_000 + n * (DONE_KEEP_MS // 2 + 1))
    assert not fills.finished("F1")  # older than DONE_KEEP_MS: let go (memory stays bounded)
    assert fills.finished("F2")
    assert fills.finished("F3")
