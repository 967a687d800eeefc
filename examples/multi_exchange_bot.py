"""One unified bot over any set of exchanges, given by name.

    python examples/multi_exchange_bot.py bitmusa binanceusdm           (watch orders)
    python examples/multi_exchange_bot.py --trade bitmusa binanceusdm   (and trade)

Each exchange comes from ``bitmusa_plugin.load_exchange``: ccxt.pro's own for the ids ccxt
knows, and adapters registered in the ``ccxt.exchanges`` entry-point group (bitmusa is
one) for the rest. The code is the same for all of them. Credentials come from the
environment: ``<NAME>_API_KEY`` and ``<NAME>_SECRET`` (for bitmusa, the auth key), and
``<NAME>_REST_URL`` / ``<NAME>_WS_URL`` point an exchange elsewhere (the simulator). An
exchange without credentials is skipped with a message, so binanceusdm joins only when
real keys are set.

With ``--trade`` the bot places one small limit buy far below the market (``<NAME>_SYMBOL``,
``BTC/USDT:USDT`` by default), watches it come up open, cancels it and watches it go:
a real order on a real exchange, priced not to fill.
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
            report(exchange, order, seen)


async def place_watch_cancel(exchange: Any, seen: list[str]) -> str:
    """Place a limit buy 20 % below the market, watch it open, cancel it, watch it go.
    The same unified calls for every exchange; amounts and prices rounded by ccxt."""
    symbol = os.environ.get(f"{exchange.id.upper()}_SYMBOL", "BTC/USDT:USDT")
    await exchange.load_markets()
    market = exchange.market(symbol)
    last = (await exchange.fetch_ticker(symbol))["last"]
    price = float(exchange.price_to_precision(symbol, last * 0.8))
    limits = market["limits"]
    amount = max(limits["amount"]["min"] or 0, (limits["cost"]["min"] or 0) * 1.1 / price)
    amount = float(exchange.amount_to_precision(symbol, amount + market["precision"]["amount"]))
    order = await exchange.create_order(symbol, "limit", "buy", amount, price)

    async def until(status: str) -> None:
        while True:
            for update in await exchange.watch_orders(symbol):
                if update["id"] == order["id"]:
                    report(exchange, update, seen)
                    if update["status"] == status:
                        return

    await until("open")
    await exchange.cancel_order(order["id"], symbol)
    await until("canceled")
    return str(order["id"])


def report(exchange: Any, order: Any, seen: list[str]) -> None:
    line = (
        f"{exchange.id:<12} {order['symbol']:<16} {order['side'] or '-':<4} "
        f"{order['status']:<8} {order['filled']}/{order['amount']} @ {order['price']}"
    )
    seen.append(line)
    print(line, flush=True)


async def main(names: list[str], updates: int = 10, trade: bool = False) -> list[str]:
    seen: list[str] = []
    exchanges = []
    for name in names:
        config = config_for(name)
        if config is None:
            print(f"{name}: no {name.upper()}_API_KEY / {name.upper()}_SECRET, skipped")
            continue
        exchanges.append(load_exchange(name, config))
    try:
        if trade:
            await asyncio.gather(*(place_watch_cancel(exchange, seen) for exchange in exchanges))
        else:
            await asyncio.gather(*(follow(exchange, seen, updates) for exchange in exchanges))
    finally:
        for exchange in exchanges:
            await exchange.close()
    return seen


if __name__ == "__main__":
    args = sys.argv[1:]
    trade = "--trade" in args
    names = [a for a in args if a != "--trade"] or ["bitmusa", "binanceusdm"]
    asyncio.run(main(names, trade=trade))
