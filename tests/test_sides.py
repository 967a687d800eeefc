"""A side for every order and trade (issue 19 §2): an order another client of the account
placed is new to the engine and its stream frames carry no side; the engine learns it over
REST before the order's first delivery, within ``side_wait``, holding only that order's
frames. Over loopback against the simulator."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import httpx
import pytest
from recording import Recorder, place, until

from bitmusa_plugin import AccountConfig, Credentials, Session
from bitmusa_plugin._core import machine as lc
from bitmusa_plugin._engine.sides import SIDE_WAIT
from bitmusa_plugin._engine.stream import Heartbeat
from bitmusa_plugin.simulator import DEMO_API_KEY, DEMO_AUTH_KEY, Simulator
from ccxt_reference import ccxt_test, make_exchange

HEADERS = {"x-api-key": DEMO_API_KEY, "Authorization": f"Bearer {DEMO_AUTH_KEY}"}
TIMING = lc.Timing(
    retry_initial=0.05, retry_max=0.2, stable_after=0.3, keepalive_interval=60,
    key_validity=3600, rotate_after=600,
)  # fmt: skip
SIM = pytest.mark.bitmusa_simulator(script=False, event_interval=None, seed=3, time_scale=1)


@SIM
async def test_orders_another_client_placed_get_their_side_before_their_first_delivery(
    sim: Simulator,
) -> None:
    await sim.set_price("BTCUSDT", "1000")
    seen = Recorder()
    config = AccountConfig("a", Credentials(DEMO_API_KEY, DEMO_AUTH_KEY), sim.rest_url, sim.ws_url)
    async with (
        httpx.AsyncClient(base_url=sim.rest_url, headers=HEADERS, timeout=5) as client,
        Session(
            [seen],
            command="test",
            timing=TIMING,
            heartbeat=Heartbeat(2.0, 10.0),
            side_wait=SIDE_WAIT,
        ) as s,
    ):
        s.add(config)
        await until(lambda: "connected" in seen.states)
        resting = await place(client, position=0, order_type=1, order_price="990", order_qty="0.3")
        await sim.set_price("BTCUSDT", "990", volume="0.1")  # a part, then the rest
        await sim.set_price("BTCUSDT", "990", volume="0.2")
        market = await place(client, position=1, order_type=0, order_price="0", order_qty="0.1")
        await until(lambda: len(seen.trades) == 3)
        await s.drain(5)
    sides = {resting: "buy", market: "sell"}
    assert {o["id"] for o in seen.updates} == set(sides)
    assert all(o["side"] == sides[o["id"]] for o in seen.updates)  # the first update too
    assert all(t["side"] == sides[t["order"]] for t in seen.trades)
    assert [e for e in seen.errors if e["kind"] == "side_unknown"] == []


@SIM
async def test_a_side_that_cannot_be_learnt_in_time_is_none_reported_once(sim: Simulator) -> None:
    """The open orders and the history fail: the order goes out after ``side_wait`` with
    side None, reported once with why; its later frames do not wait again."""
    await sim.set_price("BTCUSDT", "1000")
    seen = Recorder()
    config = AccountConfig("a", Credentials(DEMO_API_KEY, DEMO_AUTH_KEY), sim.rest_url, sim.ws_url)
    async with (
        httpx.AsyncClient(base_url=sim.rest_url, headers=HEADERS, timeout=5) as client,
        Session([seen], command="test", timing=TIMING, heartbeat=Heartbeat(2.0, 10.0),
                side_wait=0.2) as s,
    ):  # fmt: skip
        s.add(config)
        await until(lambda: "connected" in seen.states)
        sim.fail_rest("503", 4, method="GET")
        resting = await place(client, position=0, order_type=1, order_price="990", order_qty="0.3")
        await sim.set_price("BTCUSDT", "990", volume="0.1")
        await until(lambda: len(seen.trades) == 1)
        await sim.set_price("BTCUSDT", "990", volume="0.2")
        await until(lambda: len(seen.trades) == 2)
        await s.drain(5)
    assert {o["id"] for o in seen.updates} == {resting}
    assert all(o["side"] is None for o in seen.updates)
    unknown = [e["message"] for e in seen.errors if e["kind"] == "side_unknown"]
    assert len(unknown) == 1
    assert resting in unknown[0]
    assert "503" in unknown[0] or "side_wait" in unknown[0]


@pytest.mark.bitmusa_simulator(script=False, event_interval=None, time_scale=1)
async def test_ccxt_watch_my_trades_passes_unskipped_for_orders_another_client_placed(
    sim: Simulator,
) -> None:
    """ccxt.pro's ``test_watch_my_trades`` as shipped, ``skipped_properties={}``: before
    each call another client of the account (not this exchange object) places a market
    order, so the drop-in has never seen the order it reports trades of. The side is
    learnt or reported within ``sideWait`` (0.25 s by default, a latency setting); this
    proves it is learnt, so the bound is one a loaded machine's lookups meet."""
    await sim.set_price("BTCUSDT", "1000")
    exchange = make_exchange(sim, options={"sideWait": 3.0})
    real = exchange.milliseconds
    start = real()
    exchange.milliseconds = lambda: real() + 10 * (real() - start)
    watch = exchange.watch_my_trades
    positions = itertools.cycle([0, 1])
    placed: list[str] = []
    async with httpx.AsyncClient(base_url=sim.rest_url, headers=HEADERS, timeout=5) as client:

        async def trade_then_watch(*args: Any, **kwargs: Any) -> Any:
            order = await place(
                client, position=next(positions), order_type=0, order_price="0", order_qty="0.001"
            )
            placed.append(order)
            return await watch(*args, **kwargs)

        exchange.watch_my_trades = trade_then_watch
        try:
            await exchange.load_markets()
            await exchange.watch_balance()  # the stream is up before the first order
            assert await ccxt_test("watch_my_trades")(exchange, {}, "BTC/USDT:USDT")
        finally:
            await exchange.close()
    assert len(placed) >= 2
    assert {t["order"] for t in exchange.myTrades} <= set(placed)
    assert all(t["side"] in ("buy", "sell") for t in exchange.myTrades)


