"""The same handler code, fed two ways: as a plugin through the hooks, and from a ccxt
loop through the drop-in. Both see the same unified orders, so one handler serves both.

    python examples/same_handler.py        (runs against the embedded simulator)
"""

from __future__ import annotations

import asyncio
from typing import Any

from bitmusa_plugin import AccountConfig, Credentials, Session, hookimpl, load_exchange
from bitmusa_plugin.simulator import DEMO_API_KEY, DEMO_AUTH_KEY, Simulator


def fill_message(order: Any, source: str) -> str | None:
    """The handler: a line for an order that is done filling, else None."""
    if order["status"] != "closed" or not order["filled"]:
        return None
    return f"[{source}] {order['symbol']} filled {order['filled']} @ {order['average']}"


class ViaHooks:
    def __init__(self) -> None:
        self.lines: list[str] = []

    @hookimpl
    def on_order(self, order: Any, event: Any) -> None:
        message = fill_message(order, "hooks")
        if message:
            self.lines.append(message)


async def main(seconds: float = 3.0) -> tuple[list[str], list[str]]:
    async with Simulator(time_scale=3600, event_interval=0.05, seed=4) as sim:
        plugin = ViaHooks()
        config = AccountConfig(
            "hooks", Credentials(DEMO_API_KEY, DEMO_AUTH_KEY), sim.rest_url, sim.ws_url
        )
        session = Session({"via-hooks": plugin}, command="example", keep_listen_key=True)
        async with session:
            session.add(config)
            via_ccxt = await watch_with_ccxt(sim, seconds)
    for line in plugin.lines + via_ccxt:
        print(line)
    return plugin.lines, via_ccxt


async def watch_with_ccxt(sim: Simulator, seconds: float) -> list[str]:
    """The same handler, fed by a ccxt loop over the drop-in."""
    exchange = load_exchange(
        "bitmusa",
        {
            "apiKey": DEMO_API_KEY,
            "secret": DEMO_AUTH_KEY,
            "options": {"keepListenKey": True},
            "urls": {"api": {"rest": sim.rest_url, "ws": sim.ws_url}},
        },
    )
    via_ccxt: list[str] = []
    deadline = asyncio.get_running_loop().time() + seconds
    while asyncio.get_running_loop().time() < deadline:
        for order in await exchange.watch_orders():
            message = fill_message(order, "ccxt")
            if message:
                via_ccxt.append(message)
    await exchange.close()
    return via_ccxt


if __name__ == "__main__":
    asyncio.run(main())
