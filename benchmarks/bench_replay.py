"""The order path with fills, whole process: ``replay FILE --output none`` against ccxt.pro.

    python benchmarks/bench_replay.py [--frames 60000] [--repeats 5] [--json]
        [--compiled build/compiled]

Ours: a fresh ``python -m bitmusa_plugin replay FILE --output none`` over ``--frames``
Bitmusa order frames, half of them fills (per order: new, a partial fill, a second partial
fill, then cancelled, so every path of the fills step runs: nothing new, a fill, a fill
beyond an earlier one, the final frame). Baseline: a fresh process that imports ccxt.pro,
sets binanceusdm's markets by hand, reads the equivalent Binance ``ORDER_TRADE_UPDATE``
frames with orjson and calls ``handle_message`` on each (ccxt.pro parses a ``TRADE``
execution into a trade as well, as ours does).

Both sides leave their start-up out the same way: each is run once over the frames and once
over an empty file, and the difference, divided by the frames, is its cost a frame. Times
are the CPU time of each process (user + system), not its wall time: on a shared machine the
wall time also counts the waits for a core. The two
sides and the two lengths run interleaved, ``--repeats`` times; medians. The ratio
ccxt / ours is the figure (ours is faster when it is above 1).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path

import orjson

HERE = Path(__file__).resolve().parent
START = 1_700_703_548_846

CCXT_CHILD = r"""
import asyncio, sys
import orjson
sys.path.insert(0, sys.argv[2])
from _ccxt_baseline import make_exchange

async def main():
    exchange, client = make_exchange()
    handle = exchange.handle_message
    with open(sys.argv[1], "rb") as f:
        for line in f:
            handle(client, orjson.loads(line))
    await exchange.close()

