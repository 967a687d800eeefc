"""A ccxt bot that takes its exchanges by id from a config file, as bots do: the one line
for Bitmusa is ``register_ccxt()``; after it, ``getattr(ccxt, id)`` (or ``ccxt.pro``'s, or
``ccxt.async_support``'s) finds ``bitmusa`` as it finds ``binanceusdm``.

    python examples/exchange_by_id.py bot.json

bot.json (``face``: ``"sync"`` for ccxt, ``"async"`` for ccxt.async_support, ``"pro"``
for ccxt.pro, which also watches the order; each exchange's object is its ccxt config)::

    {"face": "sync",
     "symbol": "BTC/USDT:USDT",
     "exchanges": {"bitmusa": {"apiKey": "...", "secret": "..."},
                   "binanceusdm": {"apiKey": "...", "secret": "..."}}}

For each exchange, the same code places one small limit buy 20 % below the market (a real
order, priced not to fill), finds it among the open orders, cancels it, and (pro) watches
it go. Each line printed is ``<id> <face> <step> <order id> <status>``.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import ccxt
import ccxt.async_support
import ccxt.pro

from bitmusa_plugin import register_ccxt

#: where each face's classes are found by id
MODULES = {"sync": ccxt, "async": ccxt.async_support, "pro": ccxt.pro}


def size(exchange: Any, symbol: str, last: float) -> tuple[float, float]:
    """An amount and a price 20 % below ``last``, rounded by ccxt's own helpers: the
    smallest order the market allows, and a step more."""
    market = exchange.market(symbol)
    price = float(exchange.price_to_precision(symbol, last * 0.8))
    limits = market["limits"]
    amount = max(limits["amount"]["min"] or 0, (limits["cost"]["min"] or 0) * 1.1 / price)
    amount = float(exchange.amount_to_precision(symbol, amount + market["precision"]["amount"]))
    return amount, price


def line(exchange: Any, face: str, step: str, order: Any) -> str:
    return f"{exchange.id} {face} {step} {order['id']} {order['status']}"


def run_sync(exchange: Any, symbol: str) -> list[str]:
    """ccxt's synchronous API: every call blocks."""
    exchange.load_markets()
    amount, price = size(exchange, symbol, exchange.fetch_ticker(symbol)["last"])
    order = exchange.create_order(symbol, "limit", "buy", amount, price)
    seen = [line(exchange, "sync", "placed", order)]
    (listed,) = [o for o in exchange.fetch_open_orders(symbol) if o["id"] == order["id"]]
    seen.append(line(exchange, "sync", "listed", listed))
    seen.append(line(exchange, "sync", "cancel", exchange.cancel_order(order["id"], symbol)))
    return seen


async def run_async(exchange: Any, symbol: str, face: str) -> list[str]:
    """The same steps with ccxt's async API; with ccxt.pro, the order watched until it is
    seen cancelled."""
    await exchange.load_markets()
    amount, price = size(exchange, symbol, (await exchange.fetch_ticker(symbol))["last"])
    order = await exchange.create_order(symbol, "limit", "buy", amount, price)
    seen = [line(exchange, face, "placed", order)]
    listed = [o for o in await exchange.fetch_open_orders(symbol) if o["id"] == order["id"]]
    seen.append(line(exchange, face, "listed", listed[0]))
    seen.append(line(exchange, face, "cancel", await exchange.cancel_order(order["id"], symbol)))
    while face == "pro":
        updates = [u for u in await exchange.watch_orders(symbol) if u["id"] == order["id"]]
        if updates and updates[-1]["status"] == "canceled":
            seen.append(line(exchange, face, "watched", updates[-1]))
            break
    return seen


async def run_all_async(face: str, symbol: str, exchanges: list[Any]) -> list[str]:
    try:
        results = await asyncio.gather(*(run_async(e, symbol, face) for e in exchanges))
    finally:
        for exchange in exchanges:
            await exchange.close()
    return [entry for lines in results for entry in lines]


def main(path: str) -> list[str]:
    settings = json.loads(Path(path).read_text())
    face = settings.get("face", "sync")
    if face not in MODULES:
        raise SystemExit(f"{path}: face {face!r}: one of {', '.join(MODULES)}")
    register_ccxt()  # bitmusa beside ccxt's own ids, in all three modules
    module = MODULES[face]
    symbol = settings.get("symbol", "BTC/USDT:USDT")
    for name in settings["exchanges"]:
        if name not in module.exchanges:
            raise SystemExit(f"{path}: no exchange {name!r} in {module.__name__}")
    exchanges = [getattr(module, name)(config) for name, config in settings["exchanges"].items()]
    if face != "sync":
        return asyncio.run(run_all_async(face, symbol, exchanges))
    seen: list[str] = []
    try:
        for exchange in exchanges:
            seen += run_sync(exchange, symbol)
    finally:
        for exchange in exchanges:
            exchange.close()  # every ccxt sync exchange has close(); bitmusa's ends its loop
    return seen


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    for entry in main(sys.argv[1]):
        print(entry, flush=True)
