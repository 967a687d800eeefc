"""The live stream against the simulator, over real loopback sockets, on scaled time."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import threading
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Any

import orjson
import pytest

from bitmusa_hookspecs import hookimpl
from bitmusa_plugin._core import machine as lc
from bitmusa_plugin._engine.limiter import RateLimiter
from bitmusa_plugin._engine.pipeline import Pipeline
from bitmusa_plugin._engine.plugins import PluginRegistry
from bitmusa_plugin._engine.secrets import Credentials
from bitmusa_plugin._engine.session import DeliveryOptions, Session
from bitmusa_plugin._engine.stream import AccountConfig, AccountStream, Heartbeat
from bitmusa_plugin._outputs import JsonlOutput
from bitmusa_plugin.simulator import DEMO_API_KEY, DEMO_AUTH_KEY, RestFault, Simulator

FAST = lc.Timing(
    keepalive_interval=0.25,
    key_validity=1.0,
    retry_initial=0.05,
    retry_max=0.3,
    stable_after=0.3,
    rotate_after=600.0,
    rotate_jitter=0.0,
    rotate_retry=0.2,
    rotate_overlap=0.2,
)
BEAT = Heartbeat(0.2, 0.4)  # generous: a loaded CI machine must not look like a dead link
#: For tests whose ground truth a reconnect would blur (a resync knows nothing of frames a
#: test writes itself): a starved machine must not take 0.4 s without a pong for a dead link.
STEADY = Heartbeat(2.0, 10.0)


class Recorder:
    """A well-behaved plugin: records every payload and state, in delivery order. Lossless
    (delivery policy ``all``): the tests compare what it got with every frame sent."""

    bitmusa_delivery = "all"

    def __init__(self) -> None:
        self.data: list[str] = []
        self.states: list[dict[str, Any]] = []
        self.errors: list[dict[str, Any]] = []
        self.timeline: list[tuple[str, str]] = []
        self.resynced: list[dict[str, Any]] = []

    def _add(self, event: dict[str, Any]) -> None:
        if event["stream"] == "resync":
            self.resynced.append(event)
            self.timeline.append(("resync", event["stream"]))
            return
        self.data.append(orjson.dumps(event["data"]).decode())
        self.timeline.append(("event", event["stream"]))

    @hookimpl
    async def on_order(self, event: dict[str, Any]) -> None:
        self._add(event)

    @hookimpl
    async def on_wallet(self, event: dict[str, Any]) -> None:
        self._add(event)

    @hookimpl
    async def on_position(self, event: dict[str, Any]) -> None:
        self._add(event)

    @hookimpl
    async def on_stream_state(self, state: dict[str, Any]) -> None:
        self.states.append(state)
        self.timeline.append(("state", state["status"]))

    @hookimpl
    async def on_error(self, error: dict[str, Any]) -> None:
        self.errors.append(error)

    def statuses(self) -> list[str]:
        return [s["status"] for s in self.states]


@dataclass
class Rig:
    """One account streaming through a :class:`Session`, the way every caller does."""

    sim: Simulator
    recorder: Recorder
    session: Session
    stream: AccountStream
    task: asyncio.Task[lc.Finish]
    extra: list[object] = field(default_factory=list)

    @property
    def host(self) -> Pipeline:
        return self.session.pipeline

    async def finish(self) -> lc.Finish:
        """Quiesce, stop, deliver everything queued, close the session (``on_shutdown``)."""
        # Quiesce first: a frame written while we close is in flight, neither delivered nor
        # lost to a fault, and would make the ground truth ambiguous.
        await self.quiesce()
        self.session.stop()
        try:
            result = await asyncio.wait_for(asyncio.shield(self.task), 5)
        except asyncio.TimeoutError:
            self.task.print_stack()  # where the supervisor is stuck, for the CI log
            for conn in self.stream._conns.values():
                if conn.task is not None:
                    conn.task.print_stack()
            raise
        await self.host.dispatcher.drain(5)
        await self.session.aclose()
        return result

    async def quiesce(self, timeout: float = 2.0) -> None:
        """Pause the exchange and wait until what it sent has been read (a frame written
        as we close is in flight: neither delivered nor lost to a fault)."""
        self.sim.paused = True
        deadline = time.monotonic() + timeout

        def caught_up() -> bool:
            return len(self.recorder.data) >= len(self.sent_live())

        while not caught_up() and time.monotonic() < deadline:  # noqa: ASYNC110 (polls)
            await asyncio.sleep(0.01)

    async def flowing(self, events: int = 10) -> None:
        """Until ``events`` more live events have been delivered."""
        target = len(self.recorder.data) + events
        await wait_for(lambda: len(self.recorder.data) >= target)

    def sent_live(self) -> list[str]:
        """Ground truth: every good frame written to a live connection, as its data."""
        return [
            orjson.dumps(orjson.loads(f.text)["data"]).decode()
            for f in self.sim.sent
            if f.conns and not f.garbage
        ]


async def make_rig(
    sim: Simulator,
    *,
    timing: lc.Timing = FAST,
    heartbeat: Heartbeat = BEAT,
    credentials: Credentials | None = None,
    plugins: dict[str, object] | None = None,
    rest_timeout: float = 2.0,
    slow_after: float = 5.0,
    limiter: RateLimiter | None = None,
    queue_size: int = 10_000,
) -> Rig:
    recorder = Recorder()
    named: dict[str, object] = {"recorder": recorder, **(plugins or {})}
    session = Session(
        named,
        command="test",
        accounts=[
            AccountConfig(
                "acct",
                credentials or Credentials(DEMO_API_KEY, DEMO_AUTH_KEY),
                sim.rest_url,
                sim.ws_url,
            )
        ],
        timing=timing,
        heartbeat=heartbeat,
        rest_timeout=rest_timeout,
        open_timeout=2.0,
        limiter=limiter,
        rest_rate=(1000, 60_000),  # time is scaled; the documented allowance is not
        delivery=DeliveryOptions(slow_after=slow_after, queue_size=queue_size),
    )
    session.start()
    return Rig(sim, recorder, session, session.streams["acct"], session.finished("acct"))


pytestmark = pytest.mark.bitmusa_simulator(event_interval=0.01, seed=3)


async def wait_for(predicate: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.01)


async def test_drops_stalls_and_refusals_each_give_one_gap_and_lose_nothing(
    sim: Simulator,
) -> None:
    rig = await make_rig(sim)
    await wait_for(lambda: "connected" in rig.recorder.statuses())
    await rig.flowing(30)
    sim.drop(mid_frame=True)  # a reset in the middle of a frame
    await wait_for(lambda: rig.recorder.statuses().count("gap") == 1)
    await rig.flowing(30)
    sim.stall(1.5)  # silence: no data, no pongs, longer than the heartbeat allows
    await wait_for(lambda: rig.recorder.statuses().count("gap") == 2)
    await rig.flowing(30)
    sim.refuse(2)  # the next two handshakes are refused...
    sim.refuse(1, how="reset")  # ...and one is reset mid-handshake
    sim.drop()
    await wait_for(lambda: rig.recorder.statuses().count("gap") == 3)
    await rig.flowing(30)
    await sim.garbage(6)
    await wait_for(lambda: len([e for e in rig.recorder.errors if e["raw"]]) == 6)
    result = await rig.finish()

    assert result == lc.Finish(False, "stopped")
    gaps = [s for s in rig.recorder.states if s["status"] == "gap"]
    assert len(gaps) == 3
    for gap in gaps:
        assert gap["since"] <= gap["until"]
    assert rig.recorder.data == rig.sent_live()  # every live frame, once, in order
    assert len(rig.recorder.data) > 100
    frame_errors = [e for e in rig.recorder.errors if e["raw"] is not None]
    assert len(frame_errors) == 6, rig.recorder.errors
    assert rig.stream.machine.counters.reconnects >= 3
    assert sim.account().expiries == 0  # the key never lapsed
    assert sim.account().deletes == 1  # clean shutdown DELETEs the key
    assert rig.recorder.statuses()[-1] == "closed"


async def test_gap_is_reported_before_the_new_connections_first_event(sim: Simulator) -> None:
    rig = await make_rig(sim)
    for n in range(1, 4):
        await wait_for(lambda n=n: len(rig.recorder.data) > 20 * n)
        sim.drop()
        await wait_for(lambda n=n: rig.recorder.statuses().count("gap") == n)
    await rig.flowing()
    await rig.finish()
    timeline = rig.recorder.timeline  # states and events as one plugin saw them, in order
    for i, (kind, value) in enumerate(timeline):
        if (kind, value) == ("state", "disconnected"):
            following = timeline[i + 1 :]
            gap = following.index(("state", "gap"))
            assert all(k == "state" for k, _ in following[:gap]), following[:gap]
            after = [k for k, _ in following[gap + 1 :]]
            assert after
            # the resync (if anything changed) comes first, then the new connection's events
            first_live = after.index("event")
            assert set(after[:first_live]) <= {"resync"}
    assert rig.recorder.data == rig.sent_live()


@pytest.mark.bitmusa_simulator(event_interval=0.002, seed=5)
async def test_rotation_overlaps_two_connections_and_delivers_exactly_once(sim: Simulator) -> None:
    timing = replace(FAST, rotate_after=0.5, rotate_jitter=0.1, rotate_overlap=0.15)
    rig = await make_rig(sim, timing=timing)
    await wait_for(lambda: rig.stream.machine.counters.rotations >= 3, timeout=10)
    result = await rig.finish()
    assert result.failed is False
    assert rig.stream.machine.counters.gaps == 0
    assert "gap" not in rig.recorder.statuses()
    assert sim.account().max_concurrent == 2  # make-before-break, never more
    assert any(len(f.conns) == 2 for f in sim.sent)  # frames really came over both
    assert rig.recorder.data == rig.sent_live()  # ... and were delivered once, in order


@pytest.mark.bitmusa_simulator(
    time_scale=72000, event_interval=0.01, key_validity_ms=10 * 86400 * 1000
)
async def test_the_server_cut_without_rotation_is_a_reconnect_with_gap(sim: Simulator) -> None:
    # 24 simulated hours pass in 1.2 real seconds; rotation is switched off, and the key
    # lives long here so that only the cut can end the connection
    timing = replace(FAST, keepalive_interval=1.0, key_validity=10.0, rotate_after=3600.0)
    rig = await make_rig(sim, timing=timing)
    await wait_for(lambda: "gap" in rig.recorder.statuses(), timeout=5)
    await rig.finish()
    reasons = [s["reason"] for s in rig.recorder.states if s["status"] == "disconnected"]
    assert reasons == ["closed by server: 1000 connection max age reached"]
    assert rig.recorder.data == rig.sent_live()


@pytest.mark.bitmusa_simulator(time_scale=1800.0, event_interval=None)
async def test_a_quiet_account_keeps_its_key_and_connection_for_hours(sim: Simulator) -> None:
    # 3 simulated hours in 6 real seconds: a PUT every real second, a key's hour two real
    # seconds, so a loaded machine's scheduling delays (beside a CPU hog, 14400x left only
    # 0.125 s of margin, and a key lapsed) are far inside the margin the design keeps
    scale = 1800.0
    timing = replace(lc.Timing().scaled(scale), retry_initial=0.05, retry_max=0.3)
    rig = await make_rig(sim, timing=timing, heartbeat=Heartbeat(0.5, 2.0))
    await asyncio.sleep(6.0)
    await rig.finish()
    account = sim.account()
    assert account.expiries == 0
    assert sim.connections_opened == 1  # no needless reconnects on a quiet account
    assert rig.stream.machine.counters.reconnects == 0
    intervals = [(b - a) / 1000 / 60 for a, b in zip(account.puts, account.puts[1:], strict=False)]
    assert len(account.puts) >= 4  # every 30 simulated minutes
    assert all(20 <= minutes <= 45 for minutes in intervals), intervals  # 27-33 + sched


async def test_bad_credentials_fail_fast_with_no_retry(sim: Simulator) -> None:
    rig = await make_rig(sim, credentials=Credentials("wrong-api-key", "wrong-auth-key"))
    result = await asyncio.wait_for(rig.task, 2)
    assert result.failed
    assert "1001" in result.reason
    assert sim.rest_calls == [("POST", 1001)]
    assert rig.stream.status == "failed"
    await rig.host.dispatcher.drain(2)
    assert rig.recorder.statuses()[-1] == "failed"
    # one record per failure: the failed state, with the reason (no on_error besides)
    assert "1001" in (rig.recorder.states[-1]["reason"] or "")
    assert rig.recorder.errors == []


async def test_rest_failures_are_retried_with_backoff(sim: Simulator) -> None:
    faults: list[RestFault] = ["503", "429", "1011", "timeout", "500"]
    for fault in faults:
        sim.fail_rest(fault)
    rig = await make_rig(sim, rest_timeout=0.2)
    await wait_for(lambda: "connected" in rig.recorder.statuses(), timeout=8)
    await rig.finish()
    # each failed POST is one record: a connecting state saying what failed, and when the
    # next try is (no on_error besides)
    retries = [s["reason"] for s in rig.recorder.states if "retrying in" in (s["reason"] or "")]
    assert len(retries) == 5, retries
    assert all("POST http://127.0.0.1:" in r for r in retries)
    assert any("timed out" in r for r in retries)
    assert rig.recorder.errors == []


class Blocking:
    """A sync plugin that blocks its thread for a long time on every order."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.calls = 0

    @hookimpl
    def on_order(self, order: dict[str, Any]) -> None:
        self.calls += 1
        self.release.wait(2.0)