@SIM
async def test_this_processs_market_orders_keep_their_side_when_the_lookup_is_slow(
    sim: Simulator, caplog: pytest.LogCaptureFixture
) -> None:
    """A market order's FILLED frame comes before its POST's answer, so the engine holds it
    as another client's; the lookup cannot answer here (its GETs time out). The POST's
    answer settles it at once: the order and its trades carry the side sent, and no
    ``side_unknown`` is reported (before, a done order's learnt side was not found, and
    it went out after ``sideWait`` with None)."""
    await sim.set_price("BTCUSDT", "1000")
    exchange = make_exchange(sim, options={"sideWait": 3.0})
    try:
        await exchange.load_markets()
        await exchange.watch_balance()  # the stream is up
        sides = itertools.cycle(["buy", "sell"])
        placed = {}
        for _ in range(4):
            sim.fail_rest("timeout", 2, method="GET", path="/future/order")
            sim.fail_rest("timeout", 2, method="GET", path="/future/trade/history")
            side = next(sides)
            order = await exchange.create_order("BTC/USDT:USDT", "market", side, 0.001)
            placed[order["id"]] = side

        def settled() -> bool:
            seen = {o["id"]: o for o in exchange.orders or ()}
            return all(i in seen and seen[i]["status"] == "closed" for i in placed)

        await asyncio.wait_for(_watch_until(exchange, settled), 2)  # within sideWait
        seen = {o["id"]: o for o in exchange.orders}
        assert {i: seen[i]["side"] for i in placed} == placed
        mine = [t for t in exchange.myTrades or () if t["order"] in placed]
        assert {t["order"] for t in mine} == set(placed)
        assert all(t["side"] == placed[t["order"]] for t in mine)
    finally:
        await exchange.close()
    assert not [r for r in caplog.records if "side_unknown" in r.getMessage()]


async def _watch_until(exchange: Any, done: Any) -> None:
    while not done():
        await exchange.watch_orders()


# -- the gate itself: a lookup that fails oddly, a side learnt while it waited ------------


def _gate_pipeline(lookup: Any) -> tuple[Any, Any, Recorder]:
    from bitmusa_plugin._engine.pipeline import Pipeline
    from bitmusa_plugin._engine.plugins import PluginRegistry
    from bitmusa_plugin._engine.sides import SideGate

    seen = Recorder()
    plugins = PluginRegistry()
    plugins.register(seen, "seen")
    pipeline = Pipeline(plugins, command="sides")
    pipeline.start(["acct"])
    gate = SideGate(pipeline, "acct", lookup, wait=0.2)
    pipeline.side_gates["acct"] = gate
    return pipeline, gate, seen


