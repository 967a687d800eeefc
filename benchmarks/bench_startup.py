"""Start-up: ``bitmusa-plugin --help`` and the time to the first delivered event of ``demo``,
against ``python -c pass`` and ``python -c "import ccxt"``, in fresh processes.

    python benchmarks/bench_startup.py [--runs 11]

Medians over the runs, all measured in the same run of this script.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

BIN = Path(sys.executable).parent
EVENT_HOOKS = (b'"hook":"on_wallet"', b'"hook":"on_order"', b'"hook":"on_position"')


def timed(argv: list[str], runs: int) -> float:
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        samples.append((time.perf_counter() - start) * 1000)
    return statistics.median(samples)


def first_event_ms(runs: int) -> float:
    """Spawn ``demo --output jsonl`` and wait for the first on_wallet/on_order/on_position
    line: start-up, the simulator, the listenKey, the handshake, the resync, the event."""
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        proc = subprocess.Popen(
            [str(BIN / "bitmusa-plugin"), "demo", "--output", "jsonl"],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        assert proc.stdout is not None
        for line in proc.stdout:
            if any(hook in line for hook in EVENT_HOOKS):
                samples.append((time.perf_counter() - start) * 1000)
                break
        proc.terminate()
        proc.wait()
    return statistics.median(samples)


def main(runs: int) -> None:
    py = sys.executable
    bare = timed([py, "-c", "pass"], runs)
    helped = timed([str(BIN / "bitmusa-plugin"), "--help"], runs)
    ccxt = timed([py, "-c", "import ccxt"], runs)
    event = first_event_ms(max(3, runs // 3))
    print(
        f"bench_startup: median of {runs} fresh processes, Python {sys.version.split()[0]}, "
        f"{os.cpu_count()} CPUs, {time.strftime('%Y-%m-%d')}"
    )
    print()
    print("| command | ms | vs `python -c pass` | target |")
    print("|---|---|---|---|")
    print(f"| `python -c pass` | {bare:.0f} | 1.00× (+0 ms) | |")
    print(
        f"| `bitmusa-plugin --help` | {helped:.0f} | {helped / bare:.2f}× (+{helped - bare:.0f} "
        f"ms) | within +150 ms |"
    )
    print(
        f'| `python -c "import ccxt"` | {ccxt:.0f} | {ccxt / bare:.2f}× (+{ccxt - bare:.0f} ms) | |'
    )
    print(
        f"| `demo`: first event delivered | {event:.0f} | {event / bare:.2f}× "
        f"(+{event - bare:.0f} ms) | |"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=11)
    main(parser.parse_args().runs)