class Raising:
    @hookimpl
    async def on_wallet(self, balance: dict[str, Any]) -> None:
        raise RuntimeError("this plugin always fails")


async def test_hostile_plugins_and_bad_frames_do_not_disturb_the_stream(sim: Simulator) -> None:
    blocking = Blocking()
    rig = await make_rig(sim, plugins={"blocking": blocking, "raising": Raising()}, slow_after=0.3)
    await wait_for(lambda: "connected" in rig.recorder.statuses())
    for _ in range(5):
        await sim.garbage(3)
        await asyncio.sleep(0.2)
    blocking.release.set()
    stats = rig.stream.stats()
    assert stats["handler_errors"] >= 1  # the raising plugin, counted
    assert stats["plugins"]["raising"]["errors"] >= 1
    assert stats["rejected"]["malformed_json"] >= 1
    await rig.finish()
    assert sim.connections_opened == 1  # pongs kept flowing: no reconnect
    assert rig.recorder.data == rig.sent_live()
    kinds = {e["kind"] for e in rig.recorder.errors}
    assert {"plugin_error", "plugin_slow", "malformed_json"} <= kinds


async def test_shutdown_is_prompt_even_when_offline() -> None:
    sim = Simulator(time_scale=3600, event_interval=0.01)
    await sim.start()
    rig = await make_rig(sim)
    await wait_for(lambda: "connected" in rig.recorder.statuses())
    await sim.stop()  # the exchange disappears
    sim.drop()
    start = time.monotonic()
    result = await rig.finish()  # ... and closes the session: on_shutdown, the pool
    assert time.monotonic() - start < 2.0
    assert result == lc.Finish(False, "stopped")
    assert rig.recorder.statuses()[-1] == "closed"
    leftovers = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    assert leftovers == []  # every reader, heartbeat, REST call and worker is gone


