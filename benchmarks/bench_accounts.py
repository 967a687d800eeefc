"""Many accounts in one process: memory per idle stream, idle CPU, keep-alive spread, and a
mass reconnect, against the simulator in its own process.

    python benchmarks/bench_accounts.py [--accounts 1000] [--rest-rate 100,6000]

Baseline, measured in the same run: as many bare websockets connections (``websockets`` and
nothing else, no REST, no plugin host) to the same server, idle. Real timing throughout
(keep-alive every 30 min, pings every 20 s); only the REST allowance is raised for start-up,
which with Bitmusa's documented 8/s and 200/min would take 20 minutes for 1,000 accounts
(a POST and three snapshot GETs each): ``--rest-rate 8,200`` measures exactly that.
"""

from __future__ import annotations

import argparse
import ast
import asyncio
import functools
import gc
import json
import os
import resource
import statistics
import sys
import time
import tracemalloc
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import websockets
from _sim_server import SimProcess, api_key, auth_key, until
from websockets.asyncio.client import ClientConnection

from bitmusa_hookspecs import hookimpl
from bitmusa_plugin._engine.limiter import RateLimiter
from bitmusa_plugin._engine.pipeline import Pipeline
from bitmusa_plugin._engine.plugins import PluginRegistry
from bitmusa_plugin._engine.rest import ListenKeyClient, http_client
from bitmusa_plugin._engine.secrets import Credentials
from bitmusa_plugin._engine.stream import AccountConfig, AccountStream

PAGE = os.sysconf("SC_PAGE_SIZE")


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


def settle() -> int:
    for _ in range(3):
        gc.collect()
    return rss()


class Noop:
    @hookimpl
    async def on_order(self) -> None:
        pass


async def bare_connections(sim: SimProcess, n: int) -> tuple[int, list[ClientConnection]]:
    """``n`` idle websockets connections and nothing else; RSS they added."""
    keys = []
    for i in range(n):  # the keys, through the engine's REST client (not measured)
        client = ListenKeyClient(Credentials(api_key(i), auth_key(i)), sim.rest_url)
        keys.append(await client.create())
        await client.aclose()
    before = settle()
    conns = [
        await websockets.connect(f"{sim.ws_url}/ws/future/{key}", compression=None) for key in keys
    ]
    await asyncio.sleep(1.0)
    return settle() - before, conns


def _our_function(frame: tracemalloc.Frame) -> str:
    """``module:function`` of a frame of ours (the innermost function around its line)."""
    best: tuple[int, str] | None = None
    for node in ast.walk(_parsed(frame.filename)):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            end = node.end_lineno or node.lineno
            if node.lineno <= frame.lineno <= end and (best is None or node.lineno > best[0]):
                best = (node.lineno, node.name)
    name = "/".join(Path(frame.filename).parts[-2:])
    return f"{name}:{best[1] if best else '<module>'}"


@functools.cache
def _parsed(filename: str) -> ast.Module:
    return ast.parse(Path(filename).read_text())


def top_sites(before: tracemalloc.Snapshot, n: int, limit: int) -> None:
    """What the idle streams hold (``--trace``), bytes a stream: by the innermost function
    of ours on each block's allocation stack (the holder: a block allocated under no frame
    of ours is asyncio's or websockets', from a callback), then by allocation site."""
    after = tracemalloc.take_snapshot()
    peak = tracemalloc.get_traced_memory()[1]
    stats = after.compare_to(before, "traceback")
    total = sum(s.size_diff for s in stats)
    print(
        f"tracemalloc: {total / n:,.0f} B a stream on the Python heap (the traced heap's "
        f"peak during start-up: {peak / n:,.0f} B a stream); by holder:"
    )
    holders: Counter[str] = Counter()
    for stat in stats:
        ours = [f for f in stat.traceback if f"{os.sep}bitmusa_plugin{os.sep}" in f.filename]
        holders[_our_function(ours[-1]) if ours else "(no frame of ours)"] += stat.size_diff
    for holder, size in holders.most_common(limit):
        print(f"  {size / n:8,.0f} B  {holder}")
    print("the largest sites:")
    for stat in after.compare_to(before, "lineno")[:limit]:
        frame = stat.traceback[0]
        name = "/".join(Path(frame.filename).parts[-2:])
        print(
            f"  {stat.size_diff / n:8,.0f} B  {stat.count_diff / n:6.1f} blocks  "
            f"{name}:{frame.lineno}"
        )


