"""The simulator in its own process, for benchmarks: the engine under test keeps the CPU of
its own process, as it would against a real exchange.

    python benchmarks/_sim_server.py --accounts N [--time-scale X]

Prints ``REST <url>`` and ``WS <url>``, then reads commands from stdin, one per line, and
answers each with one JSON line:

* ``burst <account> <count> <interval>``: send ``count`` order frames to the account's
  connections, one every ``interval`` seconds (0: as fast as it can), each stamped with
  ``data.sentNs`` (``time.monotonic_ns()``, one clock for every process of the machine);
  answers when all are written.
* ``mixed <account> <count> <objects>``: ``count`` frames as fast as it can, states of
  ``objects`` orders, 10 positions and the balance (:func:`mixed_frame`); answers when all
  are written.
* ``dropall``: reset every connection of every account at once.
* ``stats``: per account, the simulated times of its PUTs; connections, REST calls.
* ``quit``.

Accounts are ``bench-api-<i>`` / ``bench-auth-<i>``.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Callable
from typing import Any

import orjson

from bitmusa_plugin.simulator import Simulator


def api_key(i: int) -> str:
    return f"bench-api-{i:05d}"


def auth_key(i: int) -> str:
    return f"bench-auth-{i:05d}"


async def burst(sim: Simulator, account: str, count: int, interval: float) -> dict[str, Any]:
    target = sim.accounts[account]
    data = {
        "orderId": "B1",
        "ticker": "BTCUSDT",
        "direction": "OPEN",
        "position": "BUY",
        "type": "LIMIT",
        "tif": "GTC",
        "price": "96500.5",
        "amount": "0.01",
        "tradedAmount": "0",
        "value": "0",
        "status": "TRADING",
        "createdTime": 1700703548846,
        "canceledTime": None,
        "completedTime": None,
    }
    live = [c for c in sim.live(target) if not c.stalled]
    start = time.monotonic()
    for n in range(count):
        if interval:
            delay = start + n * interval - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
        data["orderId"] = f"B{n}"
        data["sentNs"] = time.monotonic_ns()
        text = orjson.dumps({"data": data, "stream": "future_order", "eventTime": 1700703548846})
        for conn in live:
            await conn.ws.send_str(text.decode())
    return {"sent": count, "seconds": time.monotonic() - start, "connections": len(live)}


def mixed_frame(n: int, objects: int) -> dict[str, Any]:
    """Frame ``n`` of a ``mixed`` burst: states of ``objects`` orders, 10 positions and the
    balance, each a newer state of its object (``eventTime`` = 1,700,000,000,000 + n)."""
    t = 1_700_000_000_000 + n
    if n % 10 == 0:
        data: dict[str, Any] = {"asset": "USDT", "free": str(n), "locked": "0"}
        return {"data": data, "stream": "future_wallet", "eventTime": t}
    if n % 10 == 1:
        data = {"ticker": f"T{n % 10}USDT", "position": "BUY", "status": "OPEN"}
        data |= {"amount": str(n), "price": "1", "leverage": "10"}
        return {"data": data, "stream": "future_position", "eventTime": t}
    data = {"orderId": f"M{n % objects}", "ticker": "BTCUSDT", "status": "TRADING"}
    data |= {"position": "BUY", "type": "LIMIT", "price": "96500.5", "amount": str(n + 1)}
    data |= {"tradedAmount": "0", "value": "0", "createdTime": t}
    return {"data": data, "stream": "future_order", "eventTime": t}


def mixed_truth(count: int, objects: int) -> dict[str, int]:
    """The final state (its eventTime) of every object of a ``mixed`` burst."""
    final: dict[str, int] = {}
    for n in range(count):
        frame = mixed_frame(n, objects)
        data = frame["data"]
        if frame["stream"] == "future_order":
            final[f"order:{data['orderId']}"] = frame["eventTime"]
        elif frame["stream"] == "future_position":
            final[f"position:{data['ticker'][:-4]}/USDT:USDT"] = frame["eventTime"]
        else:
            final["balance"] = frame["eventTime"]
    return final


async def mixed(sim: Simulator, account: str, count: int, objects: int) -> dict[str, Any]:
    target = sim.accounts[account]
    live = [c for c in sim.live(target) if not c.stalled]
    start = time.monotonic()
    for n in range(count):
        text = orjson.dumps(mixed_frame(n, objects)).decode()
        for conn in live:
            await conn.ws.send_str(text)
    return {"sent": count, "seconds": time.monotonic() - start, "connections": len(live)}


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--accounts", type=int, default=1)
    parser.add_argument("--time-scale", type=float, default=1.0)
    args = parser.parse_args()
    accounts = {api_key(i): auth_key(i) for i in range(args.accounts)}
    sim = Simulator(time_scale=args.time_scale, event_interval=None, accounts=accounts)
    await sim.start()
    print(f"REST {sim.rest_url}\nWS {sim.ws_url}", flush=True)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := (await reader.readline()).decode().split():
        command, *rest = line
        if command == "burst":
            answer = await burst(sim, rest[0], int(rest[1]), float(rest[2]))
        elif command == "mixed":
            answer = await mixed(sim, rest[0], int(rest[1]), int(rest[2]))
        elif command == "stats":
            answer = {
                "puts": {a.api_key: a.puts for a in sim.accounts.values()},
                "connections": sum(len(sim.live(a)) for a in sim.accounts.values()),
                "rest_calls": len(sim.rest_calls),
                "rest_errors": sum(1 for _, code in sim.rest_calls if code != 0),
            }
        elif command == "dropall":  # every connection reset at once: a mass reconnect
            answer = {"dropped": sum(sim.drop(a) for a in sim.accounts.values())}
        elif command == "quit":
            break
        else:
            answer = {"error": f"unknown command {command!r}"}
        print(orjson.dumps(answer).decode(), flush=True)
    await sim.stop()


async def until(predicate: Callable[[], bool], timeout: float = 300.0) -> None:
    """Poll ``predicate`` (counters summed over many streams have no event to wait on)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("not reached in time")
        await asyncio.sleep(0.02)


class SimProcess:
    """The client side: start the server process, send it commands."""

    def __init__(self, accounts: int = 1, time_scale: float = 1.0) -> None:
        self.accounts = accounts
        self.time_scale = time_scale
        self.rest_url = ""
        self.ws_url = ""
        self._proc: asyncio.subprocess.Process | None = None

    async def __aenter__(self) -> SimProcess:
        self._proc = await asyncio.create_subprocess_exec(
            sys.executable,
            __file__,
            "--accounts",
            str(self.accounts),
            "--time-scale",
            str(self.time_scale),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )
        assert self._proc.stdout is not None
        self.rest_url = (await self._proc.stdout.readline()).decode().split()[1]
        self.ws_url = (await self._proc.stdout.readline()).decode().split()[1]
        return self

    async def command(self, *words: object) -> dict[str, Any]:
        assert self._proc is not None
        assert self._proc.stdin is not None
        assert self._proc.stdout is not None
        self._proc.stdin.write((" ".join(map(str, words)) + "\n").encode())
        await self._proc.stdin.drain()
        answer: dict[str, Any] = orjson.loads(await self._proc.stdout.readline())
        return answer

    async def __aexit__(self, *exc: object) -> None:
        if self._proc is not None:
            if self._proc.stdin is not None:
                self._proc.stdin.close()
            try:
                await asyncio.wait_for(self._proc.wait(), 5)
            except asyncio.TimeoutError:
                self._proc.kill()
                await self._proc.wait()


if __name__ == "__main__":
    asyncio.run(main())