async def test_no_secret_reaches_logs_or_output(sim: Simulator) -> None:
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setLevel(logging.DEBUG)
    handler.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    # No install_log_redaction() here: a library user's own logging setup must be safe
    # too (the CLI adds that filter on top; tests/test_cli_live.py covers it).
    output = io.StringIO()
    try:
        credentials = Credentials(DEMO_API_KEY, DEMO_AUTH_KEY)
        rig = await make_rig(sim, plugins={"jsonl": JsonlOutput(output)}, credentials=credentials)
        await wait_for(lambda: "connected" in rig.recorder.statuses())
        sim.drop()
        await wait_for(lambda: "gap" in rig.recorder.statuses())
        sim.expire_key()  # a new key is issued
        await wait_for(lambda: len(sim.account().issued_keys) >= 2)
        await asyncio.sleep(0.3)
        await rig.finish()
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
    text = buffer.getvalue() + output.getvalue()
    text += (
        repr(credentials)
        + str(credentials)
        + repr(rig.stream)
        + repr(rig.stream.listen_key)
        + repr(rig.stream.snapshots)
    )
    logged = buffer.getvalue()
    assert "websockets.client" in logged  # debug logs of both libraries were on...
    assert "httpx" in logged
    assert "GET /ws/future/***" in logged  # ...and the key in the request line was masked
    secrets = [DEMO_API_KEY, DEMO_AUTH_KEY, *sim.account().issued_keys]
    assert len(secrets) >= 4
    for secret in secrets:
        assert secret not in text


