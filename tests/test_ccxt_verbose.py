"""ccxt.pro's ``verbose`` prints the websocket's events and frames too (the user stream's,
through the session's one ``frame_trace`` hook), never a credential or a listenKey, and
printing that fails never stops the stream."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from bitmusa_plugin.simulator import DEMO_API_KEY, DEMO_AUTH_KEY, Simulator
from ccxt_reference import make_exchange

pytestmark = pytest.mark.bitmusa_simulator(script=False, event_interval=None, seed=7, time_scale=1)

BTC = "BTC/USDT:USDT"
HANG = 20


async def test_verbose_prints_websocket_frames_and_never_a_secret(sim: Simulator) -> None:
    await sim.set_price("BTCUSDT", "100000")
    printed: list[tuple[Any, ...]] = []
    exchange = make_exchange(sim)
    exchange.log = lambda *parts: printed.append(parts)
    try:
        exchange.verbose = True
        await exchange.load_markets()
        await asyncio.wait_for(exchange.watch_balance(), HANG)
        key = sim.account().key
        assert key is not None
        # a frame that carries the listenKey and the keys: masked when printed
        text = (
            '{"stream":"future_wallet","eventTime":1,"data":{"asset":"USDT","free":"1",'
            f'"locked":"0","listenKey":"{key}","note":"{DEMO_API_KEY} {DEMO_AUTH_KEY}"}}}}'
        )
        await sim.send_text(sim.account(), text)
        order = await exchange.create_order(BTC, "limit", "buy", 0.001, 90000)
        orders = await asyncio.wait_for(exchange.watch_orders(BTC), HANG)
        assert any(o["id"] == order["id"] for o in orders)
        frames = [p for p in printed if len(p) >= 3 and p[1] == "bitmusa user:bitmusa"]
        events = [p[2] for p in frames]
        assert events[0] == "connected"
        messages = [p[3] for p in frames if p[2] == "message"]
        assert any(order["id"] in m and "future_order" in m for m in messages)
        assert any("future_wallet" in m and '"listenKey":"***"' in m for m in messages)
        assert all(isinstance(p[0], str) and p[0].endswith("Z") for p in frames)  # ISO time
        everything = " ".join(str(part) for parts in printed for part in parts)
        for secret in (DEMO_API_KEY, DEMO_AUTH_KEY, key):
            assert secret not in everything

        def broken(*parts: Any) -> None:
            raise UnicodeEncodeError("ascii", "\uc8fc", 0, 1, "a terminal that cannot")

        exchange.log = broken  # printing fails: the stream does not
        second = await exchange.create_order(BTC, "limit", "buy", 0.001, 89000)
        orders = await asyncio.wait_for(exchange.watch_orders(BTC), HANG)
        assert any(o["id"] == second["id"] for o in orders)

        exchange.verbose = False
        exchange.log = lambda *parts: printed.append(parts)
        before = len(printed)
        await exchange.cancel_order(second["id"], BTC)
        await asyncio.wait_for(exchange.watch_orders(BTC), HANG)
        assert len(printed) == before  # nothing while it is off
    finally:
        await exchange.close()
