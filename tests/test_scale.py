"""Scale-out against a real Redis (redis-server on a free loopback port, started here).

``make test`` installs redis-server when it is missing and it runs as root (as in CI);
elsewhere these tests are skipped with the command that installs it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import orjson
import pytest

from bitmusa_hookspecs import hookimpl
from bitmusa_plugin._core.mapping import Mapped
from bitmusa_plugin._engine.pipeline import Pipeline
from bitmusa_plugin._engine.plugins import PluginRegistry
from bitmusa_plugin._engine.secrets import Credentials
from bitmusa_plugin._engine.session import Session
from bitmusa_plugin._engine.stream import AccountConfig, AccountStream
from bitmusa_plugin._scale import registry
from bitmusa_plugin._scale.consume import consume
from bitmusa_plugin._scale.sink import RedisSink, idempotency_id
from bitmusa_plugin._scale.worker import HANDBACK_PROBE, Worker, WorkerOptions
from bitmusa_plugin.simulator import DEMO_API_KEY, DEMO_AUTH_KEY, Simulator
from bitmusa_plugin.testing import RedisServer, order_frame, wallet_frame

pytestmark = pytest.mark.skipif(
    not RedisServer.available(),
    reason="redis-server not found: `apt-get install redis-server` (Debian/Ubuntu) or "
    "`brew install redis`; `make test` installs it when run as root",
)


class Errors:
    def __init__(self) -> None:
        self.kinds: list[str] = []

    @hookimpl
    async def on_error(self, error: dict[str, Any]) -> None:
        self.kinds.append(error["kind"])


async def entries(client: Any, stream: str = "bitmusa:events") -> list[dict[str, Any]]:
    out = []
    for _, fields in await client.xrange(stream):
        record = orjson.loads(fields[b"json"])
        record["_id"] = fields[b"id"].decode()
        out.append(record)
    return out


async def test_the_sink_writes_every_event_as_its_jsonl_record_with_a_stable_id(
    redis_server: RedisServer, client: Any
) -> None:
    sink = RedisSink(redis_server.url, maxlen=None)
    plugins = PluginRegistry()
    plugins.register(sink, "redis-sink")
    host = Pipeline(plugins, command="test")
    sink.bind(host.report)
    host.start(["main"])
    frames = [wallet_frame(free="100", event_time=1700000000001)]
    frames += [order_frame(f"F{i}", event_time=1700000000002 + i) for i in range(50)]
    frames.append(frames[1])  # the same exchange event, delivered twice
    for frame in frames:
        host.ingest("main", frame)
    await host.dispatcher.drain(5)
    assert await sink.flush(5)
    await host.stop()
    got = await entries(client)
    events = [r for r in got if r["hook"] in ("on_order", "on_wallet")]
    assert len(events) == 52
    assert [r["hook"] for r in events[:2]] == ["on_wallet", "on_order"]
    assert events[1]["order"]["id"] == "F0"
    assert events[-1]["_id"] == events[1]["_id"]  # a duplicate has the duplicate's id
    assert len({r["_id"] for r in events}) == 51
    assert events[1]["_id"].startswith("main:future_order:1700000000002:")
    assert events[1]["_id"] == idempotency_id({k: v for k, v in events[1].items() if k != "_id"})
    # two workers delivering it (a handover overlap): other fence, other receipt time
    other = orjson.loads(orjson.dumps(events[1]))
    other.pop("_id")
    other["fence"], other["event"]["receivedAt"] = 7, other["event"]["receivedAt"] + 5
    assert idempotency_id(other) == events[1]["_id"]


async def test_the_time_a_takeover_resumes_from_never_passes_an_unfinished_gap(
    redis_server: RedisServer, client: Any
) -> None:
    """The ``last`` hash (where a takeover's gap starts after a worker dies) is held at the
    start of the account's unfinished gap (what was delivered live meanwhile does not
    move it), and moves no more once the account's stream stopped here."""
    ceiling: dict[str, int | None] = {"a": None}
    sink = RedisSink(redis_server.url, maxlen=None)
    sink.bind(lambda error: None, None, "last", ceiling.get)

    async def written(at: int, stream: str = "future_wallet") -> int:
        event = {"account": "a", "stream": stream, "eventTime": at, "receivedAt": at}
        await sink.on_wallet({}, {**event, "data": {}})  # type: ignore[typeddict-item]
        assert await sink.flush(5)
        return int(await client.hget("last", "a"))

    assert await written(1000) == 1000
    ceiling["a"] = 1500  # the stream went down at 1500
    assert await written(2000) == 1500  # delivered live before the resync held its frames
    assert await written(3000, "resync") == 1500
    ceiling["a"] = None  # the resync delivered
    assert await written(4000) == 4000
    ceiling["a"] = -1  # its stream stopped here (handed over): what is left moves nothing
    assert await written(5000) == 4000
    await sink.close()


async def test_a_record_taken_while_a_gap_was_open_never_moves_last_past_it_written_later(
    redis_server: RedisServer, client: Any
) -> None:
    """Each record carries the bound it had when the sink took it: a record delivered
    while a gap was open (its fills still to come behind it in the sink's queue), written
    after the gap closed, moves ``last`` only to the gap's start; a batch split between
    the two must not let a takeover resume past the fills not written yet."""
    ceiling: dict[str, int | None] = {"a": 1500}
    sink = RedisSink(redis_server.url, maxlen=None)
    sink.bind(lambda error: None, None, "last", ceiling.get)
    event = {"account": "a", "stream": "future_wallet", "eventTime": 2000, "receivedAt": 2000}
    await sink.on_wallet({}, {**event, "data": {}})  # type: ignore[typeddict-item]
    ceiling["a"] = None  # the gap's records reached the sink (they are written after)
    assert await sink.flush(5)
    assert int(await client.hget("last", "a")) == 1500
    await sink.close()


