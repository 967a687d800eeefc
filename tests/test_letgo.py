"""Letting an account go loses nothing that reached its socket (issue 20): a stream that
stops (a worker's self-fence, hand-back or shutdown all end in ``stream.stop()``) closes
with the websocket close handshake, delivers every frame it reads until the server's
close, and only then ends. Against the simulator over a real loopback socket."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson
import pytest

from bitmusa_hookspecs import hookimpl
from bitmusa_plugin._core import machine as lc
from bitmusa_plugin._engine.secrets import Credentials
from bitmusa_plugin._engine.session import Session
from bitmusa_plugin._engine.stream import AccountConfig, Heartbeat
from bitmusa_plugin.simulator import DEMO_API_KEY, DEMO_AUTH_KEY, Simulator
from bitmusa_plugin.testing import order_frame

pytestmark = pytest.mark.bitmusa_simulator(event_interval=None, seed=5)


class Orders:
    """Lossless, as the Redis sink is: every order id, in delivery order."""

    bitmusa_delivery = "all"

    def __init__(self) -> None:
        self.ids: list[str] = []
        self.states: list[str] = []

    @hookimpl
    async def on_order(self, event: dict[str, Any]) -> None:
        self.ids.append(str(event["data"]["orderId"]))

    @hookimpl
    async def on_stream_state(self, state: dict[str, Any]) -> None:
        self.states.append(state["status"])


async def _until(predicate: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


@pytest.mark.parametrize("burst", [50, 500])
async def test_a_stop_delivers_every_frame_that_reached_the_socket(
    sim: Simulator, burst: int
) -> None:
    orders = Orders()
    session = Session(
        {"orders": orders},
        command="test",
        accounts=[
            AccountConfig(
                "acct", Credentials(DEMO_API_KEY, DEMO_AUTH_KEY), sim.rest_url, sim.ws_url
            )
        ],
        timing=lc.Timing(rotate_after=3600.0, rotate_jitter=0.0),
        heartbeat=Heartbeat(2.0, 10.0),
        keep_listen_key=True,
    )
    session.start()
    account = next(iter(sim.accounts.values()))
    try:
        await _until(lambda: "connected" in orders.states and len(sim.live(account)) == 1)
        await sim.send_text(account, order_frame("warm-up"))
        await _until(lambda: orders.ids == ["warm-up"])
        # written to the socket, and the stream told to stop before it read them: the
        # frames are in flight as the worker lets the account go
        for i in range(burst):
            await sim.send_text(account, order_frame(f"late-{i}"))
        finished = await asyncio.wait_for(session.remove("acct"), 10)
    finally:
        await session.aclose()
    assert finished is not None
    sent = [
        str(orjson.loads(f.text)["data"]["orderId"]) for f in sim.sent if f.conns and not f.garbage
    ]
    assert len(sent) == burst + 1
    assert orders.ids == sent, "a frame that reached the socket was not delivered"
    assert orders.states[-1] == "closed"
