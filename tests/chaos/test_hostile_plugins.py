"""Hostile plugins in live runs, beside well-behaved ones.

The simulator pings every connection and drops one whose pong is late (as exchanges do), so
a handler that blocked the event loop would cost the connection. Every count asserted here
is what the delivery policies guarantee (docs/plugins.md), whatever the scheduling.
"""

from __future__ import annotations

import asyncio
import statistics
import threading
import time
from collections import Counter
from typing import Any

import orjson

from bitmusa_hookspecs import hookimpl
from bitmusa_plugin._core import machine as lc
from bitmusa_plugin._core.mapping import Mapped, Mapper
from bitmusa_plugin._engine.pipeline import Pipeline
from bitmusa_plugin._engine.plugins import PluginRegistry
from bitmusa_plugin._engine.secrets import Credentials
from bitmusa_plugin._engine.stream import AccountConfig, AccountStream, Heartbeat
from bitmusa_plugin.simulator import DEMO_API_KEY, DEMO_AUTH_KEY, Simulator

CONFLATE_AFTER = 100  # small, so that falling behind comes within the run
RUN_SECONDS = 8.0


class Raiser:
    """Raises on every 7th event it gets."""

    def __init__(self) -> None:
        self.seen = 0

    def _event(self) -> None:
        self.seen += 1
        if self.seen % 7 == 0:
            raise RuntimeError(f"event {self.seen}: every 7th fails")

    @hookimpl
    async def on_order(self) -> None:
        self._event()

    @hookimpl
    async def on_wallet(self) -> None:
        self._event()

    @hookimpl
    async def on_position(self) -> None:
        self._event()


class Blocker:
    """A sync plugin that blocks its thread for 5 s on every event."""

    def __init__(self) -> None:
        self.calls = 0
        self.release = threading.Event()

    def _block(self) -> None:
        self.calls += 1
        self.release.wait(5.0)

    @hookimpl
    def on_order(self) -> None:
        self._block()

    @hookimpl
    def on_wallet(self) -> None:
        self._block()

    @hookimpl
    def on_position(self) -> None:
        self._block()


class Hanger:
    """An async plugin whose first call never returns."""

    def __init__(self) -> None:
        self.calls = 0

    async def _hang(self) -> None:
        self.calls += 1
        await asyncio.Event().wait()

    @hookimpl
    async def on_order(self) -> None:
        await self._hang()

    @hookimpl
    async def on_wallet(self) -> None:
        await self._hang()

    @hookimpl
    async def on_position(self) -> None:
        await self._hang()


class Mutator:
    """Vandalises everything it receives, nested containers included."""

    def __init__(self) -> None:
        self.calls = 0

    def _wreck(self, obj: dict[str, Any], event: dict[str, Any]) -> None:
        self.calls += 1
        for value in list(obj.values()):
            if isinstance(value, dict):
                value.clear()
                value["wrecked"] = True
            elif isinstance(value, list):
                value.clear()
        obj.clear()
        obj["wrecked"] = True
        event["data"] = None
        event["stream"] = "wrecked"

    @hookimpl
    async def on_order(self, order: dict[str, Any], event: dict[str, Any]) -> None:
        self._wreck(order, event)

    @hookimpl
    def on_wallet(self, balance: dict[str, Any], event: dict[str, Any]) -> None:
        self._wreck(balance, event)  # a sync one too: it runs in its own thread

    @hookimpl
    async def on_position(self, position: dict[str, Any], event: dict[str, Any]) -> None:
        self._wreck(position, event)


class Good:
    """Records what it gets, when, and a serialised copy taken on receipt. Lossless, as a
    recorder is: every call, in order."""

    bitmusa_delivery = "all"

    def __init__(self) -> None:
        self.received: list[tuple[float, str, bytes, dict[str, Any]]] = []
        self.errors: list[dict[str, Any]] = []
        self.states: list[str] = []

    def _take(self, hook: str, obj: dict[str, Any], event: dict[str, Any]) -> None:
        if event["stream"] != "resync":
            self.received.append((time.monotonic(), hook, orjson.dumps(event["data"]), obj))

    @hookimpl
    async def on_order(self, order: dict[str, Any], event: dict[str, Any]) -> None:
        self._take("on_order", order, event)

    @hookimpl
    async def on_wallet(self, balance: dict[str, Any], event: dict[str, Any]) -> None:
        self._take("on_wallet", balance, event)

    @hookimpl
    async def on_position(self, position: dict[str, Any], event: dict[str, Any]) -> None:
        self._take("on_position", position, event)

    @hookimpl
    async def on_error(self, error: dict[str, Any]) -> None:
        self.errors.append(error)

    @hookimpl
    async def on_stream_state(self, state: dict[str, Any]) -> None:
        self.states.append(state["status"])


