"""Every fill exactly once through a worker handover (issue 19 §3, last bullet): the random
sequences of tests/test_fills_property.py (its rules, reused: orders of another client of
the account, partial fills, cancels, position flips, gaps with REST faults, repeated
frames), but the account is streamed by two worker processes (the project's
``run_worker``: leases, the Redis sink) on a real ``redis-server``, and the trades are
the ones the public ``consume()`` yields from the Redis stream. The ``handover`` rule
stops (SIGTERM: make-before-break) or kills (SIGKILL: the lease lapses, the other worker
resumes with a gap from the last event written) whichever worker holds the lease, then
starts a new standby; every example hands over at least once (at its end if no step did).

At the end both workers stop cleanly (their sinks written out) and ``consume()`` has read
the whole stream; then, as in test_fills_property: per order the amount and cost sums
equal the engine's fills exactly, no trade id twice, every side known or its absence
reported, every estimate flagged and reported.

Profiles as test_fills_property's: ``BITMUSA_FILLS_PROFILE=short`` (``make test``,
derandomized) or ``long`` (``make soak``). A failure prints the blob and the shrunk
steps, and the tail of each worker's log."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from decimal import Decimal as D
from pathlib import Path
from typing import IO, Any

import httpx
import orjson
import pytest
from hypothesis import HealthCheck, note, settings
from hypothesis import strategies as st
from hypothesis.stateful import initialize, rule
from test_fills_property import HEADERS, PROFILE, QUIESCENCE, TIMING, Fills

from bitmusa_plugin import consume
from bitmusa_plugin._engine.sides import SIDE_WAIT
from bitmusa_plugin._engine.stream import GAP_HISTORY_MARGIN_MS, Heartbeat
from bitmusa_plugin._scale import registry
from bitmusa_plugin._scale.sink import DEFAULT_STREAM
from bitmusa_plugin.simulator import DEMO_API_KEY, DEMO_AUTH_KEY
from bitmusa_plugin.testing import RedisServer

pytestmark = pytest.mark.skipif(
    not RedisServer.available(),
    reason="redis-server not found: `apt-get install redis-server` (Debian/Ubuntu) or "
    "`brew install redis`; `make test` installs it when run as root",
)

TESTS = Path(__file__).parent
LABEL = "a"
LEASE_TTL = 3.0  # short, so that a SIGKILL's takeover (a TTL and a tick) fits the budget
TICK = 0.3
GROUP = registry.DEFAULT_GROUP
STREAM = DEFAULT_STREAM


def _key(*parts: str) -> str:
    return registry.key(GROUP, *parts)


def worker_main() -> None:
    """One worker process: ``run_worker`` with the Redis sink, as ``bitmusa-plugin worker``
    runs it, with the property test's timing and the sides looked up (the orders are
    another client's). It ends itself at once when its stdin closes (the test died: no
    worker outlives it)."""
    import logging

    from bitmusa_plugin._engine.session import Session
    from bitmusa_plugin._scale.sink import RedisSink
    from bitmusa_plugin._scale.worker import WorkerOptions, run_worker

    config = json.loads(sys.argv[1])
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    async def main() -> None:
        # the test never writes to our stdin: readable means closed (the test is gone)
        asyncio.get_running_loop().add_reader(sys.stdin.fileno(), os._exit, 3)
        sink = RedisSink(config["redis"], maxlen=None)
        session = Session(
            {"redis-sink": sink},
            command="worker",
            keep_listen_key=True,
            timing=TIMING,
            heartbeat=Heartbeat(2.0, 10.0),
            side_wait=SIDE_WAIT,
            rest_timeout=2.0,  # a GET that is never answered (a fault) costs 2 s, not 10
        )
        options = WorkerOptions(lease_ttl=LEASE_TTL, tick=TICK, rest_url=config["rest"])
        try:
            await run_worker(config["redis"], session, options, ident=config["id"], sink=sink)
        finally:
            await sink.close()

    asyncio.run(main())


def _brief(record: dict[str, Any]) -> str:
    """A written record in a line, for a failure's report."""
    obj = record.get(record["hook"][3:]) or record.get("order") or {}
    keys = ("id", "status", "filled", "amount", "side", "kind", "message")
    return f"{record['hook']} fence {record.get('fence')}: " + str(
        {k: obj[k] for k in keys if obj.get(k) is not None}
    )


