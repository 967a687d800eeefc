"""Every fill exactly once, proven against the matching engine (issue 19 §3): a seeded
hypothesis state machine drives the simulator over loopback through the public
``Session`` API with random sequences of orders of another client of the account (market,
limit, post-only, reduce-only; partial fills, cancels), position flips, gaps of random
length (some longer than a page of history), REST faults on the trade history during the
resync, and repeated frames. At quiescence (the stream caught up with the engine, a
bounded wait on that condition) the plugin's trades are compared with ``sim.engine()``'s
fills: per order the amount and cost sums are exact, no trade id twice, every side
known, every estimate flagged and reported.

Profiles: ``BITMUSA_FILLS_PROFILE=short`` (the default, ``make test``) and ``long``
(``make soak``). A failure prints hypothesis's reproduction blob and the shrunk rule
sequence; the short profile is derandomized, so a failure reproduces as is."""

from __future__ import annotations

import asyncio
import os
import time
from decimal import Decimal as D
from typing import Any

import httpx
import orjson
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, rule
from recording import Recorder

from bitmusa_plugin import AccountConfig, Credentials, Session
from bitmusa_plugin._core import machine as lc
from bitmusa_plugin._engine.sides import SIDE_WAIT
from bitmusa_plugin._engine.stream import Heartbeat
from bitmusa_plugin.simulator import DEMO_API_KEY, DEMO_AUTH_KEY, Simulator

HEADERS = {"x-api-key": DEMO_API_KEY, "Authorization": f"Bearer {DEMO_AUTH_KEY}"}
TIMING = lc.Timing(
    retry_initial=0.05, retry_max=0.2, stable_after=0.3, keepalive_interval=60,
    key_validity=3600, rotate_after=600,
)  # fmt: skip
QUIESCENCE = 20.0  # the bound on every wait: far above a loaded machine's catch-up

settings.register_profile(
    "short", max_examples=3, stateful_step_count=8, deadline=None, derandomize=True,
    print_blob=True, suppress_health_check=[HealthCheck.too_slow],
)  # fmt: skip
settings.register_profile(
    "long", max_examples=40, stateful_step_count=30, deadline=None, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)  # fmt: skip
DOWN = ("disconnected", "connecting")
PROFILE = os.environ.get("BITMUSA_FILLS_PROFILE", "short")