async def test_four_hostile_plugins_at_once_cost_the_good_one_nothing() -> None:
    good, raiser, blocker, hanger, mutator = Good(), Raiser(), Blocker(), Hanger(), Mutator()
    plugins = PluginRegistry()
    # the good plugin last: it shares nothing with the vandal registered before it
    for name, plugin in [
        ("mutator", mutator),
        ("raiser", raiser),
        ("blocker", blocker),
        ("hanger", hanger),
        ("good", good),
    ]:
        plugins.register(plugin, name)
    async with Simulator(event_interval=0.01, seed=21, server_ping=(0.2, 0.3)) as sim:
        host = Pipeline(plugins, command="hostile", conflate_after=CONFLATE_AFTER, slow_after=0.5)
        host.start(["acct"])
        config = AccountConfig(
            "acct", Credentials(DEMO_API_KEY, DEMO_AUTH_KEY), sim.rest_url, sim.ws_url
        )
        # side_wait=0: the scenario's orders are another client's, and learning their sides
        # (test_sides.py) holds each one's frames while the wallet's flow on: this test
        # compares the whole sequence, frame by frame, with what the simulator sent
        stream = AccountStream(
            config, host, heartbeat=Heartbeat(0.2, 0.4), open_timeout=2.0, side_wait=0
        )
        task = asyncio.get_running_loop().create_task(stream.run())
        await asyncio.sleep(RUN_SECONDS)
        sim.paused = True
        await asyncio.sleep(0.2)
        blocked_calls = blocker.calls  # before it is released at the end
        stream.stop()
        result = await asyncio.wait_for(task, 5)
        blocker.release.set()
        await host.dispatcher.drain(2.0)  # the blocker catches up; the hanger never does
        stats = host.dispatcher.stats()
        stopping = time.monotonic()
        await host.stop(timeout=1.0)  # the hung plugin cannot hold shutdown hostage
        stop_seconds = time.monotonic() - stopping
    assert result == lc.Finish(False, "stopped")

    # the connection lived through it all: every server ping answered, one connection
    assert sim.pong_timeouts == 0
    assert sim.connections_opened == 1
    assert "gap" not in good.states

    # the good plugin got every live event, in order, unmodified
    sent = [f for f in sim.sent if f.conns and not f.garbage]
    assert len(sent) > 200
    assert [data for _, _, data, _ in good.received] == [
        orjson.dumps(orjson.loads(f.text)["data"]) for f in sent
    ]
    reference = Mapper("acct")
    for (_, hook, _, obj), frame in zip(good.received, sent, strict=True):
        mapped = reference.feed(frame.text, 0)
        assert isinstance(mapped, Mapped)
        assert mapped.hook == hook
        expected = dict(mapped.obj)
        assert obj == expected, (obj, expected)  # nothing the vandal did reached it
    # ...and was never held back by the blocker's 5-second calls
    latency_ms = [(at - f.at) * 1000 for (at, *_), f in zip(good.received, sent, strict=True)]
    p50 = statistics.median(latency_ms)
    p99 = sorted(latency_ms)[int(0.99 * (len(latency_ms) - 1))]
    print(f"good plugin: {len(sent)} events, latency p50 {p50:.2f} ms, p99 {p99:.2f} ms")
    assert max(latency_ms) < 2500.0  # half a blocked call: it never waited for one

    # each hostile plugin's trouble is reported, by kind and by name
    reported = Counter((e["plugin"], e["kind"]) for e in good.errors if e["plugin"])
    assert reported[("raiser", "plugin_error")] == raiser.seen // 7 == stats["raiser"]["errors"]
    # objects that changed during the run: what a plugin that fell behind keeps one state of
    objects = {_object_key(f.text) for f in sent}
    for name, calls, in_handler in (("blocker", blocked_calls, 0), ("hanger", hanger.calls, 1)):
        assert 1 <= reported[(name, "plugin_slow")] <= calls  # once per slow call at most
        assert reported[(name, "plugin_behind")] == 1  # one episode, reported once
        plugin = stats[name]
        assert plugin["merged"] > 0
        assert plugin["dropped"] == 0  # nothing is lost under 'latest': it merges
        # every call published to it is delivered, merged, summarised or still queued
        assert (
            plugin["published"]
            == (plugin["delivered"] + plugin["merged"] + plugin["summarised"] + plugin["queued"])
            + in_handler
            + plugin["errors"]
        )
        # bounded by one state per object (plus the events, which are never merged)
        assert plugin["peak"] <= CONFLATE_AFTER + len(objects) + 20
    assert stats["blocker"]["queued"] == 0  # released: it caught up, final states included
    assert hanger.calls == 1
    assert blocked_calls <= 2  # five seconds each
    assert mutator.calls == stats["mutator"]["delivered"] >= 100
    assert stats["mutator"]["errors"] == 0
    assert stop_seconds < 2.0


