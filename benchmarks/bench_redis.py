"""The Redis sink against bare XADD, and a worker takeover, against a redis-server started
here on a free loopback port.

    python benchmarks/bench_redis.py [--events 50000]

* Sink: ``--events`` order events through ``Pipeline.ingest`` into the sink, until all are in
  Redis: events per second. Baseline, same run: the same jsonl records written with bare
  pipelined XADDs of 500 (redis-py, nothing else).
* Takeover: two worker processes share 10 simulator accounts; one is SIGKILLed; the time
  until each of its accounts is leased by the other and connected again.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson
import redis.asyncio as redis

from bitmusa_plugin._engine.pipeline import Pipeline
from bitmusa_plugin._engine.plugins import PluginRegistry
from bitmusa_plugin._scale import registry
from bitmusa_plugin._scale.sink import RedisSink, idempotency_id
from bitmusa_plugin.simulator import Simulator
from bitmusa_plugin.testing import RedisServer, order_frame

BATCH = 500


def spawn(argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(argv, env=env, stderr=subprocess.DEVNULL)


async def sink_rate(url: str, n: int) -> float:
    sink = RedisSink(url, stream="bench:sink", maxlen=None)
    plugins = PluginRegistry()
    plugins.register(sink, "redis-sink")
    host = Pipeline(plugins, command="bench", queue_size=n + 10)
    sink.bind(host.report)
    host.start(["bench"])
    frames = [order_frame(f"F{i}", event_time=1700000000000 + i) for i in range(n)]
    start = time.perf_counter()
    for i, frame in enumerate(frames):
        host.ingest("bench", frame)
        if i % 64 == 63:
            await asyncio.sleep(0)
    await host.dispatcher.drain(60)
    await sink.flush(60)
    elapsed = time.perf_counter() - start
    await host.stop()
    return n / elapsed


async def bare_rate(url: str, n: int) -> float:
    records = [
        {"hook": "on_order", "order": {"id": f"F{i}"}, "event": {"eventTime": i}} for i in range(n)
    ]
    bodies = [(idempotency_id(r).encode(), orjson.dumps(r)) for r in records]
    client = redis.Redis.from_url(url)
    start = time.perf_counter()
    for i in range(0, n, BATCH):
        pipe = client.pipeline(transaction=False)
        for ident, body in bodies[i : i + BATCH]:
            pipe.xadd("bench:bare", {b"id": ident, b"json": body})
        await pipe.execute()
    elapsed = time.perf_counter() - start
    await client.aclose()
    return n / elapsed


async def takeover(url: str) -> float:
    n = 10
    creds = {f"bench-api-{i:04d}": f"bench-auth-{i:04d}" for i in range(n)}
    env = dict(os.environ)
    client = redis.Redis.from_url(url)
    async with Simulator(event_interval=0.5, accounts=creds) as sim:
        for i, (api, auth) in enumerate(creds.items()):
            env[f"A{i}_API"], env[f"A{i}_AUTH"] = api, auth
            record = registry.AccountRecord(
                f"a{i}", f"A{i}_API", f"A{i}_AUTH", None, sim.rest_url, sim.ws_url
            )
            await registry.add(client, "bench", record)
        argv = [sys.executable, "-m", "bitmusa_plugin", "worker", "--redis", url]
        workers = [spawn([*argv, "--group", "bench"], env) for _ in range(2)]

        async def owners() -> dict[str, str | None]:
            out = {}
            for i in range(n):
                holder: Any = await client.get(f"bitmusa:bench:lease:a{i}")
                out[f"a{i}"] = holder.decode().rsplit(":", 1)[0] if holder else None
            return out

        accounts = list(sim.accounts.values())
        while True:
            held = await owners()
            spread = None not in held.values() and len(set(held.values())) == 2
            if spread and all(len(sim.live(a)) == 1 for a in accounts):
                break
            await asyncio.sleep(0.2)
        victim = workers[0]
        victim_id = next(w for w in held.values() if w and w.endswith(f":{victim.pid}"))
        moved = [label for label, w in held.items() if w == victim_id]
        start = time.monotonic()
        victim.send_signal(signal.SIGKILL)
        while True:
            now = await owners()
            if all(now[label] not in (None, victim_id) for label in moved) and all(
                len(sim.live(accounts[int(label[1:])])) == 1 for label in moved
            ):
                break
            await asyncio.sleep(0.05)
        seconds = time.monotonic() - start
        for proc in workers[1:]:
            proc.send_signal(signal.SIGTERM)
            proc.wait(20)
    await client.aclose()
    return seconds


async def main(n: int) -> None:
    if not RedisServer.available():
        sys.exit("redis-server not found: apt-get install redis-server")
    with tempfile.TemporaryDirectory() as tmp:
        server = RedisServer(Path(tmp)).start()
        url = server.url
        try:
            ours, bare = [], []
            for _ in range(3):  # interleaved
                bare.append(await bare_rate(url, n))
                ours.append(await sink_rate(url, n))
            took = await takeover(url)
        finally:
            server.stop()
    ours.sort()
    bare.sort()
    print(
        f"bench_redis: {n} events x 3, Python {sys.version.split()[0]}, {os.cpu_count()} CPUs, "
        f"{time.strftime('%Y-%m-%d')}"
    )
    print()
    print("| measure | ours | baseline | ratio |")
    print("|---|---|---|---|")
    print(
        f"| events/s into Redis | {ours[1]:,.0f} (ingest + map + sink) | {bare[1]:,.0f} "
        f"(bare pipelined XADD) | {ours[1] / bare[1]:.2f} |"
    )
    print(
        f"| takeover after SIGKILL (lease TTL 10 s) | {took:.1f} s | 10 s (the TTL) | "
        f"{took / 10:.2f} |"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=50000)
    asyncio.run(main(parser.parse_args().events))
