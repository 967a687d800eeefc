"""Decode + map (+ dispatch) per frame against ccxt.pro binanceusdm's handle_message.

    make bench            (or: python benchmarks/bench_mapping.py [--repeats N])

Prints medians over repeats and the ratio ccxt / ours. Figures go to docs/benchmarks.md;
never quote the absolute times alone (these machines are noisy).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import gc
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).parent))

from _ccxt_baseline import ACCOUNT_UPDATE, ORDER_TRADE_UPDATE, handle, make_exchange

from bitmusa_hookspecs import hookimpl
from bitmusa_plugin._core.mapping import Mapped, Mapper
from bitmusa_plugin._engine.pipeline import Pipeline
from bitmusa_plugin._engine.plugins import PluginRegistry

#: When a frame was read (the shell's fact; the mapping takes it, it reads no clock).
RECEIVED = 1_700_703_700_000
ORDER = orjson.dumps(
    {
        "data": {
            "orderId": "C171558199502193",
            "ticker": "XRPUSDT",
            "direction": "OPEN",
            "position": "BUY",
            "type": "LIMIT",
            "tif": "GTC",
            "price": "0.5155",
            "amount": "2",
            "tradedAmount": "0.8",
            "value": "0.4124",
            "status": "PARTIAL",
            "createdTime": 1715581995021,
            "canceledTime": None,
            "completedTime": None,
        },
        "stream": "future_order",
        "eventTime": 1700703548846,
    }
)
WALLET = orjson.dumps(
    {
        "data": {"asset": "USDT", "free": "9981.51952661", "locked": "18.48047339"},
        "stream": "future_wallet",
        "eventTime": 1700703707123,
    }
)
POSITION = orjson.dumps(
    {
        "data": {
            "ticker": "XRPUSDT",
            "marginMode": "ISOLATED",
            "positionMode": "ONEWAY",
            "position": "BUY",
            "status": "OPEN",
            "leverage": "10",
            "price": "0.5155",
            "amount": "1",
            "value": "0.5155",
            "liquidPrice": "0.4700",
            "unpnl": "0.0012",
            "createdTime": 1700703548846,
            "closeTime": "null",
        },
        "stream": "future_position",
        "eventTime": 1700703548846,
    }
)


def per_call_us(fn: Callable[[], object], n: int, repeats: int) -> float:
    samples = []
    for _ in range(repeats):
        gc.collect()
        start = time.perf_counter()
        for _ in range(n):
            fn()
        samples.append((time.perf_counter() - start) / n * 1e6)
    return statistics.median(samples)


class _Noop:
    @hookimpl
    async def on_order(self) -> None:
        pass

    @hookimpl
    async def on_wallet(self) -> None:
        pass

    @hookimpl
    async def on_position(self) -> None:
        pass


async def ingest_us(frame: bytes, n: int, repeats: int) -> float:
    """Decode + map + dispatch to one async no-op plugin, until it has run: per event."""
    plugins = PluginRegistry()
    plugins.register(_Noop(), "noop")
    host = Pipeline(plugins, command="bench", queue_size=n + 10)
    host.start(["bench"])
    samples = []
    for _ in range(repeats):
        gc.collect()
        start = time.perf_counter()
        for i in range(n):
            host.ingest("bench", frame)
            if i % 16 == 15:  # frames arrive in small bursts, as from a socket
                await asyncio.sleep(0)
        await host.dispatcher.drain()
        samples.append((time.perf_counter() - start) / n * 1e6)
    await host.stop()
    return statistics.median(samples)


async def main(repeats: int, n: int, as_json: bool = False) -> None:
    mapper = Mapper("bench")
    for frame in (ORDER, WALLET, POSITION):
        assert isinstance(mapper.feed(frame, RECEIVED), Mapped)
    if as_json:  # for benchmarks/ab.py: ours only, µs per frame
        frames = {"order": ORDER, "balance": WALLET, "position": POSITION}
        result: dict[str, float] = {}
        for name, frame in frames.items():
            feed = functools.partial(mapper.feed, frame, RECEIVED)
            result[f"{name} map µs"] = per_call_us(feed, n, repeats)
        for name, frame in frames.items():
            result[f"{name} +dispatch µs"] = await ingest_us(frame, n, repeats)
        print(json.dumps(result))
        return
    exchange, client = make_exchange()

    rows = [
        (
            "order",
            lambda: mapper.feed(ORDER, RECEIVED),
            lambda: handle(exchange, client, ORDER_TRADE_UPDATE),
        ),
        (
            "balance",
            lambda: mapper.feed(WALLET, RECEIVED),
            lambda: handle(exchange, client, ACCOUNT_UPDATE),
        ),
        (
            "position",
            lambda: mapper.feed(POSITION, RECEIVED),
            lambda: handle(exchange, client, ACCOUNT_UPDATE),
        ),
    ]
    print(
        f"# bench_mapping  {time.strftime('%Y-%m-%d')}  python {platform.python_version()}  "
        f"{platform.machine()}  repeats={repeats} n={n}"
    )
    frames = {"order": ORDER, "balance": WALLET, "position": POSITION}
    targets = {"order": 10.0, "balance": 5.0, "position": 5.0}
    print(
        f"{'path':<10}{'map µs':>9}{'+dispatch µs':>14}{'ccxt.pro µs':>13}"
        f"{'ccxt/map':>10}{'ccxt/+disp':>12}{'target':>8}"
    )
    for name, ours, theirs in rows:
        mine = per_call_us(ours, n, repeats)
        full = await ingest_us(frames[name], n, repeats)
        base = per_call_us(theirs, n // 4, repeats)
        print(
            f"{name:<10}{mine:>9.2f}{full:>14.2f}{base:>13.2f}{base / mine:>9.1f}x"
            f"{base / full:>11.1f}x{targets[name]:>7.0f}x"
        )
    print(
        "map = orjson.loads + map of one Bitmusa frame (bytes); +dispatch = the same through "
        "Pipeline.ingest to one async no-op plugin, until it ran; ccxt.pro = binanceusdm "
        "handle_message of a pre-parsed ORDER_TRADE_UPDATE / ACCOUNT_UPDATE (balance + "
        "position in one message, so it is the baseline for both)."
    )
    await exchange.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("-n", type=int, default=20000)
    parser.add_argument("--json", action="store_true", help="one JSON line (benchmarks/ab.py)")
    args = parser.parse_args()
    asyncio.run(main(args.repeats, args.n, args.json))