async def _bounded(step: Any, what: str) -> None:
    """A step of the cleanup that must not hold it up: bounded, and said if it was not
    done in time (the cleanup goes on)."""
    try:
        await asyncio.wait_for(step, 10)
    except Exception as exc:  # the cleanup goes on: said, not raised
        print(f"cleanup: {what} failed: {type(exc).__name__}: {exc}")


def _exited(proc: subprocess.Popen[bytes]) -> Any:
    async def check() -> bool:
        return proc.poll() is not None

    return check


class Handover(Fills):
    """Fills, with the session replaced by two workers and what ``consume()`` yields fed to
    the recorder (``self.seen``) the invariants read."""

    def __init__(self) -> None:
        self.workers: dict[str, subprocess.Popen[bytes]] = {}
        self.logs: dict[str, IO[bytes]] = {}
        self.handovers = 0
        self.stopped = False
        self.resynced = False  # the first stream's start-up snapshot was read
        self.written: list[dict[str, Any]] = []
        self.consumer: asyncio.Task[None] | None = None
        self.redis: Any = None
        self.server: RedisServer | None = None
        self.dir = Path(tempfile.mkdtemp(prefix="bitmusa-handover-"))
        super().__init__()

    async def _open(self) -> None:
        import redis.asyncio as redis

        try:
            self.server = RedisServer(self.dir).start()
            self.redis = redis.Redis.from_url(self.server.url)
            await self.sim.start()
            await self.sim.set_price("BTCUSDT", "1000")
            self.client = httpx.AsyncClient(base_url=self.sim.rest_url, headers=HEADERS, timeout=5)
            record = registry.AccountRecord(
                LABEL, "HANDOVER_API", "HANDOVER_AUTH", None, self.sim.rest_url, self.sim.ws_url
            )
            await registry.add(self.redis, GROUP, record)
            self.consumer = self.loop.create_task(self._consume())
            for _ in range(2):
                self._spawn()
            # not just "connected": what fills before the start-up snapshot is read is
            # history, not news; its deliveries come after it was read
            await self._until(lambda: self.resynced, "the first stream's snapshot")
        except BaseException:
            await self._close()
            shutil.rmtree(self.dir, ignore_errors=True)  # no teardown follows
            raise

    def _spawn(self) -> None:
        ident = f"w{len(self.workers) + 1}"
        assert self.server is not None
        config = {"redis": self.server.url, "rest": self.sim.rest_url, "id": ident}
        path = os.pathsep.join([str(TESTS), *filter(None, [os.environ.get("PYTHONPATH")])])
        env = dict(
            os.environ,
            PYTHONPATH=path,
            HANDOVER_API=DEMO_API_KEY,
            HANDOVER_AUTH=DEMO_AUTH_KEY,
            BITMUSA_LOAD_PLUGINS="",
        )
        self.logs[ident] = (self.dir / f"{ident}.log").open("wb")
        code = "import test_fills_handover as t; t.worker_main()"
        self.workers[ident] = subprocess.Popen(
            [sys.executable, "-c", code, json.dumps(config)],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=self.logs[ident],
        )

    async def _consume(self) -> None:
        """The trades, orders, states and errors, as a consumer group reads them."""
        assert self.server is not None
        async for item in consume(self.server.url, "fills", block_ms=100, claim_after=60):
            self.resynced |= (item.event or {}).get("stream") == "resync"
            hook = getattr(self.seen, item.hook, None)
            if hook is not None:
                hook(item.obj)

    @initialize(
        side=st.sampled_from([0, 1]),
        offset=st.integers(-10, 10),
        volume=st.sampled_from(["0.002", "0.03"]),
    )
    def start(self, side: int, offset: int, volume: str) -> None:
        """An order resting, partly filled: every example has a fill in flight to hand
        over (hypothesis's first examples have few steps, or none)."""
        self.limit(side, "0.05", offset, post_only=False)
        self.trade_at(1000 + offset, volume)

    # -- the handover ---------------------------------------------------------------------

    async def _holder(self) -> str | None:
        holder = await self.redis.get(_key("lease", LABEL))
        return None if holder is None else str(holder.decode().rsplit(":", 1)[0])

    async def _wait(self, check: Any, what: str) -> None:
        deadline = time.monotonic() + QUIESCENCE
        while not await check():
            if time.monotonic() > deadline:
                raise AssertionError(f"{what} not reached in {QUIESCENCE:.0f} s: {self._diff()}")
            await asyncio.sleep(0.05)

    @rule(kill=st.booleans())
    def handover(self, kill: bool) -> None:
        """The worker that streams the account stops (SIGTERM) or dies (SIGKILL); the
        other takes the account over, and a new standby starts."""
        self.run(self._handover(kill))

    async def _handover(self, kill: bool) -> None:
        await self._wait(self._holder, "a lease holder")
        owner = await self._holder()
        assert owner is not None
        standby = next(w for w, p in self.workers.items() if w != owner and p.poll() is None)

        async def standby_alive() -> bool:  # its heartbeat: the other can take over
            return await self.redis.zscore(_key("workers"), standby) is not None

        await self._wait(standby_alive, f"{standby}'s heartbeat")
        proc = self.workers[owner]
        proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)

        async def taken_over() -> bool:
            raw = await self.redis.hget(_key("state"), LABEL)
            state = {} if raw is None else json.loads(raw)
            # what ``worker status`` shows: the standby's stream delivers ("gap" after a
            # takeover without a handover marker)
            delivers = state.get("status") in ("connected", "gap")
            streams = state.get("worker") == standby and delivers
            return proc.poll() is not None and streams and await self._holder() == standby

        await self._wait(taken_over, f"{standby} streaming after {owner}'s end")
        self.handovers += 1
        self._spawn()  # the next standby

    # -- quiescence -----------------------------------------------------------------------

    async def settle(self) -> None:
        """Quiescence: every order's consumed sums equal the engine's (with a stream
        connected, while the workers run). Beyond the engine's is final (the engine's
        fills only grow): said at once, not after the wait."""
        await self._until(self._quiet, "quiescence")

    def _quiet(self) -> bool:
        truth, plugin = self._truth(), self._plugin()
        for order, (amount, _cost) in plugin.items():
            engine = truth.get(order, (D(0), D(0)))
            assert amount <= engine[0], f"more consumed than filled: {self._diff()}"
        return (self.stopped or bool(self.sim.live())) and truth == plugin

    async def _down(self) -> None:
        """The waits on the simulator's side: consumed states of two workers interleave
        (and identical ones are one event to consume())."""
        await self._until(lambda: not self.sim.live(), "the disconnection")

    async def _back(self, connected: int) -> None:
        await self._until(lambda: bool(self.sim.live()), "the reconnection")

    async def _stop_all(self) -> None:
        """Both workers stop cleanly (the standby first: the owner then has nobody to hand
        over to and lets the account go, its sink written out); then the consumer has read
        and acknowledged the whole stream. Nothing is in flight after that."""
        owner = await self._holder()
        for ident in sorted(self.workers, key=lambda w: w == owner):  # the owner last
            proc = self.workers[ident]
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                await self._wait(_exited(proc), f"{ident}'s clean stop")
        self.stopped = True

        async def consumed() -> bool:
            last = (await self.redis.xinfo_stream(STREAM))["last-generated-id"]
            groups = await self.redis.xinfo_groups(STREAM)
            group = next(g for g in groups if g["name"] in (b"fills", "fills"))
            return bool(group["last-delivered-id"] == last and group["pending"] == 0)

        await self._wait(consumed, "the consumer at the stream's end")

    def teardown(self) -> None:
        try:
            try:
                if not self.handovers:
                    kill = len(self.placed) % 2 == 1  # either kind, as the example goes
                    note(f"handover(kill={kill}) at the end: no step handed over")
                    self.run(self._handover(kill))
                self.run(self.settle())
                self.run(self._stop_all())
            except BaseException:
                try:
                    self.run(self._close())
                finally:
                    self.loop.close()
                raise
            super().teardown()  # quiescence once more, the invariants, _close
        except BaseException:
            self._report()
            raise
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)

    def _report(self) -> None:
        """What was written to the stream, and the end of each worker's log."""
        print("-- written to the stream:", *(_brief(r) for r in self.written), sep="\n")
        for ident in self.workers:
            tail = (self.dir / f"{ident}.log").read_text(errors="replace").splitlines()
            print(f"-- {ident}'s log, last lines:", *tail[-25:], sep="\n")

    async def _close(self) -> None:
        """Everything this example started ends, whatever fails on the way."""
        try:
            for proc in self.workers.values():
                if proc.poll() is None:
                    proc.kill()
            for proc in self.workers.values():
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(10)
                if proc.stdin is not None:
                    proc.stdin.close()
            for log in self.logs.values():
                log.close()
            if self.consumer is not None:
                self.consumer.cancel()
                await _bounded(asyncio.wait({self.consumer}), "the consumer's end")
            if self.redis is not None:
                with contextlib.suppress(Exception):  # for the report, if there is one
                    entries = await asyncio.wait_for(self.redis.xrange(STREAM), 10)
                    self.written = [orjson.loads(f[b"json"]) for _, f in entries]
                await _bounded(self.redis.aclose(), "closing our Redis client")
        finally:
            if self.server is not None:
                try:
                    self.server.stop()
                except subprocess.TimeoutExpired:  # slow to exit on a loaded machine
                    assert self.server.proc is not None
                    self.server.proc.kill()
                    self.server.proc.wait(10)
            with contextlib.suppress(AttributeError):
                await _bounded(self.client.aclose(), "closing the REST client")
            await _bounded(self.sim.stop(), "the simulator's stop")