class StateKeeper:
    """Keeps the latest state per object, as a bot would, from live and resync events."""

    def __init__(self) -> None:
        self.orders: dict[str, dict[str, Any]] = {}
        self.positions: dict[str, dict[str, Any]] = {}
        self.balance: dict[str, Any] = {}
        self.streams: list[str] = []

    @hookimpl
    def on_order(self, order: dict[str, Any], event: dict[str, Any]) -> None:
        self.orders[order["id"]] = order
        self.streams.append(event["stream"])

    @hookimpl
    def on_position(self, position: dict[str, Any], event: dict[str, Any]) -> None:
        self.positions[position["symbol"]] = position
        self.streams.append(event["stream"])

    @hookimpl
    def on_wallet(self, balance: dict[str, Any], event: dict[str, Any]) -> None:
        self.balance = balance
        self.streams.append(event["stream"])


@pytest.mark.bitmusa_simulator(event_interval=0.01, seed=11)
async def test_an_outage_is_caught_up_by_resync_in_order_with_nothing_rolled_back(
    sim: Simulator,
) -> None:
    keeper = StateKeeper()
    rig = await make_rig(sim, plugins={"keeper": keeper})
    await wait_for(lambda: len(rig.recorder.data) > 40)
    sim.refuse(1000)  # the outage: every reconnect is refused...
    sim.drop()
    await asyncio.sleep(1.0)  # ...while trading goes on at the exchange
    sim.accept()
    await wait_for(lambda: "gap" in rig.recorder.statuses(), timeout=15)
    await rig.flowing()  # live trading again for a while
    await rig.quiesce()  # freeze the exchange, then compare
    await rig.host.dispatcher.drain(5)
    scenario = sim.account().scenario
    await rig.finish()

    assert rig.recorder.resynced  # the snapshot changed things, and they were delivered
    # the resync came after the gap and before the new connection's first event
    timeline = rig.recorder.timeline
    gap = timeline.index(("state", "gap"))
    after = [kind for kind, _ in timeline[gap + 1 :]]
    assert after.index("resync") < after.index("event")
    # the bot's picture equals the exchange's: open orders, positions, USDT balance
    open_ids = {o for o, order in keeper.orders.items() if order["status"] == "open"}
    assert open_ids == set(scenario.orders)
    vanished = {o for o, order in keeper.orders.items() if order["status"] is None}
    reported = " ".join(
        e["message"] for e in rig.recorder.errors if e["kind"] == "resync_incomplete"
    )
    assert all(order_id in reported for order_id in vanished)
    for order_id, order in scenario.orders.items():
        assert keeper.orders[order_id]["filled"] == float(order.traded)
    for ticker, position in scenario.positions.items():
        symbol = ticker[:-4] + "/USDT:USDT"
        assert keeper.positions[symbol]["contracts"] == float(position.amount)
    flat = {s for s, p in keeper.positions.items() if p["contracts"]}
    assert flat == {t[:-4] + "/USDT:USDT" for t in scenario.positions}
    assert keeper.balance["USDT"]["free"] == float(scenario.free)
    assert keeper.balance["USDT"]["total"] == float(scenario.free + scenario.locked)
    # live frames are still complete and in order around the resync
    assert rig.recorder.data == rig.sent_live()