async def main(
    n: int, rate: tuple[int, int], idle: float, trace: int = 0, as_json: bool = False
) -> None:
    print(
        f"bench_accounts: {n} accounts, REST {rate[0]}/s {rate[1]}/min, Python "
        f"{sys.version.split()[0]}, {os.cpu_count()} CPUs, {time.strftime('%Y-%m-%d')}"
    )
    async with SimProcess(accounts=n) as sim:
        # -- baseline: bare connections ---------------------------------------------------
        bare_bytes, conns = await bare_connections(sim, n)
        for ws in conns:
            await ws.close()
        del conns
        await asyncio.sleep(0.5)

        # -- ours -------------------------------------------------------------------------
        plugins = PluginRegistry()
        plugins.register(Noop(), "noop")
        host = Pipeline(plugins, command="bench")
        host.start([f"a{i}" for i in range(n)])
        limiter = RateLimiter(((rate[0], 1.0), (rate[1], 60.0)))
        http = http_client(connections=32)
        before = settle()
        if trace:
            tracemalloc.start(25)  # deep enough to reach a frame of ours
            traced = tracemalloc.take_snapshot()
        start = time.monotonic()
        streams = [
            AccountStream(
                AccountConfig(
                    f"a{i}", Credentials(api_key(i), auth_key(i)), sim.rest_url, sim.ws_url
                ),
                host,
                limiter=limiter,
                http=http,
            )
            for i in range(n)
        ]
        tasks = [asyncio.get_running_loop().create_task(s.run()) for s in streams]
        await until(lambda: sum(s.machine.counters.resyncs for s in streams) >= n)
        startup = time.monotonic() - start
        await asyncio.sleep(1.0)
        ours_bytes = settle() - before
        if trace:
            top_sites(traced, n, trace)
            tracemalloc.stop()
        server = await sim.command("stats")

        # -- idle CPU ---------------------------------------------------------------------
        usage0, wall0 = resource.getrusage(resource.RUSAGE_SELF), time.monotonic()
        await asyncio.sleep(idle)
        usage1, wall1 = resource.getrusage(resource.RUSAGE_SELF), time.monotonic()
        cpu = (usage1.ru_utime - usage0.ru_utime) + (usage1.ru_stime - usage0.ru_stime)
        idle_pct = cpu / (wall1 - wall0) * 100
        switches = usage1.ru_nvcsw - usage0.ru_nvcsw  # voluntary wake-ups of the process

        # -- keep-alive spread: the deadlines the policies will act on --------------------
        now = time.monotonic()
        due = [s.machine._keepalive_at for s in streams if s.machine._keepalive_at is not None]
        per_second = Counter(int(d - now) for d in due)
        spread = (max(due) - min(due)) if due else 0.0

        # -- a mass reconnect: every connection reset at once -----------------------------
        gaps_before = sum(s.machine.counters.gaps for s in streams)
        resyncs_before = sum(s.machine.counters.resyncs for s in streams)
        await sim.command("dropall")
        herd_start = time.monotonic()
        await until(lambda: sum(s.machine.counters.resyncs for s in streams) >= resyncs_before + n)
        herd = time.monotonic() - herd_start
        gaps = sum(s.machine.counters.gaps for s in streams) - gaps_before
        after_herd = await sim.command("stats")

        for s in streams:
            s.stop()
        await asyncio.wait_for(asyncio.gather(*tasks), 60)
        await http.aclose()
        await host.stop()

    per_bare = bare_bytes / n / 1024
    per_ours = ours_bytes / n / 1024
    if as_json:  # for benchmarks/ab.py
        figures = {
            "KiB an idle stream": per_ours,
            "KiB a bare connection": per_bare,
            "stream / bare": per_ours / per_bare,
            "start-up / REST allowance": startup / (4 * n / rate[0]),
            "idle CPU %": idle_pct,
            "idle wake-ups": switches,
            "mass reconnect s": herd,
        }
        print(json.dumps(figures))
        return
    print()
    print("| measure | ours | baseline | ratio | target |")
    print("|---|---|---|---|---|")
    print(
        f"| RSS per idle stream | {per_ours:.1f} KiB | {per_bare:.1f} KiB (bare websockets) "
        f"| {per_ours / per_bare:.2f}× | ≤ 24 KiB, 2× bare (issue 21) |"
    )
    print(
        f"| CPU while idle, {n} streams | {idle_pct:.2f} % of a core over {idle:.0f} s "
        f"({switches} wake-ups) | – | – | close to 0 |"
    )
    print(
        f"| start-up, {n} accounts (POST + connect + 3 GETs each) | {startup:.1f} s "
        f"| {4 * n / rate[0]:.1f} s (the REST allowance alone) | "
        f"{startup / (4 * n / rate[0]):.2f}× | paced, not refused |"
    )
    print(f"| REST errors at start-up (429 or other) | {server['rest_errors']} | 0 | – | 0 |")
    print(
        f"| keep-alives due in the busiest second | {max(per_second.values())} "
        f"| {n / max(spread, 1):.2f} (even spread over {spread:.0f} s) | – | no herd |"
    )
    print(
        f"| mass reconnect: all {n} back and resynced | {herd:.1f} s, {gaps} gaps, "
        f"{after_herd['rest_errors'] - server['rest_errors']} REST errors | – | – | paced |"
    )
    print()
    mean_due = statistics.fmean(per_second.values()) if per_second else 0
    print(
        f"keep-alive deadlines: {len(due)} over {spread:.0f} s, mean {mean_due:.2f} and "
        f"max {max(per_second.values())} in one second (Bitmusa allows 8/s)"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accounts", type=int, default=1000)
    parser.add_argument("--rest-rate", default="100,6000", help="PER_S,PER_MIN")
    parser.add_argument("--idle", type=float, default=20.0, help="seconds of idle measured")
    parser.add_argument(
        "--trace", type=int, default=0, metavar="N", help="print the N largest allocation sites"
    )
    parser.add_argument("--json", action="store_true", help="one JSON line (benchmarks/ab.py)")
    args = parser.parse_args()
    per_s, per_min = (int(x) for x in args.rest_rate.split(","))
    asyncio.run(main(args.accounts, (per_s, per_min), args.idle, args.trace, args.json))
