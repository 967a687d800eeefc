"""End to end over loopback: the simulator (its own process) -> the engine -> a no-op plugin,
against a bare client (websockets + orjson, nothing else) reading the same bursts in the same
run; then the CLI path, as a user runs it.

    python benchmarks/bench_e2e.py [--frames 20000] [--repeats 5] [--part engine|cli|all]

The engine part:

* Throughput: a burst of ``--frames`` order frames written as fast as the server can; frames
  per second from the first frame read to the last one handled (ours: the plugin's hook).
* Latency: 2,000 frames paced at 1 ms; each frame carries the server's
  ``time.monotonic_ns()`` at write time (one clock for the machine); latency is the time
  from that to the bare client's ``orjson.loads`` / our plugin's hook.

Each run is a fresh process on one event loop; asyncio and uvloop runs alternate. Medians
over the runs; bare and ours are measured in the same process, one after the other.

The CLI part (``--part cli``), every side a subprocess reading the simulator's process:

* ``listen --output jsonl`` against ``_bare_client.py`` (websockets + orjson, one JSON line
  per frame, buffered): a ``--frames`` burst, runs interleaved; lines are counted on each
  pipe, throughput from the first line of the burst to the last;
* the same burst of states (500 orders, 10 positions, the balance) with a third-party sync
  plugin taking 1 ms per call beside the jsonl output: every line must arrive, and the
  plugin must end with the final state of every object;
* a 200,000-frame burst of the same kind: the listen process's peak RSS growth.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

import orjson
import websockets
from _sim_server import SimProcess, api_key, auth_key, mixed_truth, until

from bitmusa_hookspecs import hookimpl
from bitmusa_plugin._engine.pipeline import Pipeline
from bitmusa_plugin._engine.plugins import PluginRegistry
from bitmusa_plugin._engine.rest import ListenKeyClient
from bitmusa_plugin._engine.secrets import Credentials
from bitmusa_plugin._engine.stream import AccountConfig, AccountStream

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
        plugins = PluginRegistry()
        plugins.register(Probe(ours_sink), "probe")
        host = Pipeline(plugins, command="bench", queue_size=frames + 100)
        host.start(["bench"])
        config = AccountConfig(
            "bench", Credentials(api_key(1), auth_key(1)), sim.rest_url, sim.ws_url
        )
        stream = AccountStream(config, host)
        task = asyncio.get_running_loop().create_task(stream.run())
        await until(lambda: stream.machine.counters.resyncs >= 1)
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


# -- the CLI path ------------------------------------------------------------------------

HERE = Path(__file__).parent
OBJECTS = 500


def rss_kib(pid: int, field: str) -> int:
    """``VmRSS`` (now) or ``VmHWM`` (peak) of a process, KiB (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


class Lines:
    """Counts the lines a subprocess writes that carry an exchange event (both sides write
    ``"stream":"future_...`` once per such line), and when they come."""

    MARK = b'"stream":"future_'

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.count = 0
        self.text = bytearray()  # the first lines, kept until the stream is connected
        self.target = 0
        self.first = 0.0
        self.done = asyncio.Event()
        self.task = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        tail = b""
        while chunk := await self.proc.stdout.read(1 << 16):
            if self.target and not self.first:
                self.first = time.monotonic()
            data = tail + chunk  # a mark may straddle two chunks
            self.count += data.count(self.MARK)
            tail = data[-(len(self.MARK) - 1) :]
            if len(self.text) < 1 << 16:
                self.text += chunk
            if self.target and self.count >= self.target:
                self.done.set()

    async def expect(self, more: int) -> float:
        """Wait for ``more`` lines beyond those so far; the seconds from the first to last."""
        self.first = 0.0
        self.target = self.count + more
        self.done.clear()
        await asyncio.wait_for(self.done.wait(), 300)
        return time.monotonic() - self.first


def plugin_site(tmp: Path) -> Path:
    """A directory that installs _slow_plugin.py as the entry point ``slow`` (PYTHONPATH)."""
    site = tmp / "site"
    info = site / "slow_plugin-1.0.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: slow-plugin\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[bitmusa]\nslow = slow_plugin\n")
    (site / "slow_plugin.py").write_text((HERE / "_slow_plugin.py").read_text())
    return site


