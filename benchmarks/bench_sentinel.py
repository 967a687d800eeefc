"""What ``WAIT`` costs the Redis sink behind Sentinel (issue 20).

    python benchmarks/bench_sentinel.py [--events 20000] [--rounds 3]

Starts a primary, a replica and three sentinels on loopback (``RedisSentinels``), then
writes the same records through the sink over the sentinel URL twice per round: with
``wait_replicas=1`` (the default behind Sentinel: a batch leaves the buffer once a replica
has it) and with ``wait_replicas=0`` (the baseline, measured in the same run). Prints
events/s for each and the ratio; the best of ``--rounds``.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

from bitmusa_plugin._scale.sink import RedisSink
from bitmusa_plugin.testing import RedisSentinels, RedisServer


async def _rate(url: str, events: int, wait_replicas: int, stream: str) -> float:
    sink = RedisSink(url, stream=stream, maxlen=None, wait_replicas=wait_replicas)
    event = {"account": "a", "stream": "future_order", "eventTime": 0, "receivedAt": 0}
    started = time.perf_counter()
    for i in range(events):
        order: Any = {"id": f"F{i}", "status": "open", "amount": 1.0, "price": 0.5}
        envelope: Any = {**event, "eventTime": i}
        await sink.on_order(order, envelope)
    assert await sink.flush(120)
    elapsed = time.perf_counter() - started
    await sink.close()
    assert sink.written == events
    return events / elapsed


async def measure(events: int, rounds: int) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as tmp:
        group = RedisSentinels(Path(tmp)).start()
        try:
            waited = plain = 0.0
            for r in range(rounds):
                waited = max(waited, await _rate(group.url, events, 1, f"bench:w{r}"))
                plain = max(plain, await _rate(group.url, events, 0, f"bench:p{r}"))
        finally:
            group.stop()
    return waited, plain


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if not RedisServer.available():
        raise SystemExit("redis-server not found (Debian: apt-get install redis-server)")
    waited, plain = asyncio.run(measure(args.events, args.rounds))
    print(
        f"sink behind Sentinel, {args.events} events, best of {args.rounds}: "
        f"WAIT 1 replica {waited:,.0f} events/s, without WAIT {plain:,.0f} events/s, "
        f"ratio {waited / plain:.2f}"
    )


if __name__ == "__main__":
    main()
