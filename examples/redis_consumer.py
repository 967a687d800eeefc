"""A consumer service on "another machine": it reads the Redis stream the workers (or
``listen --redis``) write, through a consumer group, and keeps a live picture of every
account's fills and positions. Run as many copies as you like with the same group: each
event is processed once, duplicates (worker handovers) are dropped by idempotency id.

    python examples/redis_consumer.py --redis redis://redis-host:6379/0 --group risk

It needs only ``bitmusa-plugin[redis]`` and the Redis URL: no exchange credentials.
"""

from __future__ import annotations

import argparse
import asyncio
from collections import defaultdict
from typing import Any

from bitmusa_plugin import consume


async def main(redis_url: str, group: str, until_idle: bool) -> None:
    positions: dict[str, dict[str, float]] = defaultdict(dict)
    counts: dict[str, int] = defaultdict(int)
    async for item in consume(redis_url, group, block_ms=1000, stop_when_idle=until_idle):
        counts[item.hook] += 1
        obj: dict[str, Any] = item.obj
        account = (item.event or {}).get("account") or obj.get("account", "?")
        if item.hook == "on_order" and obj.get("filled"):
            print(
                f"{account} fill {obj['symbol']} {obj['side']} {obj['filled']} @ {obj['average']}"
            )
        elif item.hook == "on_position":
            positions[account][obj["symbol"]] = obj["contracts"] or 0.0
        elif item.hook == "on_stream_state" and obj["status"] == "gap":
            print(f"{account} gap {obj['since']}..{obj['until']} (resynced by the worker)")
    print("done:", dict(counts), {a: p for a, p in positions.items()})


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis", required=True, metavar="URL")
    parser.add_argument("--group", default="example-consumer")
    parser.add_argument("--until-idle", action="store_true", help="stop when caught up")
    args = parser.parse_args()
    asyncio.run(main(args.redis, args.group, args.until_idle))
