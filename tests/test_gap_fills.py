"""Every fill exactly once across a gap (issue 19), over loopback against the simulator's
matching engine: a history longer than any page count, a history that fails for good or
is cut by its time bound (estimated trades close the sum, each reported), and the
snapshot/history race. Then the pure proof of where an order's records start."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from decimal import Decimal as D
from typing import Any

import httpx
import pytest
from recording import Recorder, place, until

from bitmusa_plugin import AccountConfig, Credentials, Session
from bitmusa_plugin._core import machine as lc
from bitmusa_plugin._core import resync
from bitmusa_plugin._engine import stream as stream_module
from bitmusa_plugin._engine.rest import AccountClient
from bitmusa_plugin._engine.stream import Heartbeat
from bitmusa_plugin.simulator import DEMO_API_KEY, DEMO_AUTH_KEY, Simulator

HEADERS = {"x-api-key": DEMO_API_KEY, "Authorization": f"Bearer {DEMO_AUTH_KEY}"}
TIMING = lc.Timing(
    retry_initial=0.05, retry_max=0.2, stable_after=0.3, keepalive_interval=60,
    key_validity=3600, rotate_after=600,
)  # fmt: skip


@asynccontextmanager
async def streaming(
    sim: Simulator, seen: Recorder, **session: Any
) -> AsyncIterator[httpx.AsyncClient]:
    config = AccountConfig("a", Credentials(DEMO_API_KEY, DEMO_AUTH_KEY), sim.rest_url, sim.ws_url)
    async with (
        httpx.AsyncClient(base_url=sim.rest_url, headers=HEADERS, timeout=5) as client,
        Session([seen], command="test", timing=TIMING, heartbeat=Heartbeat(2.0, 10.0),
                **session) as s,
    ):  # fmt: skip
        s.add(config)
        await until(lambda: "connected" in seen.states, 30.0, seen)
        yield client
        await s.drain(5)


async def outage(sim: Simulator, seen: Recorder) -> None:
    sim.refuse(1000)
    sim.drop()
    await until(lambda: "disconnected" in seen.states, 30.0, seen)


def assert_exact(sim: Simulator, seen: Recorder, order_id: str) -> list[dict[str, Any]]:
    """The order's trades add up exactly to the engine's fills, no id twice."""
    truth = [f for f in sim.engine().fills if f.order_id == order_id]
    trades = [t for t in seen.trades if t["order"] == order_id]
    assert len({t["id"] for t in trades}) == len(trades)
    assert sum(D(str(t["amount"])) for t in trades) == sum(f.qty for f in truth)
    assert sum(D(str(t["cost"])) for t in trades) == sum(f.value for f in truth)
    return trades


async def fill_in_parts(sim: Simulator, parts: int, qty: str = "0.001") -> None:
    for _ in range(parts):
        await sim.set_price("BTCUSDT", "990", volume=qty)


@pytest.mark.bitmusa_simulator(script=False, event_interval=None, seed=7, time_scale=1)
async def test_2300_fills_in_one_gap_are_2300_trades_summing_exactly(sim: Simulator) -> None:
    """The history is read back to the gap's start however many pages that takes (it was
    capped at 2,000 records: 2,000 trades summing 2.000 and a false resync_incomplete)."""
    await sim.set_price("BTCUSDT", "1000")
    seen = Recorder()
    async with streaming(sim, seen) as client:
        order = await place(client, order_type=1, order_price="990", order_qty="2.3")
        await until(lambda: order in seen.orders, 30.0, seen)
        await outage(sim, seen)
        await fill_in_parts(sim, 2300)
        sim.accept()
        await until(lambda: seen.orders[order]["status"] == "closed", 30.0, seen)
    trades = assert_exact(sim, seen, order)
    assert len(trades) == 2300
    assert all(t["fee"] is not None and not t["info"].get("estimated") for t in trades)
    assert seen.kinds("trade_estimated") == []
    assert seen.kinds("resync_incomplete") == []


@pytest.mark.bitmusa_simulator(script=False, event_interval=None, seed=7, time_scale=1)
async def test_a_history_that_fails_for_good_gives_estimated_trades_that_close_the_sum(
    sim: Simulator,
) -> None:
    await sim.set_price("BTCUSDT", "1000")
    seen = Recorder()
    async with streaming(sim, seen, history_budget=3.0) as client:
        order = await place(client, order_type=1, order_price="990", order_qty="1")
        await fill_in_parts(sim, 1, "0.1")
        await until(lambda: len(seen.trades) == 1, 30.0, seen)
        await outage(sim, seen)
        await fill_in_parts(sim, 3, "0.1")
        sim.fail_rest("503", 10_000, method="GET", path="/future/trade/history")
        sim.accept()
        await until(lambda: seen.kinds("trade_estimated"), 30.0, seen)
        await until(lambda: seen.orders[order]["filled"] == 0.4, 30.0, seen)
    trades = assert_exact(sim, seen, order)
    estimated = [t for t in trades if t["info"].get("estimated")]
    assert len(estimated) == 1
    assert estimated[0]["amount"] == pytest.approx(0.3)
    assert order in seen.kinds("trade_estimated")[0]
    assert "could not be fetched" in seen.kinds("trade_estimated")[0]


@pytest.mark.bitmusa_simulator(script=False, event_interval=None, seed=7, time_scale=1)
async def test_a_history_page_that_fails_many_times_is_read_while_the_time_bound_lasts(
    sim: Simulator,
) -> None:
    """The read is bounded by time, not by a count: a page that fails six times in a row
    (a 429, then 5xx: what the fills property test's long profile met) and then answers
    gives the gap's fills. Before, the fifth failure ended the read, and an order that
    had filled and left the open orders in the gap was reported with its end unknown,
    its fills never delivered."""
    await sim.set_price("BTCUSDT", "1000")
    seen = Recorder()
    async with streaming(sim, seen) as client:
        order = await place(client, order_type=1, order_price="990", order_qty="0.3")
        await until(lambda: order in seen.orders, 30.0, seen)
        await outage(sim, seen)
        await fill_in_parts(sim, 3, "0.1")  # filled whole in the gap: not open any more
        sim.fail_rest("429", 1, method="GET", path="/future/trade/history")
        sim.fail_rest("500", 5, method="GET", path="/future/trade/history")
        sim.accept()
        await until(lambda: seen.orders[order]["filled"] == 0.3, 30.0, seen)
        await until(lambda: len(seen.trades) == 3, 30.0, seen)
    trades = assert_exact(sim, seen, order)
    assert not any(t["info"].get("estimated") for t in trades)
    assert not seen.kinds("resync_incomplete")
    assert len([m for m in seen.kinds("rest_error") if "6 failed page reads" in m]) == 1


@pytest.mark.bitmusa_simulator(script=False, event_interval=None, seed=7, time_scale=1)
async def test_a_history_cut_by_its_time_bound_is_completed_by_estimates(sim: Simulator) -> None:
    """A bound too short for the gap's pages: what was read is delivered, the part it
    did not reach is one estimated trade (before the records), reported twice: what was
    estimated, and that the history did not reach the gap's start."""
    await sim.set_price("BTCUSDT", "1000")
    seen = Recorder()
    async with streaming(sim, seen, history_budget=1.0, rest_rate=(4, 200)) as client:
        order = await place(client, order_type=1, order_price="990", order_qty="2")
        await until(lambda: order in seen.orders, 30.0, seen)
        await outage(sim, seen)
        await fill_in_parts(sim, 900)  # 9 pages: more than 1 s at 4 requests/s
        sim.accept()
        await until(lambda: seen.kinds("trade_estimated"), 30.0, seen)
        await until(lambda: seen.orders[order]["filled"] == 0.9, 30.0, seen)
    trades = assert_exact(sim, seen, order)
    estimated = [t for t in trades if t["info"].get("estimated")]
    assert len(estimated) == 1
    assert 0 < len(trades) - 1 < 900  # some records were read, not all
    assert trades.index(estimated[0]) == 0  # the hole comes before the records
    assert any("could not be read back" in m for m in seen.kinds("resync_incomplete"))


@pytest.mark.bitmusa_simulator(script=False, event_interval=None, seed=7, time_scale=1)
async def test_the_snapshot_history_race_is_closed(
    sim: Simulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An order that filled before the gap's window, in the gap, and again between the
    snapshot and the history GET: its gap fill is recovered from its own record (the
    count back from the snapshot placed the wrong record there, with its fee)."""
    monkeypatch.setattr(stream_module, "GAP_HISTORY_MARGIN_MS", 0)
    real_page = AccountClient.trade_history_page
    raced: list[bool] = []

    async def page_after_a_fill(self: Any, page: int, params: dict[str, Any]) -> Any:
        if not raced:  # once: a fill lands after the snapshot, before the history's GET
            raced.append(True)
            await fill_in_parts(sim, 1, "0.3")
        return await real_page(self, page, params)

    monkeypatch.setattr(AccountClient, "trade_history_page", page_after_a_fill)
    await sim.set_price("BTCUSDT", "1000")
    seen = Recorder()
    async with streaming(sim, seen) as client:
        order = await place(client, order_type=1, order_price="990", order_qty="1")
        await fill_in_parts(sim, 1, "0.3")
        await until(lambda: len(seen.trades) == 1, 30.0, seen)
        await asyncio.sleep(1.1)  # the live fill's second is before the gap's window
        await outage(sim, seen)
        await fill_in_parts(sim, 1, "0.2")
        sim.accept()
        await until(lambda: seen.orders[order]["filled"] == 0.8, 30.0, seen)
    assert raced
    trades = assert_exact(sim, seen, order)
    truth = [f for f in sim.engine().fills if f.order_id == order]
    gap_fill = truth[1]
    recovered = [t for t in trades if t["fee"] is not None]
    assert [t["info"]["id"] for t in recovered] == [gap_fill.trade_id]
    assert D(str(recovered[0]["amount"])) == gap_fill.qty
    assert D(str(recovered[0]["fee"]["cost"])) == gap_fill.fee
    assert seen.kinds("trade_estimated") == []


def open_record(order_id: str, traded: str) -> dict[str, Any]:
    return {"order_id": order_id, "traded_qty": traded}


def history_record(order_id: str, qty: str, n: int) -> dict[str, Any]:
    return {
        "id": n,
        "order_id": order_id,
        "traded_qty": qty,
        "traded_value": "1",
        "price": "1",
        "transaction_time": "2026-01-01T00:00:00",
    }


def test_where_an_orders_records_start_is_proven_or_not_at_all() -> None:
    records = [history_record("A", "0.3", 2), history_record("A", "0.2", 1)]
    # unchanged around the read: the snapshot's fill less the records
    assert resync.proven_bases([open_record("A", "0.8")], records, [open_record("A", "0.8")]) == {
        "A": (3, 1)
    }
    # it filled during the read (the race): not proven
    assert resync.proven_bases([open_record("A", "0.5")], records, [open_record("A", "0.8")]) == {}
    # ... unless nothing can be before the records: 0 either way
    assert resync.proven_bases([open_record("A", "0.3")], records, [open_record("A", "0.5")]) == {
        "A": (0, 0)
    }
    # gone from the second snapshot, or unreadable: not proven
    assert resync.proven_bases([open_record("A", "0.8")], records, []) == {}
    assert resync.proven_bases([open_record("A", "x")], records, [open_record("A", "x")]) == {}