class Fills(RuleBasedStateMachine):
    """One simulator, one session, one account per example; the rules act on the engine
    as another client of the account would, or break the stream and the REST API."""

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.sim = Simulator(script=False, event_interval=None, seed=11, time_scale=1)
        self.seen = Recorder()
        self.placed: list[str] = []
        self.run(self._open())

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    async def _open(self) -> None:
        await self.sim.start()
        await self.sim.set_price("BTCUSDT", "1000")
        self.client = httpx.AsyncClient(base_url=self.sim.rest_url, headers=HEADERS, timeout=5)
        self.session = Session(
            [self.seen],
            command="test",
            timing=TIMING,
            heartbeat=Heartbeat(2.0, 10.0),
            side_wait=SIDE_WAIT,  # every side known: the orders are another client's
        )
        await self.session.__aenter__()
        self.session.add(
            AccountConfig(
                "a", Credentials(DEMO_API_KEY, DEMO_AUTH_KEY), self.sim.rest_url, self.sim.ws_url
            )
        )
        await self._until(lambda: "connected" in self.seen.states, "first connection")

    async def _until(self, predicate: Any, what: str) -> None:
        deadline = time.monotonic() + QUIESCENCE
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{what} not reached in {QUIESCENCE:.0f} s: {self._diff()}; "
                    f"states {self.seen.states[-6:]}, errors {self.seen.errors[-4:]}"
                )
            await asyncio.sleep(0.01)

    async def _place(self, **fields: Any) -> None:
        body = {"ticker": "BTCUSDT", "margin_mode": 0, **fields}
        data = orjson.loads((await self.client.post("/future/order", json=body)).content)
        if data["code"] == 0:  # refusals (nothing to reduce, post-only would cross) are fine
            self.placed.append(str(data["data"]))

    # -- the rules ------------------------------------------------------------------------

    @initialize()
    def start(self) -> None:
        pass

    @rule(
        side=st.sampled_from([0, 1]),
        qty=st.sampled_from(["0.001", "0.01", "0.1"]),
        offset=st.integers(-20, 20),
        post_only=st.booleans(),
    )
    def limit(self, side: int, qty: str, offset: int, post_only: bool) -> None:
        fields: dict[str, Any] = {"direction": 0, "position": side, "order_type": 1}
        fields |= {"order_price": str(1000 + offset), "order_qty": qty}
        if post_only:
            fields["is_post_only"] = 1
        self.run(self._place(**fields))

    @rule(side=st.sampled_from([0, 1]), qty=st.sampled_from(["0.001", "0.01", "0.2"]))
    def market(self, side: int, qty: str) -> None:
        """Opposite sides in turn flip the (one-way) position."""
        self.run(self._place(direction=0, position=side, order_type=0, order_price="0",
                             order_qty=qty))  # fmt: skip

    @rule(side=st.sampled_from([0, 1]), qty=st.sampled_from(["0.001", "0.05"]))
    def reduce_only(self, side: int, qty: str) -> None:
        self.run(self._place(direction=1, position=side, order_type=0, order_price="0",
                             order_qty=qty))  # fmt: skip

    @rule(price=st.integers(975, 1025), volume=st.sampled_from(["0.001", "0.005", "0.05"]))
    def trade_at(self, price: int, volume: str) -> None:
        """The market trades ``volume`` at ``price``: resting orders fill in parts."""
        self.run(self.sim.set_price("BTCUSDT", str(price), volume=volume))

    @rule(which=st.integers(0, 50))
    def cancel(self, which: int) -> None:
        if self.placed:
            order = self.placed[which % len(self.placed)]
            self.run(self.client.post(f"/future/order/cancel/{order}"))

    @rule()
    def repeat_last_frame(self) -> None:
        """A frame the server sends twice (after a retransmit, a second connection)."""
        sent = [f for f in self.sim.sent if not f.garbage]
        if sent:
            self.run(self.sim.send_text(self.sim.account(), sent[-1].text))

    @rule(
        parts=st.sampled_from([1, 5, 30, 130, 260]),  # the history's page is 100 records
        price=st.sampled_from(["985", "1015"]),
        fault=st.sampled_from([None, "429", "500", "503"]),
        faults=st.integers(1, 3),
    )
    def gap(self, parts: int, price: str, fault: str | None, faults: int) -> None:
        """An outage in which ``parts`` trades happen, then a resync whose trade-history
        reads fail ``faults`` times first: retried within ``history_budget``."""
        self.run(self._gap(parts, price, fault, faults))

    async def _gap(self, parts: int, price: str, fault: str | None, faults: int) -> None:
        await self.settle()  # the gap starts from a caught-up stream: its own window
        connected = self.seen.states.count("connected")
        await self.client.post("/future/order", json={
            "ticker": "BTCUSDT", "margin_mode": 0, "direction": 0, "position": 0,
            "order_type": 1, "order_price": price, "order_qty": str(D("0.001") * parts),
        })  # fmt: skip
        self.sim.refuse(1000)
        self.sim.drop()
        await self._down()
        for _ in range(parts):
            await self.sim.set_price("BTCUSDT", price, volume="0.001")
        if fault is not None:
            self.sim.fail_rest(fault, faults, method="GET", path="/future/trade/history")  # type: ignore[arg-type]
        self.sim.accept()
        await self._back(connected)

    async def _down(self) -> None:
        await self._until(lambda: self.seen.states[-1] in DOWN, "the disconnection")

    async def _back(self, connected: int) -> None:
        await self._until(
            lambda: self.seen.states.count("connected") > connected, "the reconnection"
        )

    # -- quiescence and the invariants ----------------------------------------------------

    def _truth(self) -> dict[str, tuple[D, D]]:
        sums: dict[str, tuple[D, D]] = {}
        for f in self.sim.engine().fills:
            amount, cost = sums.get(f.order_id, (D(0), D(0)))
            sums[f.order_id] = (amount + f.qty, cost + f.value)
        return sums

    def _plugin(self) -> dict[str, tuple[D, D]]:
        sums: dict[str, tuple[D, D]] = {}
        for t in self.seen.trades:
            amount, cost = sums.get(t["order"], (D(0), D(0)))
            sums[t["order"]] = (amount + D(str(t["amount"])), cost + D(str(t["cost"])))
        return sums

    def _diff(self) -> str:
        truth, plugin = self._truth(), self._plugin()
        wrong = {
            o: (truth.get(o), plugin.get(o))
            for o in truth.keys() | plugin.keys()
            if truth.get(o) != plugin.get(o)
        }
        return f"orders whose sums differ (engine, plugin): {wrong}"

    async def settle(self) -> None:
        """Quiescence: the stream connected and every order's sums equal the engine's."""
        await self._until(
            lambda: self.seen.states[-1] not in DOWN and self._truth() == self._plugin(),
            "quiescence",
        )

    def teardown(self) -> None:
        try:
            self.run(self.settle())
            trades = self.seen.trades
            ids = [t["id"] for t in trades]
            assert len(ids) == len(set(ids)), "a trade id twice"
            # a side the REST faults kept from being learnt within side_wait is None and
            # reported once (side_unknown, docs/hooks.md); every other side is known
            unknown = " ".join(
                e["message"] for e in self.seen.errors if e["kind"] == "side_unknown"
            )
            assert all(t["side"] in ("buy", "sell") or t["order"] in unknown for t in trades), (
                "a trade without a side, unreported"
            )
            reported = " ".join(
                e["message"] for e in self.seen.errors if e["kind"] == "trade_estimated"
            )
            for t in trades:
                if t["info"].get("estimated"):
                    assert t["order"] in reported, f"an estimate not reported: {t['id']}"
            assert all(
                o["side"] in ("buy", "sell") or o["id"] in unknown
                for o in self.seen.orders.values()
            ), "an order without a side, unreported"
        finally:
            self.run(self._close())
            self.loop.close()

    async def _close(self) -> None:
        await self.session.drain(5)
        await self.session.__aexit__(None, None, None)
        await self.client.aclose()
        await self.sim.stop()


TestFills = Fills.TestCase
TestFills.settings = settings.get_profile(PROFILE)