@pytest.mark.bitmusa_simulator(event_interval=None, seed=9)
async def test_a_flood_of_garbage_between_good_frames_loses_no_good_frame(sim: Simulator) -> None:
    import random

    rng = random.Random(20261124)  # seeded: a failure reproduces

    def garbage() -> str:
        kind = rng.randrange(6)
        if kind == 0:  # random text
            return "".join(chr(rng.randrange(1, 0x2FF)) for _ in range(rng.randrange(1, 200)))
        if kind == 1:  # JSON of the wrong shape
            return orjson.dumps(rng.choice([[1, 2], "x", 3.5, None, {"a": [{}]}])).decode()
        if kind == 2:  # a known stream with wrong types
            data: dict[str, Any] = {
                "orderId": rng.choice([None, [], {}, True]),
                "ticker": rng.random(),
            }
            return orjson.dumps({"stream": "future_order", "data": data, "eventTime": 1}).decode()
        if kind == 3:  # a good frame cut short
            return '{"data":{"asset":"USDT","free":"1"'[: rng.randrange(1, 34)]
        if kind == 4:  # huge numbers and deep nesting
            deep: Any = 1
            for _ in range(rng.randrange(1, 250)):  # orjson encodes up to 254 levels
                deep = [deep]
            # the stdlib writes a 31-digit integer; orjson stops at 64 bits
            return json.dumps(
                {
                    "stream": "future_wallet",
                    "eventTime": 10**30,
                    "data": {"asset": "USDT", "free": "9" * 400, "locked": deep},
                }
            )
        return "x" * rng.randrange(65_000, 70_000)  # oversize

    # STEADY: on a loaded machine, reading 2,000 frames of up to 70 KB can keep a pong
    # waiting past BEAT's 0.4 s, and the reconnect would blur the ground truth
    rig = await make_rig(sim, heartbeat=STEADY)
    await wait_for(lambda: "connected" in rig.recorder.statuses())
    for _ in range(40):
        await sim.emit()
        for _ in range(50):
            await sim.send_text(sim.account(), garbage(), garbage=True)
        await sim.send_binary(rng.randbytes(rng.randrange(1, 100)))
        await asyncio.sleep(0)
    await asyncio.sleep(0.5)
    await rig.finish()
    kinds = Counter(e["kind"] for e in rig.recorder.errors)
    summary = (sim.connections_opened, len(rig.recorder.data), len(rig.sent_live()), kinds)
    assert sim.connections_opened == 1, summary  # garbage never cost the connection
    # compared as one boolean: pytest's list diff of thousands of frames takes minutes
    same = rig.recorder.data == rig.sent_live()
    assert same, summary  # every good frame, in order
    assert len(rig.recorder.data) >= 40, summary
    assert sum(kinds.values()) == 40 * 51, summary  # one report per bad frame, binary too
    assert "internal" not in kinds, summary


