"""A Redis outage in worker mode: three workers, 12 simulator accounts, Redis down for 7 s.

    python benchmarks/bench_outage.py [--down 7] [--mode hang|kept|empty|failover] [--json]
    python benchmarks/ab.py main benchmarks/bench_outage.py --rounds 1   # before, after

Redis (a redis-server started here on a free loopback port) is stopped once the workers
share the accounts 4/4/4 and comes back ``--down`` seconds later: ``hang`` (the default)
stops the server with SIGSTOP and resumes it with SIGCONT (a network partition: calls hang,
then everything is as it was, except that the leases' TTLs ran on); ``kept`` stops and
restarts it with what it held (``SAVE`` just before); ``empty`` restarts it with the
registry alone (every heartbeat, lease and fence lost, as after a restart from an old
snapshot); ``failover`` runs a primary, a replica and three sentinels (``RedisSentinels``),
the workers on the ``redis+sentinel://`` URL, and SIGKILLs the primary (``--down`` is
ignored: the outage lasts as long as the promotion). Then it watches
for 12 s (the planner's grace is two ticks) and counts:

* ``changed_hands``: accounts whose lease, at any reading after the outage, names another
  worker than before it;
* ``written_twice``: entries written to the event stream after the outage began whose
  idempotency id had been written already (handover overlaps: deduplicated by consumers,
  but work and noise);
* ``max_overlap``: the most accounts streamed by two connections at once;
* ``max_dark``: the longest any account had no live connection (seconds, sampled every
  20 ms).
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
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import redis.asyncio as redis

from bitmusa_plugin._scale import connect, registry
from bitmusa_plugin.simulator import Simulator
from bitmusa_plugin.testing import RedisSentinels, RedisServer

N = 12


def _worker(url: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "bitmusa_plugin", "worker", "--redis", url],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def _holders(client: Any) -> dict[str, str | None]:
    raw = await client.mget([f"bitmusa:default:lease:acct{i}" for i in range(N)])
    return {f"acct{i}": h.decode().rsplit(":", 1)[0] if h else None for i, h in enumerate(raw)}


def _sid(raw: bytes) -> tuple[int, int]:
    ms, seq = raw.split(b"-")
    return int(ms), int(seq)


async def measure(down: float, mode: str) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        group: RedisSentinels | None = None
        if mode == "failover":
            group = RedisSentinels(Path(tmp)).start()
            server = group.servers[0]
            url = group.url
        else:
            server = RedisServer(Path(tmp)).start()
            url = server.url
        client: Any = connect.client(url)  # untyped replies, as in the tests
        creds = {f"bench-api-{i:04d}": f"bench-auth-{i:04d}" for i in range(N)}
        env = dict(os.environ)
        workers: list[subprocess.Popen[bytes]] = []
        try:
            async with Simulator(event_interval=0.2, accounts=creds) as sim:
                for i, (api, auth) in enumerate(creds.items()):
                    env[f"ACCT{i}_API"], env[f"ACCT{i}_AUTH"] = api, auth
                    record = registry.AccountRecord(
                        f"acct{i}", f"ACCT{i}_API", f"ACCT{i}_AUTH", None, sim.rest_url, sim.ws_url
                    )
                    await registry.add(client, "default", record)
                if mode == "empty":
                    await client.save()  # what Redis comes back with: the registry alone
                accounts = list(sim.accounts.values())
                workers = [_worker(url, env) for _ in range(3)]
                deadline = time.monotonic() + 90
                while True:
                    held = Counter((await _holders(client)).values())
                    live = all(len(sim.live(a)) == 1 for a in accounts)
                    if live and None not in held and sorted(held.values()) == [4, 4, 4]:
                        break
                    if time.monotonic() > deadline:
                        raise SystemExit("the workers never shared the accounts 4/4/4")
                    await asyncio.sleep(0.2)
                before = await _holders(client)
                if mode == "kept":
                    await client.save()
                last = await client.xrevrange("bitmusa:events", count=1)
                mark = _sid(last[0][0]) if last else (0, 0)
                seen_before = {f[b"id"] for _, f in await client.xrange("bitmusa:events")}
                overlaps = [0]
                dark_since: dict[int, float] = {}
                dark = [0.0]

                async def watch() -> None:
                    while True:
                        overlaps.append(sum(1 for a in accounts if len(sim.live(a)) > 1))
                        now = time.monotonic()
                        for i, account in enumerate(accounts):
                            if sim.live(account):
                                dark_since.pop(i, None)
                            else:
                                dark[0] = max(dark[0], now - dark_since.setdefault(i, now))
                        await asyncio.sleep(0.02)

                watcher = asyncio.get_running_loop().create_task(watch())
                if mode == "failover":
                    assert server.proc is not None
                    server.proc.send_signal(signal.SIGKILL)
                    server.proc.wait(5)
                    server.proc = None
                elif mode == "hang":
                    assert server.proc is not None
                    server.proc.send_signal(signal.SIGSTOP)
                    await asyncio.sleep(down)
                    server.proc.send_signal(signal.SIGCONT)
                else:
                    await asyncio.to_thread(server.stop)
                    await asyncio.sleep(down)
                    await asyncio.to_thread(server.start)
                changed: set[str] = set()
                until = time.monotonic() + 12.0
                while time.monotonic() < until:
                    try:
                        now = await _holders(client)
                    except (OSError, redis.RedisError):  # our own client reconnecting
                        await asyncio.sleep(0.05)
                        continue
                    changed |= {a for a, w in now.items() if w is not None and w != before[a]}
                    await asyncio.sleep(0.05)
                watcher.cancel()
                held_after = sum(1 for w in (await _holders(client)).values() if w is not None)
                max_dark = dark[0]
                sim.paused = True
                await asyncio.sleep(2.0)  # the sinks write what they still hold
                seen = set() if mode == "empty" else set(seen_before)
                written = twice = 0
                for sid, fields in await client.xrange("bitmusa:events"):
                    if _sid(sid) > mark or mode == "empty":
                        written += 1
                        twice += fields[b"id"] in seen
                    seen.add(fields[b"id"])
        finally:
            for proc in workers:
                proc.terminate()
            for proc in workers:
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
            await client.aclose()
            if group is not None:
                group.stop()
            else:
                server.stop()
    return {
        "changed_hands": float(len(changed)),
        "written_twice": float(twice),
        "written": float(written),
        "max_overlap": float(max(overlaps)),
        "max_dark": max_dark,
        "held_after": float(held_after),  # sanity: every account owned again
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--down", type=float, default=7.0, help="seconds Redis is down")
    parser.add_argument("--mode", choices=("hang", "kept", "empty", "failover"), default="hang")
    parser.add_argument("--json", action="store_true", help="one JSON line (for ab.py)")
    args = parser.parse_args()
    if not RedisServer.available():
        raise SystemExit("redis-server not found (Debian: apt-get install redis-server)")
    result = asyncio.run(measure(args.down, args.mode))
    if args.json:
        print(orjson.dumps(result).decode())
    else:
        print(
            f"Redis down {args.down:g} s ({args.mode}): {result['changed_hands']:.0f} of {N} "
            f"accounts changed hands, {result['written_twice']:.0f} of "
            f"{result['written']:.0f} entries written twice, at most "
            f"{result['max_overlap']:.0f} accounts on two connections, the longest dark "
            f"spell {result['max_dark']:.2f} s; "
            f"{result['held_after']:.0f} held after"
        )


if __name__ == "__main__":
    main()
