"""Per-event cost of ingest (decode + map + dispatch) with 0, 1, 5 and 20 plugins, async and
sync.

    python benchmarks/bench_dispatch.py [--events N] [--repeats R]

Each run ingests N order frames and waits until every plugin has handled every event. The
baseline is 0 plugins in the same run; the ratio column is cost / baseline.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from bench_mapping import ORDER

from bitmusa_hookspecs import hookimpl
from bitmusa_plugin._engine.pipeline import Pipeline
from bitmusa_plugin._engine.plugins import PluginRegistry


class AsyncNoop:
    @hookimpl
    async def on_order(self, order: Any, event: Any) -> None:
        pass


class SyncNoop:
    @hookimpl
    def on_order(self, order: Any, event: Any) -> None:
        pass


async def run_once(kind: str, count: int, events: int) -> float:
    plugins = PluginRegistry()
    for i in range(count):
        plugins.register(AsyncNoop() if kind == "async" else SyncNoop(), f"p{i}")
    host = Pipeline(plugins, command="bench", queue_size=events + 10)
    host.start(["bench"])
    await host.dispatcher.drain()
    start = time.perf_counter()
    for n in range(events):
        host.ingest("bench", ORDER)
        if n % 16 == 15:  # frames arrive in small bursts, as from a socket, not all at once
            await asyncio.sleep(0)
    await host.dispatcher.drain()
    elapsed = time.perf_counter() - start
    await host.stop()
    return elapsed / events * 1e6


def save_raw(rows: list[list[object]]) -> None:
    """For benchmarks/plots.py."""
    out = Path("build/bench")
    out.mkdir(parents=True, exist_ok=True)
    (out / "dispatch.json").write_text(json.dumps(rows))


async def main(events: int, repeats: int, as_json: bool = False) -> None:
    if as_json:  # for benchmarks/ab.py: µs per event, by case
        cases = [("-", 0), ("async", 1), ("sync", 1), ("async", 5)]
        medians: dict[str, float] = {}
        for kind, count in cases:
            runs = [await run_once(kind, count, events) for _ in range(repeats)]
            label = "0 plugins" if count == 0 else f"{count} {kind}"
            medians[f"{label}, µs/event"] = statistics.median(runs)
        print(json.dumps(medians))
        return
    print(
        f"# bench_dispatch  {time.strftime('%Y-%m-%d')}  python {platform.python_version()}  "
        f"events={events} repeats={repeats}"
    )
    print(f"{'plugins':<12}{'µs/event':>10}{'vs 0':>8}{'added/plugin µs':>17}")
    cases = [("-", 0)] + [(kind, n) for kind in ("async", "sync") for n in (1, 5, 20)]
    samples: dict[tuple[str, int], list[float]] = {case: [] for case in cases}
    for _ in range(repeats):
        for kind, count in cases:  # interleaved, so drift hits every case alike
            samples[(kind, count)].append(await run_once(kind, count, events))
    base = statistics.median(samples[("-", 0)])
    save_raw([[kind, n, statistics.median(v)] for (kind, n), v in samples.items()])
    for kind, count in cases:
        cost = statistics.median(samples[(kind, count)])
        added = (cost - base) / count if count else 0.0
        label = "none" if count == 0 else f"{count} {kind}"
        print(f"{label:<12}{cost:>10.2f}{cost / base:>7.2f}x{added:>17.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=20000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", action="store_true", help="one JSON line (benchmarks/ab.py)")
    args = parser.parse_args()
    asyncio.run(main(args.events, args.repeats, args.json))