async def test_a_lookup_that_raises_still_delivers_the_order_and_frees_the_gate() -> None:
    from bitmusa_plugin.testing import order_frame

    async def broken(order: dict[str, Any]) -> tuple[str | None, str]:
        raise TypeError("a record the lookup could not read")

    pipeline, gate, seen = _gate_pipeline(broken)
    frame = order_frame("F9", side=None, amount="1", status="PARTIAL", filled="0.4", value="0.2")
    pipeline.ingest("acct", frame)
    await asyncio.wait_for(gate.idle(), 2)  # not held for ever
    await pipeline.dispatcher.drain(2.0)
    assert [o["id"] for o in seen.updates] == ["F9"]
    assert seen.updates[0]["side"] is None
    assert [t["amount"] for t in seen.trades] == [0.4]  # its trade went out with it
    assert any("TypeError" in e["message"] for e in seen.errors if e["kind"] == "side_unknown")
    await pipeline.stop()


async def test_a_side_learnt_while_the_order_waited_goes_out_with_it() -> None:
    """This process's own order whose frame beat its POST's answer: the lookup found
    nothing, but the POST's answer told the fills its side meanwhile."""
    from bitmusa_plugin.testing import order_frame

    holder: list[Any] = []

    async def late(order: dict[str, Any]) -> tuple[str | None, str]:
        holder[0].fills["acct"].learn(order["id"], "buy")  # the POST returns meanwhile
        return None, "not listed yet"

    pipeline, gate, seen = _gate_pipeline(late)
    holder.append(pipeline)
    frame = order_frame("F8", side=None, amount="1", status="PARTIAL", filled="0.4", value="0.2")
    pipeline.ingest("acct", frame)
    await asyncio.wait_for(gate.idle(), 2)
    await pipeline.dispatcher.drain(2.0)
    assert [o["side"] for o in seen.updates] == ["buy"]
    assert [t["side"] for t in seen.trades] == ["buy"]
    assert not [e for e in seen.errors if e["kind"] == "side_unknown"]
    await pipeline.stop()


@SIM
async def test_a_burst_of_orders_on_one_ticker_shares_its_reads(sim: Simulator) -> None:
    """Six orders of another client, looked up at once: they join one open-orders read
    (two at most: one in flight and the next), not one read each, and every side is
    learnt. One read an order would spend the REST allowance the keep-alive needs."""
    from bitmusa_plugin._engine.rest import AccountClient
    from bitmusa_plugin._engine.sides import rest_lookup

    async with httpx.AsyncClient(base_url=sim.rest_url, headers=HEADERS, timeout=5) as web:
        await sim.set_price("BTCUSDT", "100000")
        ids = [
            await place(
                web, position=i % 2, order_type=1, order_price=str(90000 + i), order_qty="0.001"
            )
            for i in range(6)
        ]
    pipeline, _, _ = _gate_pipeline(None)
    client = AccountClient(Credentials(DEMO_API_KEY, DEMO_AUTH_KEY), sim.rest_url, timeout=5.0)
    lookup = rest_lookup(client, pipeline, "acct")
    before = len(sim.rest_calls)
    orders = [{"id": i, "symbol": "BTC/USDT:USDT"} for i in ids]
    found = await asyncio.gather(*(lookup(o) for o in orders))
    reads = [c for c, _ in sim.rest_calls[before:] if c.startswith("GET") and "order" in c]
    assert [side for side, _ in found] == ["buy", "sell"] * 3
    assert 1 <= len(reads) <= 2, reads
    await client.aclose()
    await pipeline.stop()


async def test_idle_waits_for_the_holds_there_are_not_for_later_ones() -> None:
    """A resync or a stop waits for the orders held when it starts: another client's orders
    that keep coming must not keep it waiting (each later hold ends within its own wait)."""
    from bitmusa_plugin.testing import order_frame

    answers: dict[str, asyncio.Future[tuple[str | None, str]]] = {}

    async def slow(order: dict[str, Any]) -> tuple[str | None, str]:
        answers[order["id"]] = asyncio.get_running_loop().create_future()
        return await answers[order["id"]]

    pipeline, gate, seen = _gate_pipeline(slow)
    gate.wait = 30.0  # only the answers end the holds
    pipeline.ingest("acct", order_frame("F1", side=None, amount="1", status="TRADING"))
    await asyncio.sleep(0)
    waiting = asyncio.ensure_future(gate.idle())
    pipeline.ingest("acct", order_frame("F2", side=None, amount="1", status="TRADING"))
    await asyncio.sleep(0)
    assert not waiting.done()
    answers["F1"].set_result(("buy", ""))
    await asyncio.wait_for(waiting, 2)  # F2 still held: not waited for
    assert "F2" in gate.pending
    answers["F2"].set_result(("sell", ""))
    await asyncio.wait_for(gate.idle(), 2)
    await pipeline.dispatcher.drain(2.0)
    assert [(o["id"], o["side"]) for o in seen.updates] == [("F1", "buy"), ("F2", "sell")]
    await pipeline.stop()


