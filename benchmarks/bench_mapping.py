"""Decode + map per frame against ccxt.pro binanceusdm's handle_message, in one run.

    make bench            (or: python benchmarks/bench_mapping.py [--repeats N])

Prints medians over repeats and the ratio ccxt / ours. Figures go to docs/benchmarks.md;
never quote the absolute times alone (these machines are noisy).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).parent))

from _ccxt_baseline import ACCOUNT_UPDATE, ORDER_TRADE_UPDATE, handle, make_exchange

from bitmusa_plugin.mapping import Mapped, Mapper

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


async def main(repeats: int, n: int) -> None:
    exchange, client = make_exchange()
    mapper = Mapper("bench")
    for frame in (ORDER, WALLET, POSITION):
        assert isinstance(mapper.feed(frame), Mapped)

    rows = [
        ("order", lambda: mapper.feed(ORDER), lambda: handle(exchange, client, ORDER_TRADE_UPDATE)),
        ("balance", lambda: mapper.feed(WALLET), lambda: handle(exchange, client, ACCOUNT_UPDATE)),
        (
            "position",
            lambda: mapper.feed(POSITION),
            lambda: handle(exchange, client, ACCOUNT_UPDATE),
        ),
    ]
    print(
        f"# bench_mapping  {time.strftime('%Y-%m-%d')}  python {platform.python_version()}  "
        f"{platform.machine()}  repeats={repeats} n={n}"
    )
    print(f"{'path':<10}{'ours µs':>10}{'ccxt.pro µs':>14}{'ccxt/ours':>11}")
    for name, ours, theirs in rows:
        mine = per_call_us(ours, n, repeats)
        base = per_call_us(theirs, n // 4, repeats)
        print(f"{name:<10}{mine:>10.2f}{base:>14.2f}{base / mine:>10.1f}x")
    print(
        "ours = orjson.loads + map of one Bitmusa frame (bytes); ccxt.pro = binanceusdm "
        "handle_message of a pre-parsed ORDER_TRADE_UPDATE / ACCOUNT_UPDATE "
        "(balance + position in one message, so it is the baseline for both)."
    )
    await exchange.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("-n", type=int, default=20000)
    args = parser.parse_args()
    asyncio.run(main(args.repeats, args.n))