async def test_a_gaps_cap_lifts_only_when_the_sinks_queue_reaches_its_last_record(
    redis_server: RedisServer, client: Any
) -> None:
    """The worker's ceiling for an account whose resync published a gap's records holds
    the gap's start until the sink's worker has taken every one of them (a mark in its
    queue), not when the stream is done with the gap."""
    sink = RedisSink(redis_server.url, maxlen=None)
    session = Session({"redis-sink": sink}, command="worker")
    worker = Worker(client, session, WorkerOptions(), "w1")
    worker.sink_name = "redis-sink"
    sink.bind(session.pipeline.report, worker.fence, "last", worker.last_ceiling)
    config = AccountConfig("a", Credentials(DEMO_API_KEY, DEMO_AUTH_KEY), "http://127.0.0.1:9")
    session.streams["a"] = AccountStream(config, session.pipeline)  # not run: no gap of its own
    assert worker.last_ceiling("a") is None
    # the resync published the gap's records; the sink has not taken them (not started)
    record = {"account": "a", "stream": "resync", "eventTime": None, "receivedAt": 9000}
    session.pipeline.dispatcher.publish("on_wallet", {"balance": {}, "event": record})
    worker._gap_delivered("a", 1500)
    assert worker.last_ceiling("a") == 1500
    session.pipeline.dispatcher.start()
    assert await session.pipeline.dispatcher.drain(5)
    assert worker.last_ceiling("a") is None  # its records are in the sink's hands
    assert await sink.flush(5)
    assert int(await client.hget("last", "a")) == 1500  # the record was taken under the cap
    del session.streams["a"]
    await session.pipeline.dispatcher.close()
    await sink.close()


class _Gated:
    """The sink's real Redis client, whose pipelines wait for ``gate`` before they are
    sent: a batch held in flight, as a slow network holds it."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.gate = asyncio.Event()
        self.held = asyncio.Event()  # a batch waits at the gate

    def pipeline(self, **options: Any) -> Any:
        pipe = self.client.pipeline(**options)
        send = pipe.execute

        async def execute() -> Any:
            self.held.set()
            await self.gate.wait()
            return await send()

        pipe.execute = execute
        return pipe

    async def aclose(self) -> None:
        await self.client.aclose()


async def test_a_stream_handed_over_with_a_gap_pins_it_before_the_heartbeat_once(
    client: Any,
) -> None:
    """While an account is being handed over and its stream here has a gap it has not
    delivered, each tick's reading pins that gap (where the successor's read must start),
    written once per value, lowered when an earlier gap opens, and forgotten once the
    account is no longer being handed over from here."""
    from bitmusa_plugin._core import lease as ls

    session = Session({}, command="worker")
    worker = Worker(client, session, WorkerOptions(), "w1")
    config = AccountConfig("a", Credentials(DEMO_API_KEY, DEMO_AUTH_KEY), "http://127.0.0.1:9")
    session.streams["a"] = AccountStream(config, session.pipeline, resume_since_ms=1500)
    pinned = "bitmusa:default:pinned"
    view = await worker._read()
    assert await client.hget(pinned, "a") is None  # not being handed over: nothing pinned
    assert view.pinned == {}
    worker.planner.releasing["a"] = ls._Releasing("w1:1", 1, 0.0, 0.0)
    view = await worker._read()
    assert view.pinned == {"a": 1500}  # written before the heartbeat, read in the same tick
    await client.hdel(pinned, "a")  # (as a successor's takeover consumes it)
    await worker._read()
    assert await client.hget(pinned, "a") is None  # the same gap: not written again
    session.streams["a"] = AccountStream(config, session.pipeline, resume_since_ms=1200)
    await worker._read()
    assert int(await client.hget(pinned, "a")) == 1200  # an earlier gap: pinned
    # a gap whose records are published but not all in the sink's hands yet pins too
    await client.hdel(pinned, "a")
    session.streams["a"] = AccountStream(config, session.pipeline)  # no gap of its own
    worker._closing["a"] = [1000]
    await worker._read()
    assert int(await client.hget(pinned, "a")) == 1000
    del worker.planner.releasing["a"]
    await worker._read()
    assert "a" not in worker._pins
    del session.streams["a"]


async def test_a_stream_being_handed_over_whose_link_died_silently_pins_its_last_sign(
    sim: Simulator, client: Any
) -> None:
    """A link that dies without a word after the hand-back (no frame, no pong) delivers
    nothing, and its heartbeat notices only after its timeout; meanwhile the successor
    confirms the handover by this worker's heartbeats. So each tick's reading pings the
    streams being handed over first, and pins the last moment a silent one was heard,
    before the heartbeat: the successor then reads from there."""
    from bitmusa_plugin._core import lease as ls

    session = _session({})
    creds = Credentials(DEMO_API_KEY, DEMO_AUTH_KEY)
    stream = session.add(AccountConfig("a", creds, sim.rest_url, sim.ws_url))
    try:
        for _ in range(1000):  # connected, and its first resync delivered
            if stream.status == "connected" and stream.unfinished_gap_ms() is None:
                break
            await asyncio.sleep(0.01)
        assert stream.status == "connected"
        worker = Worker(client, session, WorkerOptions(), "w1")
        worker.planner.releasing["a"] = ls._Releasing("w1:1", 1, 0.0, 0.0)
        pinned = "bitmusa:default:pinned"
        assert (await worker._read()).pinned == {}  # it answers: it vouches for itself
        sim.stall(10.0)
        view = await worker._read()
        after = int(time.time() * 1000)
        assert stream.status == "connected"  # not noticed by the stream's heartbeat yet
        assert set(view.pinned) == {"a"}  # pinned in the same reading as the heartbeat
        # at its last sign of life: a frame or pong, before the unanswered ping's wait
        assert view.pinned["a"] <= after - 1000 * HANDBACK_PROBE // 2
        assert int(await client.hget(pinned, "a")) == view.pinned["a"]
    finally:
        sim.stall(0.0)
        await session.aclose()


async def test_a_restart_from_a_later_time_still_reads_the_gap_its_stream_had_not_read(
    sim: Simulator, client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stream restarted to read a gap (a pin seen late, a trust not confirmed) while
    the stream it replaces has not delivered an earlier gap: the new one reads from the
    earlier of the two, never from the later time alone."""
    session = _session({})
    worker = Worker(client, session, WorkerOptions(), "w1")
    worker._registry = {"a": _record(sim, monkeypatch)}
    try:
        assert await worker._start("a", 5000) == []  # taken over with a gap since 5000
        assert worker.unfinished_gap("a") == 5000  # not read yet
        assert await worker._start("a", 9000) == []  # restarted to read one since 9000
        assert session.streams["a"].resume_since_ms == 5000
        assert await worker._start("a", 2000) == []  # an earlier one: from there
        assert session.streams["a"].resume_since_ms == 2000
    finally:
        await session.aclose()