# test_fills_property's profiles, scaled to this test's cost (two worker processes per
# example; a SIGKILL's takeover waits out a lease): its own objects, not registered, so
# that the property test's "short" and "long" stay its own
PROFILES = {
    "short": settings(
        max_examples=5, stateful_step_count=10, deadline=None, derandomize=True,
        print_blob=True, suppress_health_check=[HealthCheck.too_slow],
    ),
    "long": settings(
        max_examples=25, stateful_step_count=25, deadline=None, print_blob=True,
        suppress_health_check=[HealthCheck.too_slow],
    ),
}  # fmt: skip
TestHandover = Handover.TestCase
TestHandover.settings = PROFILES[PROFILE]


async def _gap_in_flight(machine: Handover) -> None:
    """An order of another client's rests (its side learnt), fills five times while the
    stream is down, and the resync's first trade-history GET is never answered: the
    owner's stream delivers, with the gap's fills (older than the history margin a
    takeover's read starts with) not delivered yet."""
    await machine.settle()
    await machine._place(direction=0, position=0, order_type=1, order_price="985",
                         order_qty="0.005")  # fmt: skip
    order = machine.placed[-1]
    await machine._until(lambda: order in machine.seen.orders, "the order's NEW")
    machine.sim.refuse(1000)
    machine.sim.drop()
    await machine._down()
    for _ in range(5):
        await machine.sim.set_price("BTCUSDT", "985", volume="0.001")
    # longer than the margin a takeover's history read takes before its gap's start
    await asyncio.sleep(GAP_HISTORY_MARGIN_MS / 1000 + 1)
    machine.sim.fail_rest("timeout", 1, method="GET", path="/future/trade/history")
    machine.sim.accept()
    await machine._back(0)
    await machine._until(lambda: "gap" in machine.seen.states, "the gap's report")


@pytest.mark.parametrize("kill", [False, True], ids=["stop", "kill"])
def test_a_handover_in_the_middle_of_a_gaps_resync_loses_no_fill(kill: bool) -> None:
    """The race the random sequences found once (a SIGTERM handover while the owner's
    resync was still reading the gap's trade history), made certain: the owner is
    stopped (or killed) with the gap's five fills not delivered. The successor must read
    that gap itself; before, taking the account over on the owner's promise, it started
    without one and the fills never reached ``consume()``."""
    machine = Handover()
    try:
        machine.start(side=0, offset=0, volume="0.002")
        machine.run(_gap_in_flight(machine))
        machine.handover(kill)
    finally:
        machine.teardown()