async def cli_side(
    side: str, sim: SimProcess, command: str, count: int, *, env_extra: dict[str, str]
) -> dict[str, Any]:
    """One run of ``listen --output jsonl`` (side ours) or of the bare client (side bare)
    through a burst: throughput, RSS before and peak, the exit status."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BITMUSA_")}
    env["BITMUSA_LOAD_PLUGINS"] = ""
    env |= env_extra
    if side == "bare":
        client = ListenKeyClient(Credentials(api_key(0), auth_key(0)), sim.rest_url)
        key = await client.create()
        await client.aclose()
        args = [str(HERE / "_bare_client.py"), f"{sim.ws_url}/ws/future/{key}", str(count)]
        account = api_key(0)
    else:
        env |= {"BITMUSA_API_KEY": api_key(1), "BITMUSA_AUTH_KEY": auth_key(1)}
        args = ["-m", "bitmusa_plugin", "listen", "--output", "jsonl", "--no-resync"]
        args += ["--rest-url", sim.rest_url, "--ws-url", sim.ws_url, "--account", "bench"]
        account = api_key(1)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    lines = Lines(proc)
    ready = False
    while not ready:  # the stream is up: the server sees it, and ours says so
        await asyncio.sleep(0.05)
        up = (await sim.command("stats"))["connections"] >= 1
        ready = up and (side == "bare" or b'"connected"' in lines.text)
    await asyncio.sleep(0.3)
    before = rss_kib(proc.pid, "VmRSS")
    sent = asyncio.ensure_future(
        sim.command(command, account, count, OBJECTS if command == "mixed" else 0)
    )
    seconds = await lines.expect(count)
    await sent
    result: dict[str, Any] = {
        "fps": count / seconds,
        "rss_before_kib": before,
        "rss_peak_kib": rss_kib(proc.pid, "VmHWM"),
        "lines": lines.count,
    }
    if "SLOW_PLUGIN_OUT" in env_extra:  # wait for the slow plugin's last states
        out = Path(env_extra["SLOW_PLUGIN_OUT"])
        truth = mixed_truth(count, OBJECTS)
        deadline = time.monotonic() + 120
        got: dict[str, Any] = {"final": {}}
        while time.monotonic() < deadline and got["final"] != truth:
            await asyncio.sleep(0.1)
            if out.exists():  # noqa: ASYNC240 (a small local file, polled)
                got = orjson.loads(out.read_bytes())  # noqa: ASYNC240
        result["final_states_equal"] = got["final"] == truth
        result["objects"] = len(truth)
        result["slow_calls"] = got.get("calls", 0)
        result["slow_seconds"] = time.monotonic() - deadline + 120
    proc.send_signal(signal.SIGINT)
    assert proc.stderr is not None
    err = await asyncio.wait_for(proc.stderr.read(), 30)
    await asyncio.wait_for(proc.wait(), 30)
    await lines.task
    result["returncode"] = proc.returncode
    result["traceback"] = b"Traceback" in err
    return result


async def cli_part(frames: int, repeats: int, as_json: bool = False) -> None:
    import json
    import tempfile

    print(
        f"bench_e2e CLI path: {frames}-frame bursts, {repeats} interleaved runs per side, "
        f"Python {sys.version.split()[0]}, {os.cpu_count()} CPUs, {time.strftime('%Y-%m-%d')}"
    )
    runs: dict[str, list[dict[str, Any]]] = {"bare": [], "ours": []}
    async with SimProcess(accounts=2) as sim:
        for _ in range(repeats):
            for side in ("bare", "ours"):
                runs[side].append(await cli_side(side, sim, "burst", frames, env_extra={}))
        if as_json:  # for benchmarks/ab.py: the interleaved throughput runs only
            ours = statistics.median(r["fps"] for r in runs["ours"])
            bare = statistics.median(r["fps"] for r in runs["bare"])
            lost = max(frames - r["lines"] for r in runs["ours"])
            ratio = statistics.median(
                o["fps"] / b["fps"] for o, b in zip(runs["ours"], runs["bare"], strict=True)
            )
            figures = {"ours lines/s": ours, "bare lines/s": bare, "ours / bare": ratio}
            print(json.dumps(figures | {"lines lost": lost}))
            return
        with tempfile.TemporaryDirectory() as tmp:
            slow_env = {
                "PYTHONPATH": str(plugin_site(Path(tmp))),
                "BITMUSA_LOAD_PLUGINS": "slow",
                "SLOW_PLUGIN_OUT": str(Path(tmp) / "final.json"),
            }
            slow = await cli_side("ours", sim, "mixed", frames, env_extra=slow_env)
            (Path(tmp) / "final.json").unlink(missing_ok=True)
            big = await cli_side("ours", sim, "mixed", 200_000, env_extra=slow_env)
            bare_big = await cli_side("bare", sim, "mixed", 200_000, env_extra={})
    for side_runs in runs.values():
        assert all(r["returncode"] == 0 and not r["traceback"] for r in side_runs), side_runs
    ours = statistics.median(r["fps"] for r in runs["ours"])
    bare = statistics.median(r["fps"] for r in runs["bare"])
    print()
    print("| measure | ours | bare | ours / bare | target |")
    print("|---|---|---|---|---|")
    print(f"| throughput, lines/s | {ours:,.0f} | {bare:,.0f} | {ours / bare:.2f} | ≥ 0.7 |")
    lost = [frames - r["lines"] for r in runs["ours"]]
    print(f"| lines lost by listen, per run | {max(lost)} | | | 0 |")
    print()
    print(
        f"slow plugin (1 ms a call, delivery 'latest') beside jsonl, {frames} states of "
        f"{slow['objects']} objects: jsonl lines {slow['lines']:,} of {frames:,}; "
        f"final states equal the ground truth: {slow['final_states_equal']}; the plugin took "
        f"{slow['slow_calls']:,} calls in {slow['slow_seconds']:.1f} s; exit {slow['returncode']}"
    )
    growth = big["rss_peak_kib"] - big["rss_before_kib"]
    bare_growth = bare_big["rss_peak_kib"] - bare_big["rss_before_kib"]
    print(
        f"200,000-frame burst, same plugins: peak RSS growth {growth / 1024:.1f} MiB "
        f"(from {big['rss_before_kib'] / 1024:.1f} MiB; the bare client: "
        f"{bare_growth / 1024:.1f} MiB); jsonl lines {big['lines']:,}; final states "
        f"equal: {big['final_states_equal']}; throughput {big['fps']:,.0f} lines/s "
        f"(bare {bare_big['fps']:,.0f})"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=20000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--part", choices=("engine", "cli", "all"), default="all")
    parser.add_argument("--child", choices=("asyncio", "uvloop"), help=argparse.SUPPRESS)
    parser.add_argument(
        "--json", action="store_true", help="with --part cli: one JSON line (benchmarks/ab.py)"
    )
    args = parser.parse_args()
    if args.child:
        run_child(args.child, args.frames)
    else:
        if args.part in ("engine", "all"):
            main(args.frames, args.repeats)
        if args.part in ("cli", "all"):
            asyncio.run(cli_part(args.frames, args.repeats, args.json))