class _Reads:
    """An ``AccountClient`` whose open-orders and trade-history reads answer when the test
    answers them (``answer``), in the order they were sent."""

    def __init__(self) -> None:
        self.sent: asyncio.Queue[asyncio.Future[list[dict[str, Any]]]] = asyncio.Queue()

    async def _read(self) -> list[dict[str, Any]]:
        answer: asyncio.Future[list[dict[str, Any]]] = asyncio.get_running_loop().create_future()
        self.sent.put_nowait(answer)
        return await answer

    async def open_orders(self, ticker: str | None = None, size: int = 50) -> list[dict[str, Any]]:
        return await self._read()

    async def trade_history_page(self, page: int, params: dict[str, Any]) -> list[dict[str, Any]]:
        return await self._read()

    async def sent_one(self) -> asyncio.Future[list[dict[str, Any]]]:
        """The next read sent (its lookup starts a loop turn after the hold)."""
        return await self.sent.get()


async def test_a_held_order_goes_out_on_the_turn_a_read_lists_it() -> None:
    """Another client's order F1 waits for its side; the open-orders read its lookup sent
    answers, listing it. F1 goes out on that loop turn, not after the lookups waiting for
    the read have resumed (five turns): this process's own order F2, whose frame comes
    next and whose POST's answer settles it a turn later, must not overtake it. ccxt's
    watchOrders test saw the two out of time order (issue 21, docs/benchmarks.md §9c)."""
    from bitmusa_plugin._engine.sides import rest_lookup
    from bitmusa_plugin.testing import order_frame

    reads = _Reads()
    pipeline, gate, seen = _gate_pipeline(None)
    gate.lookup = rest_lookup(reads, pipeline, "acct")  # type: ignore[arg-type]
    gate.wait = 30.0  # only the answers end the holds
    pipeline.ingest("acct", order_frame("F1", side=None, created_time=1))
    answer = await asyncio.wait_for(reads.sent_one(), 2)
    answer.set_result([{"order_id": "F1", "position": 0, "direction": 0}])
    await asyncio.sleep(0)  # one turn: the read's own task sees its answer
    pipeline.ingest("acct", order_frame("F2", side=None, created_time=2))
    pipeline.fills["acct"].learn("F2", "sell")  # what the drop-in does with its POST's answer
    gate.settle("F2", "sell")
    await asyncio.wait_for(gate.idle(), 2)
    await pipeline.dispatcher.drain(2.0)
    assert [(o["id"], o["side"]) for o in seen.updates] == [("F1", "buy"), ("F2", "sell")]
    assert not [e for e in seen.errors if e["kind"] == "side_unknown"]
    await pipeline.stop()


async def test_held_orders_one_read_lists_go_out_in_the_order_they_were_held() -> None:
    """Two orders of another client held on one read (the second joins the first's):
    the read lists them newest first, as Bitmusa does; they go out in the order their
    frames came, each with its side."""
    from bitmusa_plugin._engine.sides import rest_lookup
    from bitmusa_plugin.testing import order_frame

    reads = _Reads()
    pipeline, gate, seen = _gate_pipeline(None)
    gate.lookup = rest_lookup(reads, pipeline, "acct")  # type: ignore[arg-type]
    gate.wait = 30.0
    pipeline.ingest("acct", order_frame("F1", side=None, created_time=1))
    answer = await asyncio.wait_for(reads.sent_one(), 2)
    pipeline.ingest("acct", order_frame("F2", side=None, created_time=2))
    await asyncio.sleep(0)  # F2's lookup joins the read in flight
    listed = [
        {"order_id": "F2", "position": 1, "direction": 0},
        {"order_id": "F1", "position": 0, "direction": 0},
    ]
    answer.set_result(listed)
    await asyncio.wait_for(gate.idle(), 2)
    await pipeline.dispatcher.drain(2.0)
    assert [(o["id"], o["side"]) for o in seen.updates] == [("F1", "buy"), ("F2", "sell")]
    assert reads.sent.empty()  # F2 sent no read of its own
    await pipeline.stop()