def _object_key(text: str) -> tuple[str, ...]:
    frame = orjson.loads(text)
    data = frame["data"]
    if frame["stream"] == "future_order":
        return ("order", data["orderId"])
    if frame["stream"] == "future_position":
        return ("position", data["ticker"], data["position"])
    return ("balance",)


class HungRecorder:
    """A lossless plugin whose first call never returns."""

    bitmusa_delivery = "all"

    def __init__(self) -> None:
        self.calls = 0

    @hookimpl
    async def on_order(self) -> None:
        self.calls += 1
        await asyncio.Event().wait()


async def test_a_hung_lossless_plugin_is_released_after_the_bound_and_the_stream_goes_on() -> None:
    good, hung = Good(), HungRecorder()
    plugins = PluginRegistry()
    plugins.register(hung, "hung")
    plugins.register(good, "good")
    async with Simulator(event_interval=0.005, seed=22) as sim:
        host = Pipeline(plugins, command="hostile", queue_size=100, stall_after=1.5)
        host.start(["acct"])
        config = AccountConfig(
            "acct", Credentials(DEMO_API_KEY, DEMO_AUTH_KEY), sim.rest_url, sim.ws_url
        )
        # side_wait=0: the scenario's orders are another client's, and learning their sides
        # (test_sides.py) holds each one's frames while the wallet's flow on: this test
        # compares the whole sequence, frame by frame, with what the simulator sent
        stream = AccountStream(
            config, host, heartbeat=Heartbeat(0.2, 0.4), open_timeout=2.0, side_wait=0
        )
        task = asyncio.get_running_loop().create_task(stream.run())
        held = False
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # the hung plugin holds the stream...
            held = held or host.dispatcher.blocked
            if held and not host.dispatcher.blocked:
                break  # ...until the bound, then lets go
            await asyncio.sleep(0.01)
        released_at = len(good.received)
        await asyncio.sleep(1.0)  # and the stream goes on
        sim.paused = True
        await asyncio.sleep(0.2)
        stream.stop()
        await asyncio.wait_for(task, 5)
        await host.dispatcher.drain(1.0)
        stats = host.dispatcher.stats()
        await host.stop(timeout=0.5)
    assert held, "the lossless plugin never held the stream"
    assert len(good.received) > released_at + 20  # events flowed after the release
    reported = Counter((e["plugin"], e["kind"]) for e in good.errors if e["plugin"])
    assert reported[("hung", "plugin_stalled")] == 1
    assert stats["hung"]["stalled"]
    assert stats["hung"]["policy"] == "latest"
    # the good plugin (lossless) got every frame written to a live connection, in order,
    # exactly once: holding the stream lost nothing (no outage with the default server)
    sent = [f for f in sim.sent if f.conns and not f.garbage]
    assert [data for _, _, data, _ in good.received] == [
        orjson.dumps(orjson.loads(f.text)["data"]) for f in sent
    ]
    assert "gap" not in good.states