@pytest.mark.bitmusa_simulator(event_interval=0.01, seed=12)
async def test_a_failed_resync_is_retried_on_the_live_connection_until_it_succeeds(
    sim: Simulator,
) -> None:
    keeper = StateKeeper()
    rig = await make_rig(sim, plugins={"keeper": keeper})
    await wait_for(lambda: rig.stream.machine.counters.resyncs == 1)  # start-up
    sim.refuse(1000)  # an outage while trading goes on...
    sim.drop()
    await asyncio.sleep(0.8)
    sim.fail_rest("503", 3, method="GET")  # ...and the snapshot fails when it ends
    sim.accept()
    await wait_for(lambda: rig.stream.machine.counters.resyncs == 2, timeout=10)
    await rig.quiesce()
    await rig.host.dispatcher.drain(5)
    scenario = sim.account().scenario
    stats = rig.stream.stats()
    await rig.finish()
    assert stats["resync_failures"] >= 1  # at least one snapshot failed and was retried
    assert rig.recorder.statuses().count("gap") == 1
    assert [e["kind"] for e in rig.recorder.errors].count("rest_error") >= 1
    # the gap is closed: the bot's picture equals the exchange's
    open_ids = {o for o, order in keeper.orders.items() if order["status"] == "open"}
    assert open_ids == set(scenario.orders)
    for ticker, position in scenario.positions.items():
        assert keeper.positions[ticker[:-4] + "/USDT:USDT"]["contracts"] == float(position.amount)
    assert keeper.balance["USDT"]["free"] == float(scenario.free)
    assert rig.recorder.data == rig.sent_live()  # held frames were released, none lost


class Arrivals:
    """When each live event reached a plugin."""

    def __init__(self) -> None:
        self.events: list[float] = []

    @hookimpl
    async def on_order(self, event: dict[str, Any]) -> None:
        if event["stream"] != "resync":
            self.events.append(time.monotonic())


