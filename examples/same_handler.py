"""The same handler code, fed two ways: as a plugin through the ``on_trade`` hook, and from
a ccxt loop through the drop-in's ``watch_my_trades``. Both see the same unified trades
(one per fill, exactly once), so one handler serves both.

    python examples/same_handler.py        (runs against the embedded simulator)
"""

from __future__ import annotations

import asyncio
from typing import Any

from bitmusa_plugin import AccountConfig, Credentials, Session, hookimpl, load_exchange
from bitmusa_plugin.simulator import DEMO_API_KEY, DEMO_AUTH_KEY, Simulator


def fill_message(trade: Any, source: str) -> str:
    """The handler: a line for one fill."""
    return f"[{source}] {trade['symbol']} filled {trade['amount']} @ {trade['price']}"


class ViaHooks:
    def __init__(self) -> None:
        self.lines: list[str] = []

    @hookimpl
    def on_trade(self, trade: Any, event: Any) -> None:
        self.lines.append(fill_message(trade, "hooks"))


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
        for trade in await exchange.watch_my_trades():
            via_ccxt.append(fill_message(trade, "ccxt"))
    await exchange.close()
    return via_ccxt


if __name__ == "__main__":
    asyncio.run(main())
