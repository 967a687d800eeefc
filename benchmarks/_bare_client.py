"""The baseline of bench_e2e's CLI path: a bare websockets + orjson client that writes one
JSON line per frame to standard output, buffered, as a minimal recorder would.

    python benchmarks/_bare_client.py WS_URL COUNT

It flushes every 100 ms, and after the COUNT-th frame (it knows when the burst ends;
``listen`` does not, and flushes when its queue drains instead).
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time

import orjson
import websockets


async def main(url: str, count: int) -> None:
    out = sys.stdout.buffer
    seen = 0
    flushed = time.monotonic()
    async with websockets.connect(url, compression=None, max_size=1 << 20) as ws:
        async for message in ws:
            frame = orjson.loads(message)
            out.write(orjson.dumps(frame, option=orjson.OPT_APPEND_NEWLINE))
            seen += 1
            now = time.monotonic()
            if seen % count == 0 or now - flushed >= 0.1:
                out.flush()
                flushed = now


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):  # the benchmark stops it with SIGINT
        asyncio.run(main(sys.argv[1], int(sys.argv[2])))