class RecordingLimiter(RateLimiter):
    """A limiter that notes when it granted each turn."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.granted: list[float] = []

    async def acquire(self, priority: int = 0) -> None:
        await super().acquire(priority)
        self.granted.append(time.monotonic())


@pytest.mark.bitmusa_simulator(time_scale=60, event_interval=0.01, seed=14)
async def test_events_flow_while_the_snapshot_waits_for_the_shared_rest_allowance(
    sim: Simulator,
) -> None:
    # Many accounts share the REST allowance: a resync may wait seconds for its turn. The
    # connection's events are not held back for that; only for the snapshot's round trip.
    # 60x and a keep-alive every 10 s: the only REST calls competing for the tight allowance
    # are the POST and the snapshot's three GETs (a keep-alive every 0.25 s alone would
    # need more than 4 calls in 1.5 s)
    limiter = RecordingLimiter(((4, 1.5),))
    for _ in range(3):
        await limiter.acquire()  # other accounts used the allowance just now
    keeper, arrivals = StateKeeper(), Arrivals()
    timing = replace(FAST, keepalive_interval=10.0, key_validity=60.0)
    rig = await make_rig(
        sim, plugins={"keeper": keeper, "arrivals": arrivals}, limiter=limiter, timing=timing
    )
    await wait_for(lambda: rig.stream.machine.counters.resyncs == 1, timeout=10)
    await rig.flowing()
    await rig.quiesce()
    await rig.host.dispatcher.drain(5)
    scenario = sim.account().scenario
    await rig.finish()
    # turns: 3 taken above, the POST's, then the snapshot's three (after the window freed)
    assert len(limiter.granted) >= 7
    snapshot_allowed = limiter.granted[4]
    assert snapshot_allowed - limiter.granted[0] >= 1.4  # the limiter did hold it back
    # live events reached the plugin while the snapshot waited for its turn (with frames
    # held until the snapshot, as before the fix, there are none)
    assert [t for t in arrivals.events if t < snapshot_allowed]
    assert keeper.balance["USDT"]["free"] == float(scenario.free)  # and it still applied
    open_ids = {o for o, order in keeper.orders.items() if order["status"] == "open"}
    assert open_ids == set(scenario.orders)
    assert rig.recorder.data == rig.sent_live()


async def test_cancelling_the_engine_at_any_point_ends_every_task_promptly() -> None:
    # Seeded random cancellation points over every phase: a POST or connection under way,
    # a resync held by a hanging snapshot, a rotation, a reader waiting for a lossless
    # plugin (backpressure), a reconnect backoff. Each time, the engine's tasks all end
    # within the bound, and nothing of it is left behind.
    import random

    from bitmusa_plugin.simulator import SimulatorThread

    rng = random.Random(20261201)
    bound = 3.0
    worst = 0.0
    with SimulatorThread(time_scale=3600, event_interval=0.005, seed=33) as handle:
        sim = handle.simulator
        for round_ in range(24):
            baseline = asyncio.all_tasks()
            hung = HungLossless()
            plugins = PluginRegistry()
            plugins.register(Recorder(), "recorder")
            if round_ % 3 == 0:
                plugins.register(hung, "hung")  # holds the reader (queue of 20)
            host = Pipeline(plugins, command="test", queue_size=20)
            host.start(["acct"])
            config = AccountConfig(
                "acct", Credentials(DEMO_API_KEY, DEMO_AUTH_KEY), sim.rest_url, sim.ws_url
            )
            timing = replace(FAST, rotate_after=rng.uniform(0.1, 0.6), rotate_jitter=0.0)
            stream = AccountStream(config, host, timing=timing, heartbeat=BEAT, rest_timeout=2.0)
            task = asyncio.get_running_loop().create_task(stream.run())
            fault = round_ % 4
            if fault == 1:
                await handle.call(lambda s: s.fail_rest("timeout", 1, method="GET"))
            elif fault == 2:
                await handle.call(lambda s: s.refuse(2))
            elif fault == 3:
                await asyncio.sleep(rng.uniform(0.05, 0.2))
                await handle.call(lambda s: s.drop())
            await asyncio.sleep(rng.uniform(0.0, 0.5))
            cancelled_at = time.monotonic()
            task.cancel()
            await asyncio.wait({task}, timeout=bound)
            assert task.done(), f"round {round_}: the stream did not end within {bound} s"
            await host.stop(timeout=0.2)
            deadline = cancelled_at + bound
            while time.monotonic() < deadline:
                left = [t for t in asyncio.all_tasks() - baseline if not t.done()]
                left = [t for t in left if t is not asyncio.current_task()]
                if not left:
                    break
                await asyncio.sleep(0.01)
            assert not left, f"round {round_}: tasks still running: {left}"
            worst = max(worst, time.monotonic() - cancelled_at)
            await handle.call(lambda s: s._rest_faults.clear())
            await handle.call(lambda s: s.accept())
    print(f"worst time from cancel to every task ended: {worst:.3f} s")


class HungLossless:
    bitmusa_delivery = "all"

    @hookimpl
    async def on_order(self) -> None:
        await asyncio.Event().wait()


class SlowLossless:
    """A lossless plugin that stutters: every 50th call takes 0.15 s, the others none.
    Each stutter fills its queue, and the readers pause (backpressure), then it catches up."""

    bitmusa_delivery = "all"

    def __init__(self) -> None:
        self.calls = 0

    @hookimpl
    async def on_order(self) -> None:
        self.calls += 1
        if self.calls % 50 == 0:
            await asyncio.sleep(0.15)


@pytest.mark.bitmusa_simulator(time_scale=60, event_interval=0.002, seed=34)
async def test_rotations_under_backpressure_deliver_every_frame_exactly_once(
    sim: Simulator,
) -> None:
    # 60x: a listenKey lives a real minute, so a starved machine's late keep-alive is no
    # outage (this test is about rotations, whose timing is the client's own)
    timing = replace(FAST, rotate_after=0.4, rotate_overlap=0.2)
    rig = await make_rig(
        sim, plugins={"slow": SlowLossless()}, timing=timing, queue_size=20, heartbeat=STEADY
    )
    await wait_for(lambda: rig.stream.machine.counters.rotations >= 3, timeout=20)
    stats = rig.stream.stats()
    await rig.finish()
    assert stats["plugins"]["slow"]["blocked_episodes"] > 0  # the reader did pause
    assert rig.recorder.statuses().count("gap") == 0
    assert any(len(f.conns) == 2 for f in sim.sent)  # frames came over both connections
    assert rig.recorder.data == rig.sent_live()  # every live frame, once, in order


def burst_frame(n: int, objects: int = 50) -> dict[str, Any]:
    """Frame ``n`` of a burst over ``objects`` orders, 5 positions and the balance, each
    frame a newer state of its object (its ``n`` is in it)."""
    t = 1_700_000_000_000 + n
    if n % 10 == 0:
        return {
            "data": {"asset": "USDT", "free": str(n), "locked": "0"},
            "stream": "future_wallet",
            "eventTime": t,
        }
    if n % 10 == 1:
        ticker = f"T{n % 5}USDT"
        position = {"ticker": ticker, "position": "BUY", "status": "OPEN", "amount": str(n)}
        return {"data": position, "stream": "future_position", "eventTime": t}
    order: dict[str, Any] = {"orderId": f"B{n % objects}", "ticker": "BTCUSDT"}
    order |= {"status": "TRADING", "amount": str(n + 1), "tradedAmount": "0", "price": "1"}
    order["createdTime"] = t
    return {"data": order, "stream": "future_order", "eventTime": t}


class SlowLatest:
    """A third-party sync plugin that takes 1 ms per call (delivery policy: the default)."""

    def __init__(self) -> None:
        self.final: dict[tuple[str, str], int] = {}
        self.calls = 0

    def _take(self, kind: str, ident: str, event: dict[str, Any]) -> None:
        time.sleep(0.001)
        self.calls += 1
        self.final[(kind, ident)] = event["eventTime"]

    @hookimpl
    def on_order(self, order: dict[str, Any], event: dict[str, Any]) -> None:
        self._take("order", order["id"], event)

    @hookimpl
    def on_position(self, position: dict[str, Any], event: dict[str, Any]) -> None:
        self._take("position", position["symbol"], event)

    @hookimpl
    def on_wallet(self, event: dict[str, Any]) -> None:
        self._take("balance", "", event)


@pytest.mark.bitmusa_simulator(time_scale=60, event_interval=None)  # no key lapse under load
async def test_a_slow_latest_plugin_ends_with_every_final_state_within_its_bound(
    sim: Simulator,
) -> None:
    count = 5000
    slow, out = SlowLatest(), io.BytesIO()
    rig = await make_rig(
        sim, plugins={"slow": slow, "jsonl": JsonlOutput(out)}, timing=FAST, heartbeat=STEADY
    )
    await wait_for(lambda: rig.stream.status == "connected")
    for n in range(count):  # about 50 ms of wire; the slow plugin needs 5 s for it all
        await sim.send_text(sim.account(), orjson.dumps(burst_frame(n)).decode())
    await wait_for(lambda: len(rig.recorder.data) >= count, timeout=30)
    await rig.host.dispatcher.drain(10)
    stats = rig.host.dispatcher.stats()
    await rig.finish()
    truth: dict[tuple[str, str], int] = {}
    for n in range(count):
        frame = burst_frame(n)
        data = frame["data"]
        if frame["stream"] == "future_order":
            truth[("order", data["orderId"])] = frame["eventTime"]
        elif frame["stream"] == "future_position":
            truth[("position", data["ticker"][:-4] + "/USDT:USDT")] = frame["eventTime"]
        else:
            truth[("balance", "")] = frame["eventTime"]
    assert slow.final == truth  # every object's final state, none older
    assert slow.calls < count  # it could not have taken them all: states were merged
    plugin = stats["slow"]
    assert plugin["merged"] > 0
    assert plugin["peak"] <= 1000 + len(truth) + 10  # behind, then one state per object
    # the lossless jsonl output beside it wrote every frame, in order
    hooks = ("on_order", "on_wallet", "on_position")
    lines = [orjson.loads(line) for line in out.getvalue().splitlines()]
    live = [r for r in lines if r["hook"] in hooks and r["event"]["stream"] != "resync"]
    assert [r["event"]["eventTime"] for r in live] == [1_700_000_000_000 + n for n in range(count)]


async def test_a_hand_back_pins_where_a_silently_dead_link_was_last_alive(sim: Simulator) -> None:
    # Worker mode: a link that died without a word (no frame, no pong) delivers nothing,
    # and the heartbeat notices it only after its timeout: a hand-back meanwhile must not
    # let the successor trust it, but read from the last moment it was known alive.
    rig = await make_rig(sim, heartbeat=STEADY)
    await wait_for(lambda: len(rig.recorder.data) > 5)
    assert await rig.stream.unproven_since_ms(2.0) is None  # it answers: nothing to pin
    before = int(time.time() * 1000)
    sim.stall(5.0)
    since = await rig.stream.unproven_since_ms(0.3)
    after = int(time.time() * 1000)
    assert since is not None  # pinned: the successor reads from there
    assert before - 2_000 <= since < after  # its last frame or pong
    assert rig.stream.status == "connected"  # not noticed by the heartbeat yet
    sim.stall(0.0)
    await rig.finish()


async def test_a_bug_in_the_resync_releases_the_held_frames_and_the_resync_is_retried(
    sim: Simulator, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # The frames are held from the connection's opening until its snapshot is delivered:
    # an unexpected exception in the resync (not a REST failure) must not hold them, and
    # the account's gap, for ever.
    from bitmusa_plugin._core import resync

    real = resync.plan
    failures: list[int] = []

    def failing_once(*args: Any, **kwargs: Any) -> Any:
        if not failures:
            failures.append(1)
            raise RuntimeError("a bug in the plan")
        return real(*args, **kwargs)

    monkeypatch.setattr(resync, "plan", failing_once)
    rig = await make_rig(sim, heartbeat=STEADY)
    await wait_for(lambda: len(rig.recorder.data) > 20)  # the held frames went out
    await wait_for(lambda: rig.stream.machine.counters.resyncs >= 1)  # and it was retried
    await rig.finish()
    assert failures == [1]
    assert rig.stream.machine.counters.resync_failures == 1
    assert "internal error in the resync: RuntimeError('a bug in the plan')" in caplog.text
    assert rig.recorder.data == rig.sent_live()


def test_a_stream_added_to_read_a_gap_says_so_before_it_runs() -> None:
    # Worker mode: between session.add and the stream task's first step, the sink's
    # ceiling asks the new stream where its gap starts: already the gap it will read.
    config = AccountConfig("acct", Credentials(DEMO_API_KEY, DEMO_AUTH_KEY), "http://127.0.0.1:9")
    pipeline = Pipeline(PluginRegistry(), command="test")
    assert AccountStream(config, pipeline, resume_since_ms=1234).unfinished_gap_ms() == 1234
    assert AccountStream(config, pipeline).unfinished_gap_ms() is None
