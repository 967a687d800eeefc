"""End to end over loopback: the simulator (its own process) -> the engine -> a no-op plugin,
against a bare client (websockets + orjson, nothing else) reading the same bursts in the same
run.

    python benchmarks/bench_e2e.py [--loop asyncio|uvloop] [--frames 20000] [--repeats 3]

* Throughput: a burst of ``--frames`` order frames written as fast as the server can; frames
  per second from the first frame read to the last one handled (ours: the plugin's hook).
* Latency: 2,000 frames paced at 1 ms; each frame carries the server's
  ``time.monotonic_ns()`` at write time (one clock for the machine); latency is the time
  from that to the bare client's ``orjson.loads`` / our plugin's hook.

Medians over the repeats; bare and ours alternate within each repeat.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

import orjson
import websockets
from _sim_server import SimProcess, api_key, auth_key, until

from bitmusa_hookspecs import hookimpl
from bitmusa_plugin.host import Host
from bitmusa_plugin.plugins import PluginHost
from bitmusa_plugin.rest import ListenKeyClient
from bitmusa_plugin.secrets import Credentials
from bitmusa_plugin.stream import AccountConfig, AccountStream

PACED = 2000


class Sink:
    """Where each side reports a handled frame: its latency, and when."""

    def __init__(self) -> None:
        self.latency_ns: list[int] = []
        self.first = 0.0
        self.last = 0.0
        self.expected = 0
        self.done = asyncio.Event()

    def reset(self, expected: int) -> None:
        self.latency_ns.clear()
        self.expected = expected
        self.done = asyncio.Event()

    def add(self, sent_ns: int) -> None:
        now = time.monotonic_ns()
        if not self.latency_ns:
            self.first = now / 1e9
        self.latency_ns.append(now - sent_ns)
        self.last = now / 1e9
        if len(self.latency_ns) >= self.expected:
            self.done.set()


class Probe:
    """The no-op plugin (it reads one field: the write time)."""

    def __init__(self, sink: Sink) -> None:
        self.sink = sink

    @hookimpl
    async def on_order(self, event: dict[str, Any]) -> None:
        self.sink.add(event["data"]["sentNs"])


async def bare_client(url: str, sink: Sink) -> None:
    async with websockets.connect(url, compression=None, max_size=1 << 20) as ws:
        async for message in ws:
            frame = orjson.loads(message)
            sink.add(frame["data"]["sentNs"])


async def run_burst(
    sim: SimProcess, account: str, sink: Sink, count: int, interval: float
) -> dict[str, float]:
    sink.reset(count)
    await sim.command("burst", account, count, interval)
    await asyncio.wait_for(sink.done.wait(), 60)
    lat = sorted(sink.latency_ns)
    return {
        "fps": count / max(sink.last - sink.first, 1e-9),
        "p50": lat[len(lat) // 2] / 1e6,
        "p99": lat[int(len(lat) * 0.99)] / 1e6,
    }


def save_raw(loop_name: str, latencies: dict[str, list[float]]) -> None:
    """The last paced burst's latencies, for the CDF in benchmarks/plots.py."""
    out = Path("build/bench")
    out.mkdir(parents=True, exist_ok=True)
    (out / f"e2e-{loop_name}.json").write_bytes(
        orjson.dumps({"bare_ms": latencies["bare"], "ours_ms": latencies["ours"]})
    )


async def main(frames: int, repeats: int, loop_name: str) -> None:
    async with SimProcess(accounts=2) as sim:
        bare_sink, ours_sink = Sink(), Sink()
        client = ListenKeyClient(Credentials(api_key(0), auth_key(0)), sim.rest_url)
        key = await client.create()
        await client.aclose()
        bare = asyncio.get_running_loop().create_task(
            bare_client(f"{sim.ws_url}/ws/future/{key}", bare_sink)
        )
        plugins = PluginHost()
        plugins.register(Probe(ours_sink), "probe")
        host = Host(plugins, command="bench", queue_size=frames + 100)
        host.start(["bench"])
        config = AccountConfig(
            "bench", Credentials(api_key(1), auth_key(1)), sim.rest_url, sim.ws_url
        )
        stream = AccountStream(config, host)
        task = asyncio.get_running_loop().create_task(stream.run())
        await until(lambda: stream.policy.counters.resyncs >= 1)
        await asyncio.sleep(0.3)

        results: dict[str, list[dict[str, float]]] = {"bare": [], "ours": []}
        paced: dict[str, list[dict[str, float]]] = {"bare": [], "ours": []}
        last: dict[str, list[float]] = {}
        sides: list[tuple[str, str, Sink]] = [
            ("bare", api_key(0), bare_sink),
            ("ours", api_key(1), ours_sink),
        ]
        for _ in range(repeats):
            for name, account, sink in sides:
                results[name].append(await run_burst(sim, account, sink, frames, 0))
                await asyncio.sleep(0.2)
                paced[name].append(await run_burst(sim, account, sink, PACED, 0.001))
                last[name] = [ns / 1e6 for ns in sink.latency_ns]  # for the latency CDF
                await asyncio.sleep(0.2)
        stream.stop()
        await asyncio.wait_for(task, 10)
        await host.stop()
        bare.cancel()

    save_raw(loop_name, last)

    def med(side: dict[str, list[dict[str, float]]], name: str, key: str) -> float:
        return statistics.median(r[key] for r in side[name])

    print(
        f"bench_e2e: loop {loop_name}, {frames} frames x {repeats}, Python "
        f"{sys.version.split()[0]}, {os.cpu_count()} CPUs, {time.strftime('%Y-%m-%d')}"
    )
    print()
    print("| measure | ours | bare websockets + orjson | ours / bare | target |")
    print("|---|---|---|---|---|")
    o, b = med(results, "ours", "fps"), med(results, "bare", "fps")
    print(f"| throughput, frames/s | {o:,.0f} | {b:,.0f} | {o / b:.2f} | ≥ 0.80 |")
    for key, target in (("p50", "≤ 1.5"), ("p99", "≤ 2.0")):
        o, b = med(paced, "ours", key), med(paced, "bare", key)
        print(
            f"| latency {key}, ms (1,000 frames/s) | {o:.3f} | {b:.3f} | {o / b:.2f} | {target} |"
        )


def run(loop_name: str, main_coro: Callable[[], Any]) -> None:
    if loop_name == "uvloop":
        import uvloop

        uvloop.run(main_coro())
    else:
        asyncio.run(main_coro())


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio")
    parser.add_argument("--frames", type=int, default=20000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    run(args.loop, lambda: main(args.frames, args.repeats, args.loop))