asyncio.run(main())
"""


def orders(n: int) -> list[tuple[str, str, str, str, str, str, str]]:
    """Per frame: (status, price, amount, cumulative filled, its value, last filled, its
    value), seeded: prices, sizes and fills vary from order to order, as in a real account,
    so that no cache of ours meets only one number."""
    rng = random.Random(21)
    out = []
    for _ in range(0, n, 4):
        price = Decimal(rng.randrange(4000, 7000)) / 10000
        amount = Decimal(rng.choice((1, 2, 5, 10, 25, 40, 100, 250)))
        first = (amount * Decimal(rng.randrange(10, 55)) / 100).quantize(Decimal("0.1"))
        second = (amount * Decimal(rng.randrange(60, 95)) / 100).quantize(Decimal("0.1"))
        steps = (("TRADING", Decimal(0)), ("PARTIAL", first), ("PARTIAL", second))
        before = Decimal(0)
        for status, filled in (*steps, ("CANCELLED", second)):
            last = filled - before if status == "PARTIAL" else Decimal(0)
            out.append(
                (
                    status,
                    str(price),
                    str(amount),
                    str(filled),
                    str(filled * price),
                    str(last),
                    str(last * price),
                )
            )
            before = filled
    return out[:n]


def bitmusa_frames(n: int) -> list[bytes]:
    """``n`` order frames: per order new, a fill, a second fill, cancelled."""
    out = []
    for i, (status, price, amount, filled, value, _, _) in enumerate(orders(n)):
        order = i // 4
        data = {
            "orderId": f"C{171558199502193 + order}",
            "ticker": "XRPUSDT",
            "direction": "OPEN",
            "position": "BUY",
            "type": "LIMIT",
            "tif": "GTC",
            "price": price,
            "amount": amount,
            "tradedAmount": filled,
            "value": value,
            "status": status,
            "createdTime": START + order * 4,
            "canceledTime": START + i if status == "CANCELLED" else None,
            "completedTime": None,
        }
        frame = {"data": data, "stream": "future_order", "eventTime": START + i}
        out.append(memoryview(orjson.dumps(frame)).tobytes())  # orjson's own is 4 KiB
    return out


def binance_frames(n: int, *, trades: bool = True) -> list[bytes]:
    """The equivalent ``ORDER_TRADE_UPDATE`` frames (same orders, fills and times); with
    ``trades`` False every execution reads ``NEW``, so ccxt.pro builds no trade (its order
    path alone: the stricter baseline, which does less than ours)."""
    executions = {
        "TRADING": ("NEW", "NEW"),
        "PARTIAL": ("TRADE", "PARTIALLY_FILLED"),
        "CANCELLED": ("CANCELED", "CANCELED"),
    }
    out = []
    for i, (status, price, amount, filled, value, last, _) in enumerate(orders(n)):
        order = i // 4
        x, state = executions[status]
        if not trades:
            x = "NEW"
        average = str(Decimal(value) / Decimal(filled)) if Decimal(filled) else "0"
        o = {
            "s": "BTCUSDT",
            "c": f"C{171558199502193 + order}",
            "S": "BUY",
            "o": "LIMIT",
            "f": "GTC",
            "q": amount,
            "p": price,
            "ap": average,
            "sp": "0",
            "x": x,
            "X": state,
            "i": 8886774 + order,
            "l": last,
            "z": filled,
            "L": price if x == "TRADE" else "0",
            "N": "USDT",
            "n": "0",
            "T": START + i,
            "t": 1000 + i if x == "TRADE" else 0,
            "b": "0",
            "a": "0",
            "m": True,
            "R": False,
            "wt": "CONTRACT_PRICE",
            "ot": "LIMIT",
            "ps": "BOTH",
            "cp": False,
            "rp": "0",
            "pP": False,
            "si": 0,
            "ss": 0,
            "V": "NONE",
            "pm": "NONE",
            "gtd": 0,
        }
        message = {"e": "ORDER_TRADE_UPDATE", "E": START + i, "T": START + i, "o": o}
        out.append(memoryview(orjson.dumps(message)).tobytes())
    return out


def timed(argv: list[str], env: dict[str, str]) -> float:
    """The CPU seconds (user + system) the process took: on a shared machine its wall time
    also counts the time it waited for a core, which moved by 2x between runs."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(argv, check=True, env=env, stdout=subprocess.DEVNULL)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main(frames: int, repeats: int, as_json: bool, compiled: Path | None) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BITMUSA_")}
    env["BITMUSA_LOAD_PLUGINS"] = ""  # only the built-in output: nothing installed joins
    # the compiled side: the same command with `make compiled`'s tree first on the path;
    # PYTHONSAFEPATH keeps `python -m` from taking the source tree from the working directory
    compiled_env = dict(env, PYTHONSAFEPATH="1")
    if compiled is not None:
        compiled_env["PYTHONPATH"] = os.pathsep.join(
            [str(compiled.resolve()), *filter(None, [env.get("PYTHONPATH")])]
        )
        flavour = subprocess.run(
            [sys.executable, "-m", "bitmusa_plugin", "--version"],
            env=compiled_env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        if "compiled core" not in flavour:
            raise SystemExit(f"bench_replay: {compiled} holds no compiled core: run make compiled")
    with tempfile.TemporaryDirectory(prefix="bitmusa-replay-") as tmp:
        files = {}
        ours_frames = bitmusa_frames(frames)
        made = {
            "ours": ours_frames,
            **({"ours compiled": ours_frames} if compiled is not None else {}),
            "ccxt": binance_frames(frames),
            "ccxt orders only": binance_frames(frames, trades=False),
        }
        for name, lines in made.items():
            files[name] = Path(tmp) / f"{name.replace(' ', '-')}.jsonl"
            files[name].write_bytes(b"\n".join(lines) + b"\n")
        empty = Path(tmp) / "empty.jsonl"
        empty.write_bytes(b"")
        py = sys.executable
        ours = [py, "-m", "bitmusa_plugin", "replay", "{}", "--output", "none"]
        theirs = [py, "-c", CCXT_CHILD, "{}", str(HERE)]
        commands = {"ours": ours, "ccxt": theirs, "ccxt orders only": theirs}
        if compiled is not None:
            commands = {"ours": ours, "ours compiled": ours, **commands}
        samples: dict[str, list[float]] = {}
        for _ in range(repeats):
            for side, command in commands.items():
                side_env = compiled_env if side == "ours compiled" else env
                full = timed([str(files[side]) if a == "{}" else a for a in command], side_env)
                bare = timed([str(empty) if a == "{}" else a for a in command], side_env)
                samples.setdefault(f"{side} whole s", []).append(full)
                samples.setdefault(f"{side} start-up s", []).append(bare)
                samples.setdefault(f"{side} µs a frame", []).append((full - bare) / frames * 1e6)
    result = {key: statistics.median(values) for key, values in samples.items()}
    for side in ("ccxt", "ccxt orders only"):
        result[f"{side} / ours"] = result[f"{side} µs a frame"] / result["ours µs a frame"]
        if compiled is not None:
            result[f"{side} / ours compiled"] = (
                result[f"{side} µs a frame"] / result["ours compiled µs a frame"]
            )
    if as_json:  # for benchmarks/ab.py
        print(json.dumps(result))
        return
    print(
        f"bench_replay: {frames:,} order frames (half fills), {repeats} interleaved runs, "
        f"medians; Python {sys.version.split()[0]}, {os.cpu_count()} CPUs, "
        f"{time.strftime('%Y-%m-%d')}"
    )
    print()
    print("| side | whole process, CPU s | start-up, CPU s | µs a frame | it / ours | target |")
    print("|---|---|---|---|---|---|")
    for side in commands:
        ratio = f"**{result[f'{side} / ours']:.1f}×**" if side.startswith("ccxt") else ""
        if ratio and compiled is not None:
            ratio += f" (compiled: **{result[f'{side} / ours compiled']:.1f}×**)"
        print(
            f"| {side} | {result[f'{side} whole s']:.2f} | {result[f'{side} start-up s']:.2f} "
            f"| {result[f'{side} µs a frame']:.1f} | {ratio} | {'≥ 10×' if ratio else ''} |"
        )
    print()
    print(
        "ccxt: every fill is a TRADE execution, which ccxt.pro parses into a trade besides "
        "the order, as ours does (on_trade); ccxt orders only: the same frames with every "
        "execution NEW, so ccxt.pro builds the orders alone (less work than ours)."
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=60000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", action="store_true", help="one JSON line (benchmarks/ab.py)")
    parser.add_argument(
        "--compiled",
        type=Path,
        metavar="DIR",
        help="also time ours with the compiled core in DIR (make compiled: build/compiled)",
    )
    args = parser.parse_args()
    main(args.frames, args.repeats, args.json, args.compiled)
