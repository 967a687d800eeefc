"""One unified loop over any set of exchanges, given by name.

    python examples/multi_exchange_bot.py bitmusa binanceusdm

Each exchange comes from ``bitmusa_plugin.load_exchange``: ccxt.pro's own for the ids ccxt
knows, and adapters registered in the ``ccxt.exchanges`` entry-point group (bitmusa is
one) for the rest. The loop is the same for all of them. Credentials come from the
environment: ``<NAME>_API_KEY`` and ``<NAME>_SECRET`` (for bitmusa, the auth key), and
``<NAME>_REST_URL`` / ``<NAME>_WS_URL`` point an exchange elsewhere (the simulator). An
exchange without credentials is skipped with a message, so binanceusdm joins only when
real keys are set.
"""

from __future__ import annotations

import asyncio
import os
import sys
from typing import Any

from bitmusa_plugin import load_exchange


def config_for(name: str) -> dict[str, Any] | None:
    prefix = name.upper()
    api_key, secret = os.environ.get(f"{prefix}_API_KEY"), os.environ.get(f"{prefix}_SECRET")
    if not api_key or not secret:
        return None
    config: dict[str, Any] = {"apiKey": api_key, "secret": secret}
    rest, ws = os.environ.get(f"{prefix}_REST_URL"), os.environ.get(f"{prefix}_WS_URL")
    if rest or ws:
        config["urls"] = {"api": {k: v for k, v in (("rest", rest), ("ws", ws)) if v}}
    return config


async def follow(exchange: Any, seen: list[str], updates: int) -> None:
    """The bot's loop: the same code for every exchange."""
    for _ in range(updates):
        orders = await exchange.watch_orders()
        for order in orders:
            line = (
                f"{exchange.id:<12} {order['symbol']:<16} {order['side'] or '-':<4} "
                f"{order['status']:<8} {order['filled']}/{order['amount']} @ {order['price']}"
            )
            seen.append(line)
            print(line, flush=True)


async def main(names: list[str], updates: int = 10) -> list[str]:
    seen: list[str] = []
    exchanges = []
    for name in names:
        config = config_for(name)
        if config is None:
            print(f"{name}: no {name.upper()}_API_KEY / {name.upper()}_SECRET, skipped")
            continue
        exchanges.append(load_exchange(name, config))
    try:
        await asyncio.gather(*(follow(exchange, seen, updates) for exchange in exchanges))
    finally:
        for exchange in exchanges:
            await exchange.close()
    return seen


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:] or ["bitmusa", "binanceusdm"]))
