"""End to end over loopback: the simulator (its own process) -> the engine -> a no-op plugin,
against a bare client (websockets + orjson, nothing else) reading the same bursts in the same
run.

    python benchmarks/bench_e2e.py [--frames 20000] [--repeats 5]

* Throughput: a burst of ``--frames`` order frames written as fast as the server can; frames
  per second from the first frame read to the last one handled (ours: the plugin's hook).
* Latency: 2,000 frames paced at 1 ms; each frame carries the server's
  ``time.monotonic_ns()`` at write time (one clock for the machine); latency is the time
  from that to the bare client's ``orjson.loads`` / our plugin's hook.

Each run is a fresh process on one event loop; asyncio and uvloop runs alternate. Medians
over the runs; bare and ours are measured in the same process, one after the other.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
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


async def measure(frames: int, loop_name: str) -> dict[str, Any]:
    """One child run: a throughput burst and a paced burst per side, bare first."""
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
        result: dict[str, Any] = {}
        for name, account, sink in (
            ("bare", api_key(0), bare_sink),
            ("ours", api_key(1), ours_sink),
        ):
            burst = await run_burst(sim, account, sink, frames, 0)
            await asyncio.sleep(0.2)
            paced = await run_burst(sim, account, sink, PACED, 0.001)
            result[name] = {**paced, "fps": burst["fps"]}
            result[f"{name}_latencies_ms"] = [ns / 1e6 for ns in sink.latency_ns]
            await asyncio.sleep(0.2)
        stream.stop()
        await asyncio.wait_for(task, 10)
        await host.stop()
        bare.cancel()
    return result


def child(frames: int, loop_name: str) -> dict[str, Any]:
    """Run :func:`measure` on the given loop, in a fresh process."""
    out = subprocess.run(
        [sys.executable, __file__, "--child", loop_name, "--frames", str(frames)],
        check=True,
        capture_output=True,
    )
    result: dict[str, Any] = orjson.loads(out.stdout.splitlines()[-1])
    return result


def main(frames: int, repeats: int) -> None:
    runs: dict[str, list[dict[str, Any]]] = {"asyncio": [], "uvloop": []}
    for _ in range(repeats):  # interleaved, so that the machine's drift hits both alike
        for loop_name, results in runs.items():
            results.append(child(frames, loop_name))
    for loop_name, results in runs.items():
        save_raw(
            loop_name,
            {side: results[-1][f"{side}_latencies_ms"] for side in ("bare", "ours")},
        )

    def med(loop_name: str, side: str, key: str) -> float:
        return float(statistics.median(r[side][key] for r in runs[loop_name]))

    print(
        f"bench_e2e: {frames}-frame bursts and {PACED} frames at 1,000/s, {repeats} runs per "
        f"loop (interleaved), Python {sys.version.split()[0]}, {os.cpu_count()} CPUs, "
        f"{time.strftime('%Y-%m-%d')}"
    )
    for loop_name in runs:
        print()
        print(f"event loop: {loop_name}")
        print()
        print("| measure | ours | bare websockets + orjson | ours / bare | target |")
        print("|---|---|---|---|---|")
        o, b = med(loop_name, "ours", "fps"), med(loop_name, "bare", "fps")
        print(f"| throughput, frames/s | {o:,.0f} | {b:,.0f} | {o / b:.2f} | ≥ 0.80 |")
        for key, target in (("p50", "≤ 1.5"), ("p99", "≤ 2.0")):
            o, b = med(loop_name, "ours", key), med(loop_name, "bare", key)
            print(
                f"| latency {key}, ms (1,000 frames/s) | {o:.3f} | {b:.3f} | {o / b:.2f} "
                f"| {target} |"
            )
    print()
    print("uvloop against asyncio, same runs (higher is better for throughput):")
    for side in ("ours", "bare"):
        fps = med("uvloop", side, "fps") / med("asyncio", side, "fps")
        p50 = med("uvloop", side, "p50") / med("asyncio", side, "p50")
        p99 = med("uvloop", side, "p99") / med("asyncio", side, "p99")
        print(f"  {side}: throughput {fps:.2f}x, latency p50 {p50:.2f}x, p99 {p99:.2f}x")


def run_child(loop_name: str, frames: int) -> None:
    coro = measure(frames, loop_name)
    if loop_name == "uvloop":
        import uvloop

        result = uvloop.run(coro)
    else:
        result = asyncio.run(coro)
    print(orjson.dumps(result).decode())


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=20000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--child", choices=("asyncio", "uvloop"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        run_child(args.child, args.frames)
    else:
        main(args.frames, args.repeats)