def _session(plugins: dict[str, object]) -> Session:
    """A worker's session on the simulator, whose time is scaled: the listenKey is kept
    alive as often as it needs, and the heartbeat is steady under load."""
    from bitmusa_plugin._core import machine as lc
    from bitmusa_plugin._engine.stream import Heartbeat

    timing = lc.Timing(keepalive_interval=0.25, key_validity=1.0, rotate_after=600.0)
    return Session(plugins, command="worker", timing=timing, heartbeat=Heartbeat(2.0, 10.0))


def _record(sim: Simulator, monkeypatch: pytest.MonkeyPatch) -> bytes:
    monkeypatch.setenv("A_API", DEMO_API_KEY)
    monkeypatch.setenv("A_AUTH", DEMO_AUTH_KEY)
    return registry.AccountRecord(
        "a", api_key_env="A_API", auth_key_env="A_AUTH", rest_url=sim.rest_url, ws_url=sim.ws_url
    ).to_json()


async def test_a_restart_owes_the_lowering_of_last_until_no_batch_sent_before_can_undo_it(
    sim: Simulator, redis_server: RedisServer, client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stream restarts to read a gap from the past (a trust found wanting, a pin seen
    late): ``last`` must come down to the gap's start, and stay there until the gap's
    records are written. So what the sink holds of the account is capped there; a batch
    it sent before the restart, still in flight, would raise ``last`` again if it landed
    after the lowering (on the sink's own connection), so the lowering waits for it, and
    the restart's Confirmed, which must not delete the record before ``last`` is down, is
    put off meanwhile; till the lowering is done, the sink's ceiling holds at the gap's
    start (else it would move ``last`` on past the gap while Redis still has the old)."""
    from bitmusa_plugin._core import lease as ls
    from bitmusa_plugin._scale.worker import _Deferred

    sink = RedisSink(redis_server.url, maxlen=None)
    session = _session({"redis-sink": sink})
    worker = Worker(client, session, WorkerOptions(), "w1")
    worker.sink = worker_sink = sink
    worker.sink_name = "redis-sink"
    sink.bind(session.pipeline.report, None, "bitmusa:default:last", worker.last_ceiling)
    worker._registry = {"a": _record(sim, monkeypatch)}
    worker.planner.owned["a"] = ls._Owned("w1:1", 1, time.monotonic())  # its lease: ours
    try:
        await worker._start("a", None)
        event = {"account": "a", "stream": "future_wallet", "eventTime": 1, "receivedAt": 9000}
        await sink.on_wallet({}, {**event, "data": {}})  # type: ignore[typeddict-item]
        assert await sink.flush(5)
        gated = _Gated(sink._client)
        sink._client = gated
        await sink.on_wallet({}, {**event, "receivedAt": 9500, "data": {}})  # type: ignore[typeddict-item]
        await asyncio.wait_for(gated.held.wait(), 5)  # in flight: it moves last to 9500
        await sink.on_wallet({}, {**event, "receivedAt": 9600, "data": {}})  # type: ignore[typeddict-item]
        await client.hset("bitmusa:default:unconfirmed", "a", 3000)
        assert await worker._start("a", 3000) == []  # the trust was found wanting
        held = [entry[4] for entry in worker_sink._buffer]  # the batch in flight among them
        assert len(held) >= 2
        assert all(point is None or point <= 3000 for point in held)  # capped
        assert worker.last_ceiling("a") == 3000
        with pytest.raises(_Deferred):  # the batch in flight could undo the lowering
            await worker._do(ls.Confirmed("a", 3000, restarted=True))
        before = await client.hget("bitmusa:default:last", "a")
        await worker._read()  # nor does the tick's reading lower it yet
        assert await client.hget("bitmusa:default:last", "a") == before
        assert await client.hget("bitmusa:default:unconfirmed", "a") == b"3000"
        gated.gate.set()
        assert await sink.flush(5)
        # capped at the gap's start (the stream's own clock may put it a ms earlier)
        assert 2990 <= int(await client.hget("bitmusa:default:last", "a")) <= 3000

        def past_the_gap() -> bool:  # (a later gap of its own may open: a reconnect)
            gap = session.streams["a"].unfinished_gap_ms()
            closing = worker._closing.get("a", [])
            return (gap is None or gap > 3000) and all(at > 3000 for at in closing)

        for _ in range(1000):  # the restarted stream delivers its gap
            if past_the_gap():
                break
            await asyncio.sleep(0.01)
        assert past_the_gap()
        assert worker.last_ceiling("a") == 3000  # owed: held until Redis has lowered it
        await client.hset("bitmusa:default:last", "a", 9500)  # (as if the batch had won)
        assert await worker._do(ls.Confirmed("a", 3000, restarted=True)) == []
        assert int(await client.hget("bitmusa:default:last", "a")) == 3000  # lowered first
        assert await client.hget("bitmusa:default:unconfirmed", "a") is None
        ceiling = worker.last_ceiling("a")  # paid: the sink moves it on from here
        assert ceiling is None or ceiling > 3000
    finally:
        await session.aclose()
        await sink.close()


async def test_the_ticks_reading_pays_an_owed_lowering_and_a_failed_restart_lowers_too(
    sim: Simulator, client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The lowering a restart owes is paid by the next reading of Redis that can (in its
    pipeline, before the heartbeat), whatever becomes of the restart's Confirmed or
    Unpin, which then only deletes its record. A restart whose stream could not start
    brings ``last`` down to the gap's start for whoever takes the account next."""
    from bitmusa_plugin._core import lease as ls

    session = _session({})
    worker = Worker(client, session, WorkerOptions(), "w1")
    worker.sink = RedisSink("redis://127.0.0.1:9", maxlen=None)  # holds nothing
    worker._registry = {"a": _record(sim, monkeypatch)}
    worker.planner.owned["a"] = ls._Owned("w1:1", 1, time.monotonic())  # its lease: ours
    try:
        await worker._start("a", None)
        await client.hset("bitmusa:default:last", "a", 9000)
        await client.hset("bitmusa:default:pinned", "a", 3000)
        await worker._start("a", 3000)  # the pin, seen late
        assert worker.last_ceiling("a") == 3000
        await worker._read()
        assert int(await client.hget("bitmusa:default:last", "a")) == 3000  # paid
        assert "a" not in worker._owed
        await client.hset("bitmusa:default:last", "a", 3500)  # the sink wrote the gap
        assert await worker._do(ls.Unpin("a", 3000)) == []
        assert int(await client.hget("bitmusa:default:last", "a")) == 3500  # not again
        assert await client.hget("bitmusa:default:pinned", "a") is None
        # a restart that could not start (its record is gone from the registry): the
        # lease is let go, and last comes down to the gap's start for the next owner
        await client.hset("bitmusa:default:last", "a", 6000)
        await client.hset("bitmusa:default:pinned", "a", 2600)
        await worker._do(ls.Stop("a", "restarting, to read a gap"))
        worker._registry = {}
        follow = await worker._do(ls.Start("a", 1, 2600))
        assert any(isinstance(action, ls.Release) for action in follow)
        assert await worker._do(ls.Unpin("a", 2600)) == []
        assert int(await client.hget("bitmusa:default:last", "a")) == 2600
        assert await client.hget("bitmusa:default:pinned", "a") is None
    finally:
        await session.aclose()


async def test_a_takeover_with_a_batch_of_ours_in_flight_is_put_off_not_an_outage(
    redis_server: RedisServer, client: Any
) -> None:
    """A takeover's script may lower ``last``; a batch this worker's sink sent for the
    account when it streamed it before, still in flight, would raise it again. The
    takeover is put off to a later tick, without waiting, and that is not taken for
    Redis being unreachable (which would fence the worker's streams)."""
    from bitmusa_plugin._core import lease as ls
    from bitmusa_plugin._scale.worker import _Deferred

    sink = RedisSink(redis_server.url, maxlen=None)
    session = Session({}, command="worker")
    worker = Worker(client, session, WorkerOptions(), "w1")
    worker.sink = sink
    sink.bind(session.pipeline.report, None, "bitmusa:default:last", lambda account: None)
    event = {"account": "a", "stream": "future_wallet", "eventTime": 1, "receivedAt": 5000}
    sink._start()
    gated = _Gated(sink._client)
    sink._client = gated
    await sink.on_wallet({}, {**event, "data": {}})  # type: ignore[typeddict-item]
    await asyncio.wait_for(gated.held.wait(), 5)
    with pytest.raises(_Deferred):
        await worker._do(ls.Acquire("a", 0, 5.0))
    await worker._carry_out([ls.Acquire("a", 0, 5.0)])  # put off: no _TickFailed
    assert worker.planner._reachable
    assert await client.get("bitmusa:default:lease:a") is None  # not taken yet
    # a re-take of a lease (the worker streams the account) never lowers last: not put off
    await worker._do(ls.Acquire("a", 0, None))
    assert await client.get("bitmusa:default:lease:a") is not None
    gated.gate.set()
    assert await sink.flush(5)
    await sink.close()


async def test_a_pin_stays_where_it_is_earliest_and_last_never_stays_above_a_gap_taken(
    client: Any,
) -> None:
    """The worker's Lua on a real Redis: a pinned gap (one a previous owner handed over
    unread) is never replaced by a later one, never deleted by a hand-back that has no
    gap of its own, nor by a worker retaking its own lapsed lease (its planner then
    restarts the stream with the pin)."""
    from bitmusa_plugin._scale import worker as w

    hand_back = client.register_script(w._HAND_BACK)
    pin = client.register_script(w._PIN)
    acquire = client.register_script(w._ACQUIRE)
    back_keys = ["lease", "marker", "unconfirmed", "pinned"]

    async def handed(holder: str, gap: int) -> int | None:
        await client.set("lease", holder)
        assert await hand_back(keys=back_keys, args=[holder, 20_000, "a", gap]) == 1
        got = await client.hget("pinned", "a")
        return None if got is None else int(got)

    await client.hset("pinned", "a", 1000)  # left by the previous owner, not read here yet
    assert await handed("w1:1", -1) == 1000  # our stream had no gap: the pin stays
    assert await handed("w1:2", 2000) == 1000  # ours is later: the earlier one stays
    await client.hdel("pinned", "a")
    assert await handed("w1:3", 2000) == 2000
    assert await pin(keys=["pinned"], args=["a", 3000, "b", 500]) == 1  # b only
    assert {k: int(v) for k, v in (await client.hgetall("pinned")).items()} == {
        b"a": 2000,
        b"b": 500,
    }
    acquire_keys = ["lease", "fence", "marker", "live", "last", "unconfirmed", "pinned"]
    await client.delete("lease", "marker")
    await acquire(keys=acquire_keys, args=["w1", 10_000, 0, "a", -1, -1])  # our own, retaken
    assert int(await client.hget("pinned", "a")) == 2000  # another's pin: it stays
    await client.delete("lease")
    await client.hset("pinned", "b", 700)  # the pin we wrote handing b back ourselves
    await acquire(keys=acquire_keys, args=["w1", 10_000, 0, "b", -1, 700])
    assert await client.hget("pinned", "b") is None  # our own gap: our stream reads it
    await client.delete("lease")
    await client.delete("lease")
    await client.hset("last", "a", 5000)  # written past the pin meanwhile
    got = await acquire(keys=acquire_keys, args=["w2", 10_000, 0, "a", 0])  # a takeover
    assert int(got[3]) == 2000  # reads the pinned gap, and consumes the pin
    assert await client.hget("pinned", "a") is None
    # and until it writes, a death of its own is read from there too, not from 5000
    assert int(await client.hget("last", "a")) == 2000
    # a stream that restarts to read a gap (a pin seen late, a trust not confirmed)
    # brings last down to it as it forgets the record; a plain confirmation does not
    forget = client.register_script(w._FORGET)
    await client.hset("last", "a", 5000)
    await client.hset("unconfirmed", "a", 3000)
    assert await forget(keys=["unconfirmed", "last"], args=["a", 3000, -1]) == 1
    assert int(await client.hget("last", "a")) == 5000
    await client.hset("pinned", "a", 4000)
    assert await forget(keys=["pinned", "last"], args=["a", 4000, 4000]) == 1
    assert int(await client.hget("last", "a")) == 4000
    # down to where the restarted stream has not delivered (an earlier gap of its own)
    await client.hset("pinned", "a", 4500)
    assert await forget(keys=["pinned", "last"], args=["a", 4500, 3500]) == 1
    assert int(await client.hget("last", "a")) == 3500
    # never up, and another's record stays
    await client.hset("pinned", "a", 9000)
    assert await forget(keys=["pinned", "last"], args=["a", 4500, 3900]) == 0
    assert int(await client.hget("last", "a")) == 3500
    assert int(await client.hget("pinned", "a")) == 9000
    # an account with no last yet (nothing written): the gap's start is set, else a death
    # before the first write would read no gap at all
    lower = client.register_script(w._LOWER)
    await lower(keys=["last"], args=["c", 700, "a", 9999])
    assert int(await client.hget("last", "c")) == 700
    assert int(await client.hget("last", "a")) == 3500
    await client.hset("pinned", "d", 800)
    assert await forget(keys=["pinned", "last"], args=["d", 800, 800]) == 1
    assert int(await client.hget("last", "d")) == 800
    await client.hset("pinned", "e", 900)
    await client.delete("lease", "marker")
    got = await acquire(keys=acquire_keys, args=["w2", 10_000, 0, "e", 0])
    assert int(got[3]) == 900
    assert int(await client.hget("last", "e")) == 900


async def test_each_orders_last_state_is_kept_for_the_next_owner_until_done_and_behind(
    redis_server: RedisServer, client: Any
) -> None:
    """Worker mode: the sink keeps each order's last record in its account's orders hash,
    written after the record itself, until the order is done and ``ORDER_KEEP_MS`` behind
    the account's resume point; a new owner starts its fills and open orders from it."""
    from bitmusa_plugin._scale.sink import ORDER_KEEP_MS

    sink = RedisSink(redis_server.url, maxlen=None)
    session = Session({"redis-sink": sink}, command="worker")
    worker = Worker(client, session, WorkerOptions(), "w1")
    sink.bind(
        session.pipeline.report,
        None,
        "bitmusa:default:last",
        None,
        "bitmusa:default:orders:{account}",
    )
    mapper = session.pipeline.mapper("a")
    hash_key = "bitmusa:default:orders:a"

    async def deliver(at: int, account: str = "a", **fields: Any) -> None:
        result = mapper.feed(order_frame(**fields), at)
        assert isinstance(result, Mapped)
        event = {**result.event, "account": account}
        await sink.on_order(result.obj, event)  # type: ignore[arg-type]
        assert await sink.flush(5)

    # a quiet account with a done order first: its point never moves again, and must not
    # keep the other accounts' done orders from being let go
    await deliver(500, "b", order_id="Q1", amount="1", status="FILLED", filled="1", value="1")
    await deliver(1000, order_id="F1", amount="1", status="PARTIAL", filled="0.4", value="0.2")
    await deliver(1100, order_id="F2", amount="1", status="PARTIAL", filled="0.1", value="0.05")
    await deliver(2000, order_id="F1", amount="1", status="FILLED", filled="1", value="0.5")
    kept = await client.hgetall(hash_key)
    assert {k.decode(): orjson.loads(v)["order"]["status"] for k, v in kept.items()} == {
        "F1": "closed",
        "F2": "open",
    }
    # the next owner: F1 done (its fills are not brought back), F2 open at 0.1
    session.pipeline.reset("a")
    await worker._inherit("a", 2500)
    fills = session.pipeline.fills["a"]
    assert fills.finished("F1")
    assert fills.known("F2") == ((1, 1), (5, 2))
    assert set(session.pipeline.ledgers["a"].orders) == {"F2"}
    # once the resume point is ORDER_KEEP_MS past its receipt, a done order is let go
    await deliver(2000 + ORDER_KEEP_MS, order_id="F2", amount="1", status="PARTIAL",
                  filled="0.2", value="0.1")  # fmt: skip
    assert await client.hget(hash_key, "F1") is not None  # not yet past: >= the bound
    await deliver(2001 + ORDER_KEEP_MS, order_id="F2", amount="1", status="PARTIAL",
                  filled="0.3", value="0.15")  # fmt: skip
    assert await client.hget(hash_key, "F1") is None
    assert orjson.loads(await client.hget(hash_key, "F2"))["order"]["filled"] == 0.3
    assert await client.hget("bitmusa:default:orders:b", "Q1") is not None
    # a takeover long after lets go of what a previous owner left done behind it
    session.pipeline.reset("b")
    await worker._inherit("b", 500 + ORDER_KEEP_MS + 1)
    assert await client.hget("bitmusa:default:orders:b", "Q1") is None
    assert not session.pipeline.fills["b"].finished("Q1")  # too old to matter: not taken
    await sink.close()


def test_the_example_consumer_service_reads_the_stream_from_another_process(
    redis_server: RedisServer,
) -> None:
    async def write() -> None:
        sink = RedisSink(redis_server.url)
        plugins = PluginRegistry()
        plugins.register(sink, "redis-sink")
        host = Pipeline(plugins, command="test")
        sink.bind(host.report)
        host.start(["main"])
        filled = order_frame(
            "F9", status="FILLED", filled="10", value="5", event_time=1700000000000
        )
        for frame in (wallet_frame(), filled, filled):  # the fill twice: a handover overlap
            host.ingest("main", frame)
        await host.dispatcher.drain(5)
        await sink.flush(5)
        await host.stop()

    asyncio.run(write())
    example = Path(__file__).parent.parent / "examples" / "redis_consumer.py"
    run = subprocess.run(
        [sys.executable, str(example), "--redis", redis_server.url, "--until-idle"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    fills = [line for line in run.stdout.splitlines() if " fill " in line]
    assert fills == ["main fill XRP/USDT:USDT buy 10.0 @ 0.5"]  # once, though written twice


async def test_redis_restarted_the_sink_buffers_and_catches_up_with_no_loss(
    redis_server: RedisServer,
) -> None:
    import redis.asyncio as redis

    errors = Errors()
    # a small buffer, so that the outage outlasts it: the stream must wait, not drop
    sink = RedisSink(redis_server.url, maxlen=None, retry=0.1, max_buffer=50)
    plugins = PluginRegistry()
    plugins.register(sink, "redis-sink")
    plugins.register(errors, "errors")
    host = Pipeline(plugins, command="test", queue_size=40)
    sink.bind(host.report)
    host.start(["main"])
    sent = 0

    async def produce(count: int) -> None:  # as a socket reader does
        nonlocal sent
        for _ in range(count):
            host.ingest("main", order_frame(f"F{sent}", event_time=1700000000000 + sent))
            sent += 1
            if host.dispatcher.blocked:
                await host.dispatcher.writable()
            elif sent % 50 == 0:
                await asyncio.sleep(0.01)

    await produce(20)
    await host.dispatcher.drain(5)
    assert await sink.flush(5)
    redis_server.stop()  # Redis goes away while events keep coming
    producer = asyncio.get_running_loop().create_task(produce(300))
    deadline = asyncio.get_running_loop().time() + 10
    while not host.dispatcher.blocked:
        assert asyncio.get_running_loop().time() < deadline, sink.stats()
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.3)
    assert not producer.done()  # buffer and queue full: ingestion waits
    assert sent < 20 + 50 + 40 + 2
    assert sink.stats()["down"]
    redis_server.start()  # back, empty (no persistence): everything since must arrive
    await asyncio.wait_for(producer, 20)
    await host.dispatcher.drain(5)
    assert await sink.flush(15)
    await host.stop()
    c = redis.Redis.from_url(redis_server.url)
    got = await entries(c)
    await c.aclose()
    ids = [r["order"]["id"] for r in got if r["hook"] == "on_order"]
    assert ids[-300:] == [f"F{i}" for i in range(20, 320)]  # in order, none lost
    assert errors.kinds.count("sink_unavailable") == 1  # reported once per outage
    assert sink.stats()["outages"] == 1
    assert host.dispatcher.stats()["redis-sink"]["dropped"] == 0


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bitmusa_plugin", *args],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )


async def test_the_registry_holds_references_never_secrets(
    redis_server: RedisServer, client: Any
) -> None:
    env = dict(os.environ, MY_API="secret-api-value-1", MY_AUTH="secret-auth-value-1")
    at = ["--redis", redis_server.url]
    add = cli(
        "accounts",
        "add",
        "main",
        *at,
        "--api-key-env",
        "MY_API",
        "--auth-key-env",
        "MY_AUTH",
        env=env,
    )
    assert add.returncode == 0, add.stderr
    listed = cli("accounts", "list", *at, env=env)
    assert "main\t$MY_API $MY_AUTH" in listed.stdout
    dump = b"".join(v for v in (await client.hgetall("bitmusa:default:accounts")).values())
    assert b"secret" not in dump
    bad = cli("accounts", "add", "x", *at, env=env)
    assert bad.returncode == 2
    assert "either both environment-variable names or a credentials file" in bad.stderr
    assert cli("accounts", "remove", "main", *at).returncode == 0
    assert await client.hlen("bitmusa:default:accounts") == 0


N_ACCOUNTS = 30


def _worker(redis_url: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "bitmusa_plugin", "worker", "--redis", redis_url],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def _owners(client: Any) -> dict[str, str | None]:
    out = {}
    for i in range(N_ACCOUNTS):
        holder = await client.get(f"bitmusa:default:lease:acct{i}")
        out[f"acct{i}"] = holder.decode().rsplit(":", 1)[0] if holder else None
    return out


async def _wait(predicate: Any, timeout: float) -> float:
    start = time.monotonic()
    while True:
        if await predicate():
            return time.monotonic() - start
        assert time.monotonic() - start < timeout, "not reached in time"
        await asyncio.sleep(0.2)


def _quiet(client: Any) -> Any:
    """A condition: the event stream has not grown for a second (the sinks are done)."""
    seen: list[tuple[int, float]] = []

    async def check() -> bool:
        length, now = await client.xlen("bitmusa:events"), time.monotonic()
        if not seen or seen[-1][0] != length:
            seen.append((length, now))
        return now - seen[-1][1] >= 1.0

    return check


async def test_three_workers_share_thirty_accounts_and_survive_a_sigkill(
    redis_server: RedisServer, client: Any
) -> None:
    creds = {f"bench-api-{i:04d}": f"bench-auth-{i:04d}" for i in range(N_ACCOUNTS)}
    env = dict(os.environ)
    async with Simulator(event_interval=0.2, accounts=creds) as sim:
        for i, (api, auth) in enumerate(creds.items()):
            env[f"ACCT{i}_API"], env[f"ACCT{i}_AUTH"] = api, auth
            record = registry.AccountRecord(
                f"acct{i}", f"ACCT{i}_API", f"ACCT{i}_AUTH", None, sim.rest_url, sim.ws_url
            )
            await registry.add(client, "default", record)
        workers = [_worker(redis_server.url, env) for _ in range(2)]
        try:
            accounts = list(sim.accounts.values())

            def balanced(n: int) -> Any:
                async def check() -> bool:
                    held = Counter((await _owners(client)).values())
                    live = all(len(sim.live(a)) == 1 for a in accounts)
                    fair = sorted(held.values()) == [N_ACCOUNTS // n] * n
                    return live and None not in held and fair

                return check

            await _wait(balanced(2), 60)
            # a third worker joins: accounts move to it make-before-break, none goes dark
            workers.append(_worker(redis_server.url, env))
            dark: list[int] = []

            async def watch() -> None:
                while True:
                    dark.append(sum(1 for a in accounts if not sim.live(a)))
                    await asyncio.sleep(0.02)

            watcher = asyncio.get_running_loop().create_task(watch())
            await _wait(balanced(3), 60)
            watcher.cancel()
            assert len(dark) > 50
            assert max(dark) == 0, "an account had no live connection during the handover"
            # exactly one owner each: three distinct workers, and one connection per account
            owners = await _owners(client)
            assert len(set(owners.values())) == 3
            assert all(len(sim.live(a)) == 1 for a in accounts)
            shown = await asyncio.to_thread(cli, "worker", "status", "--redis", redis_server.url)
            assert "3 worker(s)" in shown.stdout
            assert shown.stdout.count("10 account(s)") == 3
            assert "30 account(s)" in shown.stdout
            assert "(unowned)" not in shown.stdout

            victim = workers[0]
            held = {w for w in owners.values() if w is not None}
            victim_id = next(w for w in held if w.endswith(f":{victim.pid}"))
            moved = [label for label, w in owners.items() if w == victim_id]
            snapshots_before = len(sim.snapshots)
            last_at_kill = await client.hgetall("bitmusa:default:last")
            killed_at_ms = int(time.time() * 1000)
            victim.send_signal(signal.SIGKILL)
            victim.wait(5)

            def gap_accounts(records: list[dict[str, Any]]) -> set[str]:
                return {
                    r["state"]["account"]
                    for r in records
                    if r["hook"] == "on_stream_state"
                    and r["state"]["status"] == "gap"
                    and r["state"]["until"] >= killed_at_ms
                }

            async def resumed() -> bool:
                now = await _owners(client)
                taken = all(now[label] not in (None, victim_id) for label in moved)
                live = all(len(sim.live(accounts[int(label[4:])])) == 1 for label in moved)
                return taken and live

            takeover = await _wait(resumed, 30)

            async def reported() -> bool:  # the gap states, through the new owners' sinks
                return set(moved) <= gap_accounts(await entries(client))

            with contextlib.suppress(AssertionError):
                await _wait(reported, 10)

            async def resynced() -> bool:
                # every taken-over account re-read its state (3 snapshots each; REST calls
                # wait their turn in the shared limiter) and delivers under its new fence
                if len(sim.snapshots) - snapshots_before < 3 * len(moved):
                    return False
                latest: dict[str, int] = {}
                for r in await entries(client):
                    event = r.get("event") or {}
                    if r.get("fence") is not None and event.get("account") in moved:
                        latest[event["account"]] = r["fence"]
                holders = await client.mget([f"bitmusa:default:lease:{la}" for la in moved])
                return all(
                    h is not None and latest.get(la) == int(h.decode().rsplit(":", 1)[1])
                    for la, h in zip(moved, holders, strict=True)
                )

            with contextlib.suppress(AssertionError):  # the assertions below say what failed
                await _wait(resynced, 30)
            sim.paused = True
            await _wait(_quiet(client), 10)  # what the sinks still hold is written
            records = await entries(client)
            gaps = gap_accounts(records)
            missing = set(moved) - gaps
            for label in sorted(missing):  # for the report: what the stream said instead
                said = [
                    (r["state"]["status"], r["state"]["since"], r["state"]["until"])
                    for r in records
                    if r["hook"] == "on_stream_state" and r["state"]["account"] == label
                ]
                print(label, killed_at_ms, said, last_at_kill.get(label.encode()))
            assert not missing
            assert len(sim.snapshots) - snapshots_before >= 3 * len(moved)
            # never a DELETE: the account's stream went on elsewhere
            assert all(a.deletes == 0 for a in accounts)
            # the events since the takeover carry the new owner's fencing token
            fences: dict[str, list[int]] = defaultdict(list)
            for r in records:
                event = r.get("event") or {}
                if r.get("fence") is not None and event.get("account"):
                    fences[event["account"]].append(r["fence"])
            for label in moved:
                holder = await client.get(f"bitmusa:default:lease:{label}")
                assert fences[label][-1] == int(holder.decode().rsplit(":", 1)[1])
                assert fences[label][-1] > min(fences[label])  # a later owner than the first

            # consumers on "another machine": every distinct event exactly once
            seen: list[str] = []

            async def reader(name: str) -> None:
                async for item in consume(
                    redis_server.url, "svc", consumer=name, block_ms=300, stop_when_idle=True
                ):
                    seen.append(item.id)

            await asyncio.gather(reader("c1"), reader("c2"))
            assert len(seen) == len(set(seen))
            assert set(seen) == {r["_id"] for r in records}
            # the handovers' overlaps wrote some events twice: the ids made them harmless
            assert len(records) > len(set(seen))
            print(
                f"takeover of {len(moved)} accounts in {takeover:.1f} s after SIGKILL; "
                f"{len(records)} entries, {len(set(seen))} distinct"
            )
            assert takeover < 15.0

            # an account removed from the registry is stopped, and nobody takes it again
            sim.paused = False
            await registry.remove(client, "default", "acct0")

            async def dropped() -> bool:
                return (await _owners(client))["acct0"] is None and not sim.live(accounts[0])

            await _wait(dropped, 10)
            await asyncio.sleep(2.5)  # a few ticks: still nobody's
            assert await dropped()
        finally:
            for proc in workers:
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
            for proc in workers:
                try:  # off the loop: the simulator answers the hand-backs' pings meanwhile
                    await asyncio.to_thread(proc.wait, 15)
                except subprocess.TimeoutExpired:
                    proc.kill()
    # a clean stop hands the leases back
    assert all(v is None for v in (await _owners(client)).values())


async def test_listen_with_redis_writes_every_event_to_the_stream(
    redis_server: RedisServer, client: Any
) -> None:
    async with Simulator(time_scale=60, event_interval=0.02) as sim:
        env = dict(
            os.environ, BITMUSA_API_KEY="demo-api-key-0001", BITMUSA_AUTH_KEY="demo-auth-key-0001"
        )
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bitmusa_plugin",
            "listen",
            "--output",
            "none",
            "--rest-url",
            sim.rest_url,
            "--ws-url",
            sim.ws_url,
            "--redis",
            redis_server.url,
            "--redis-stream",
            "bitmusa:{account}",
            env=env,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        await asyncio.sleep(3.0)
        sim.paused = True
        await asyncio.sleep(0.5)
        proc.send_signal(signal.SIGINT)
        _, err = await asyncio.wait_for(proc.communicate(), 15)
    assert proc.returncode == 0, err.decode()
    got = await entries(client, "bitmusa:default")  # one stream per account: {account}
    live = [f for f in sim.sent if f.conns and not f.garbage]
    events = [r for r in got if r["hook"] in ("on_order", "on_wallet", "on_position")]
    live_data = [orjson.loads(f.text)["data"] for f in live]
    assert [r["event"]["data"] for r in events if r["event"]["stream"] != "resync"] == live_data
    assert any(r["hook"] == "on_stream_state" for r in got)


async def test_a_stored_record_that_is_not_valid_is_left_out_with_a_warning(
    client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """A record written before its checks existed (a key typed where its variable's name
    goes): listing the registry leaves it out, says how to fix it, and never shows it."""
    good = registry.AccountRecord("alice", "ALICE_API", "ALICE_AUTH")
    await registry.add(client, "default", good)
    bad = orjson.dumps({"label": "carol", "api_key_env": "demo-api-0001", "auth_key_env": "X"})
    await client.hset(registry.key("default", "accounts"), "carol", bad)
    assert set(await registry.load(client, "default")) == {"alice"}
    assert "accounts remove carol" in caplog.text
    assert "demo-api-0001" not in caplog.text
