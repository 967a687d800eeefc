"""Delivery: every plugin gets every event in order, isolated from the others."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

from bitmusa_hookspecs import hookimpl
from bitmusa_plugin._engine.pipeline import Pipeline
from bitmusa_plugin._engine.plugins import PluginRegistry


def order_frame(n: int, **extra: Any) -> bytes:
    data = {
        "orderId": f"o{n}",
        "ticker": "XRPUSDT",
        "status": "TRADING",
        "amount": "1",
        "tradedAmount": "0",
        "price": "0.5",
        **extra,
    }
    return orjson.dumps({"data": data, "stream": "future_order", "eventTime": 1700000000000 + n})


class Recorder:
    """A well-behaved async plugin."""

    def __init__(self) -> None:
        self.orders: list[str] = []
        self.errors: list[dict[str, Any]] = []
        self.received_at: list[float] = []

    @hookimpl
    async def on_order(self, order: dict[str, Any]) -> None:
        self.orders.append(order["id"])
        self.received_at.append(time.monotonic())

    @hookimpl
    async def on_error(self, error: dict[str, Any]) -> None:
        self.errors.append(error)


class SyncRecorder:
    def __init__(self) -> None:
        self.orders: list[str] = []
        self.threads: set[str] = set()

    @hookimpl
    def on_order(self, order: dict[str, Any]) -> None:
        self.orders.append(order["id"])
        self.threads.add(threading.current_thread().name)


class RaisesEvery3rd:
    def __init__(self) -> None:
        self.calls = 0

    @hookimpl
    def on_order(self, order: dict[str, Any]) -> None:
        self.calls += 1
        if self.calls % 3 == 0:
            raise ValueError(f"boom on {order['id']}")


class Blocks:
    def __init__(self) -> None:
        self.release = threading.Event()
        self.seen: list[str] = []

    @hookimpl
    def on_order(self, order: dict[str, Any]) -> None:
        self.release.wait(10)
        self.seen.append(order["id"])


class NeverReturns:
    @hookimpl
    async def on_order(self, order: dict[str, Any]) -> None:
        await asyncio.Event().wait()


class Mutates:
    @hookimpl
    def on_order(self, order: dict[str, Any], event: dict[str, Any]) -> None:
        order["status"] = "hacked"
        order["info"]["ticker"] = "HACKED"
        event["account"] = "hacked"


class Inspector:
    def __init__(self) -> None:
        self.seen: list[tuple[str, str, str]] = []

    @hookimpl
    def on_order(self, order: dict[str, Any], event: dict[str, Any]) -> None:
        self.seen.append((order["status"], order["info"]["ticker"], event["account"]))


class EventOnly:
    def __init__(self) -> None:
        self.accounts: list[str] = []

    @hookimpl
    def on_order(self, event: dict[str, Any]) -> None:
        self.accounts.append(event["account"])


async def make_host(plugins: dict[str, object], **kw: Any) -> Pipeline:
    ph = PluginRegistry()
    for name, plugin in plugins.items():
        assert ph.register(plugin, name).status == "loaded"
    host = Pipeline(ph, command="test", **kw)
    host.start(["acct"])
    return host


@pytest.fixture
async def stop_hosts() -> AsyncIterator[list[Pipeline]]:
    hosts: list[Pipeline] = []
    yield hosts
    for host in hosts:
        await host.stop(timeout=0.2)


async def test_raising_plugin_does_not_affect_others(stop_hosts: list[Pipeline]) -> None:
    good, sync_good, bad = Recorder(), SyncRecorder(), RaisesEvery3rd()
    host = await make_host({"bad": bad, "good": good, "sync-good": sync_good})
    stop_hosts.append(host)
    for n in range(30):
        host.ingest("acct", order_frame(n))
    assert await host.dispatcher.drain(5)
    expected = [f"o{n}" for n in range(30)]
    assert good.orders == expected
    assert sync_good.orders == expected
    plugin_errors = [e for e in good.errors if e["kind"] == "plugin_error"]
    assert len(plugin_errors) == 10
    assert all(e["plugin"] == "bad" for e in plugin_errors)
    assert host.dispatcher.stats()["bad"]["errors"] == 10
    assert host.errors["plugin_error"] == 10
    assert sync_good.threads == {"bitmusa-plugin:sync-good"}  # off the event loop


async def test_blocking_plugin_delays_only_itself(stop_hosts: list[Pipeline]) -> None:
    good, blocker = Recorder(), Blocks()
    host = await make_host({"blocker": blocker, "good": good}, slow_after=0.1)
    stop_hosts.append(host)
    start = time.monotonic()
    for n in range(20):
        host.ingest("acct", order_frame(n))
        await asyncio.sleep(0.005)
    deadline = time.monotonic() + 2
    while len(good.orders) < 20 and time.monotonic() < deadline:  # noqa: ASYNC110 (polls a plain list)
        await asyncio.sleep(0.01)
    assert good.orders == [f"o{n}" for n in range(20)]
    assert max(good.received_at) - start < 1.0  # while the blocker is still stuck
    assert blocker.seen == []
    await asyncio.sleep(0.2)
    assert any(e["kind"] == "plugin_slow" and e["plugin"] == "blocker" for e in good.errors)
    blocker.release.set()
    assert await host.dispatcher.drain(5)
    assert blocker.seen == [f"o{n}" for n in range(20)]  # late, but all, in order


async def test_no_plugin_can_mutate_what_another_receives(stop_hosts: list[Pipeline]) -> None:
    first, mutator, last = Inspector(), Mutates(), Inspector()
    host = await make_host({"first": first, "mutator": mutator, "last": last})
    stop_hosts.append(host)
    for n in range(5):
        host.ingest("acct", order_frame(n))
    assert await host.dispatcher.drain(5)
    assert first.seen == last.seen == [("open", "XRPUSDT", "acct")] * 5


async def test_handlers_take_any_subset_of_arguments(stop_hosts: list[Pipeline]) -> None:
    plugin = EventOnly()
    host = await make_host({"event-only": plugin})
    stop_hosts.append(host)
    host.ingest("acct", order_frame(1))
    assert await host.dispatcher.drain(5)
    assert plugin.accounts == ["acct"]


async def test_raising_on_error_handler_is_not_re_dispatched(stop_hosts: list[Pipeline]) -> None:
    class BadErrorHandler:
        calls = 0

        @hookimpl
        def on_error(self, error: dict[str, Any]) -> None:
            BadErrorHandler.calls += 1
            raise RuntimeError("handler of handlers")

    host = await make_host({"bad-on-error": BadErrorHandler()})
    stop_hosts.append(host)
    host.ingest("acct", b"garbage")
    assert await host.dispatcher.drain(5)
    await asyncio.sleep(0.05)
    assert BadErrorHandler.calls == 1
    assert host.dispatcher.stats()["bad-on-error"]["errors"] == 1


async def test_close_finishes_promptly_with_a_stuck_plugin() -> None:
    host = await make_host({"stuck": NeverReturns(), "blocker": Blocks()})
    host.ingest("acct", order_frame(1))
    await asyncio.sleep(0.01)
    start = time.monotonic()
    await host.stop(timeout=0.3)
    assert time.monotonic() - start < 1.5


# -- delivery policies ------------------------------------------------------------------


class Gated:
    """Takes each call only once let through; records what it got, in order."""

    def __init__(self, policy: str | None = None) -> None:
        if policy is not None:
            self.bitmusa_delivery = policy
        self.gate = asyncio.Event()
        self.calls: list[tuple[str, Any]] = []

    async def _take(self, hook: str, item: Any) -> None:
        await self.gate.wait()
        self.calls.append((hook, item))

    @hookimpl
    async def on_order(self, order: dict[str, Any], event: dict[str, Any]) -> None:
        await self._take("on_order", (("order", order["id"]), event["eventTime"], order["filled"]))

    @hookimpl
    async def on_wallet(self, balance: dict[str, Any], event: dict[str, Any]) -> None:
        await self._take("on_wallet", (("balance",), event["eventTime"], balance["free"]["USDT"]))

    @hookimpl
    async def on_position(self, position: dict[str, Any], event: dict[str, Any]) -> None:
        key = ("position", position["symbol"], position["side"])
        await self._take("on_position", (key, event["eventTime"], position["contracts"]))

    @hookimpl
    async def on_stream_state(self, state: dict[str, Any]) -> None:
        await self._take("on_stream_state", state["reason"])

    @hookimpl
    async def on_error(self, error: dict[str, Any]) -> None:
        await self._take("on_error", error)

    def states(self) -> list[tuple[Any, int, Any]]:
        return [
            item for hook, item in self.calls if hook in ("on_order", "on_wallet", "on_position")
        ]


def mixed_stream(n: int) -> list[bytes | str]:
    """Order, wallet and position updates of 10 orders, one balance and 3 positions, in
    stream order (eventTime = 1700000000000 + index), each a newer state of its object."""
    from bitmusa_plugin.testing import position_frame, wallet_frame

    frames: list[bytes | str] = []
    for i in range(n):
        t = 1_700_000_000_000 + i
        if i % 5 == 3:
            frames.append(wallet_frame(free=str(1000 + i), event_time=t))
        elif i % 5 == 4:
            ticker = ("BTCUSDT", "ETHUSDT", "XRPUSDT")[i % 3]
            frames.append(position_frame(ticker, amount=str(i + 1), event_time=t))
        else:
            frames.append(order_frame(i, orderId=f"o{i % 10}", amount=str(i + 1)))
    return frames


async def state_stream(frames: list[bytes | str]) -> list[tuple[Any, int, Any]]:
    """What a lossless plugin sees of ``frames``: (object key, eventTime, value)."""
    from bitmusa_plugin.testing import replay_async

    seen = Gated()
    seen.gate.set()
    await replay_async(seen, frames, account="acct")
    return seen.states()


def stream_state(host: Pipeline, reason: str) -> None:
    host.stream_state(
        {"account": "acct", "status": "connected", "since": None, "until": None, "reason": reason}
    )


async def test_latest_sees_every_call_while_it_keeps_up(stop_hosts: list[Pipeline]) -> None:
    gated = Gated()
    host = await make_host({"gated": gated}, conflate_after=500)
    stop_hosts.append(host)
    frames = mixed_stream(400)  # a backlog of 400 (< 500): not "behind" yet
    for frame in frames:
        host.ingest("acct", frame)
    gated.gate.set()
    assert await host.dispatcher.drain(5)
    assert gated.states() == await state_stream(frames)
    stats = host.dispatcher.stats()["gated"]
    assert (stats["policy"], stats["merged"], stats["delivered"]) == ("latest", 0, 400)


async def test_latest_merges_states_when_behind_and_keeps_every_final_state(
    stop_hosts: list[Pipeline],
) -> None:
    gated, recorder = Gated(), Gated("all")
    recorder.gate.set()
    host = await make_host({"gated": gated, "recorder": recorder}, conflate_after=20)
    stop_hosts.append(host)
    frames = mixed_stream(2000)
    for i, frame in enumerate(frames):
        host.ingest("acct", frame)
        if i % 100 == 0:
            stream_state(host, f"state {i}")  # events are never merged
        if i % 7 == 0:
            await asyncio.sleep(0)  # the lossless recorder keeps up
    gated.gate.set()
    assert await host.dispatcher.drain(10)

    published = await state_stream(frames)
    got = gated.states()
    # a subsequence of the stream, in stream order: never a state older than one seen
    times = [t for _, t, _ in got]
    assert times == sorted(times)
    assert len(set(times)) == len(times)
    assert set(got) <= set(published)
    # the final state of every object
    final = {key: (t, value) for key, t, value in published}
    assert {key: (t, value) for key, t, value in got} == final
    # events all delivered, in order; the lossless plugin got everything
    reasons = [item for hook, item in gated.calls if hook == "on_stream_state"]
    assert reasons == [f"state {i}" for i in range(0, 2000, 100)]
    assert recorder.states() == published
    stats = host.dispatcher.stats()["gated"]
    assert stats["merged"] > 0
    # every call published to the plugin is accounted for
    assert stats["published"] == stats["delivered"] + stats["merged"] + stats["queued"]
    # the backlog stayed bounded by the live objects (14) and the unmerged events (20)
    assert stats["peak"] <= 20 + 14 + 20
    behind = [item for hook, item in recorder.calls if hook == "on_error"]
    assert [(e["kind"], e["plugin"]) for e in behind] == [("plugin_behind", "gated")]


async def test_latest_summarises_an_error_flood_when_it_catches_up(
    stop_hosts: list[Pipeline],
) -> None:
    gated = Gated()
    host = await make_host({"gated": gated}, conflate_after=10, error_burst=5)
    stop_hosts.append(host)
    for n in range(10):
        host.ingest("acct", order_frame(n))  # behind now
    for _ in range(300):
        host.ingest("acct", b"not json")
    host.ingest("acct", order_frame(99))
    gated.gate.set()
    assert await host.dispatcher.drain(5)
    errors = [item for hook, item in gated.calls if hook == "on_error"]
    assert {e["kind"] for e in errors} == {"plugin_behind", "malformed_json"}
    one_by_one = [e for e in errors if "count" not in e]
    summaries = [e for e in errors if "count" in e]
    assert len(one_by_one) <= 5  # the burst it gets one by one (the episode report too)
    # the rest in one summary, once it caught up, after everything else
    assert len(summaries) == 1
    assert gated.calls[-1] == ("on_error", summaries[0])
    rest = 300 - (len(one_by_one) - 1)
    assert summaries[0]["count"] == rest
    assert summaries[0]["message"] == f"{rest} more malformed_json while plugin 'gated' was behind"
    assert ("order", "o99") in [key for key, _, _ in gated.states()]


async def test_all_makes_ingestion_wait_and_delivers_every_call(stop_hosts: list[Pipeline]) -> None:
    gated = Gated("all")
    host = await make_host({"gated": gated}, queue_size=50)
    stop_hosts.append(host)
    frames = mixed_stream(300)
    progress = 0

    async def produce() -> None:  # what a socket reader does
        nonlocal progress
        for frame in frames:
            host.ingest("acct", frame)
            progress += 1
            if host.dispatcher.blocked:
                await host.dispatcher.writable()

    producer = asyncio.get_running_loop().create_task(produce())
    deadline = time.monotonic() + 5
    while not host.dispatcher.blocked and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.001)
    await asyncio.sleep(0.05)
    assert host.dispatcher.blocked
    assert 50 <= progress <= 51  # stopped at the bound (one call is in the handler)
    assert not producer.done()
    gated.gate.set()
    await asyncio.wait_for(producer, 5)
    assert await host.dispatcher.drain(5)
    assert gated.states() == await state_stream(frames)
    stats = host.dispatcher.stats()["gated"]
    assert stats["blocked_episodes"] >= 1
    assert (stats["merged"], stats["dropped"], stats["delivered"]) == (0, 0, 300)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_a_stalled_lossless_plugin_is_reported_and_stops_holding_the_stream(
    stop_hosts: list[Pipeline],
) -> None:
    class Hung:
        bitmusa_delivery = "all"

        @hookimpl
        async def on_order(self) -> None:
            await asyncio.Event().wait()

        @hookimpl
        async def on_stream_state(self) -> None:
            await asyncio.Event().wait()

    clock = FakeClock()
    hung, good = Hung(), Gated("all")
    good.gate.set()
    host = await make_host(
        {"hung": hung, "good": good},
        queue_size=20,
        conflate_after=10,
        slow_after=0,
        stall_after=30,
        monotonic=clock,
    )
    stop_hosts.append(host)
    for n in range(25):
        host.ingest("acct", order_frame(n, orderId=f"o{n % 5}"))
        await asyncio.sleep(0)
    assert host.dispatcher.blocked  # the hung plugin holds ingestion...
    clock.now += 29
    host.dispatcher.check(clock())
    assert host.dispatcher.blocked  # ...for up to the bound
    clock.now += 2
    host.dispatcher.check(clock())
    assert not host.dispatcher.blocked  # then the stream goes on without it
    for n in range(200):
        host.ingest("acct", order_frame(100 + n, orderId=f"o{n % 5}"))
        stream_state(host, f"s{n}")  # 200 events: 20 fit its bound, the rest are dropped
    await asyncio.sleep(0.05)
    assert await host.dispatcher.drain(0.1) is False  # the hung plugin still holds calls
    stats = host.dispatcher.stats()["hung"]
    assert (stats["policy"], stats["stalled"]) == ("latest", True)
    # 425 calls: 1 in the handler; the orders' queued states merged into one per order (5),
    # 20 events within its bound, the other 180 dropped and counted
    assert stats["published"] == 425
    assert (stats["queued"], stats["merged"], stats["dropped"]) == (25, 219, 180)
    kinds = [(e["kind"], e["plugin"]) for hook, e in good.calls if hook == "on_error"]
    assert kinds.count(("plugin_stalled", "hung")) == 1
    assert kinds.count(("queue_overflow", "hung")) == 1  # once per episode
    assert len([1 for hook, _ in good.calls if hook == "on_order"]) == 225  # the good one: all


async def test_on_idle_comes_once_per_burst_after_the_queue_drained(
    stop_hosts: list[Pipeline],
) -> None:
    class Batcher:
        def __init__(self) -> None:
            self.orders = 0
            self.idle_at: list[int] = []

        @hookimpl
        def on_order(self) -> None:
            self.orders += 1

        @hookimpl
        def on_idle(self) -> None:
            self.idle_at.append(self.orders)

    batcher = Batcher()
    host = await make_host({"batcher": batcher})
    stop_hosts.append(host)
    for n in range(1000):
        host.ingest("acct", order_frame(n))
    assert await host.dispatcher.drain(5)
    host.ingest("acct", order_frame(1000))
    assert await host.dispatcher.drain(5)
    await asyncio.sleep(0.01)
    assert batcher.idle_at == [1000, 1001]  # after each burst, never while calls waited


def test_replay_gives_a_latest_plugin_every_call() -> None:
    from bitmusa_plugin.testing import replay

    plugin = Gated()  # latest, but replay is offline: nothing is merged
    plugin.gate.set()
    frames = [order_frame(n, orderId="same", amount=str(n + 1)) for n in range(3000)]
    replay(plugin, frames, account="acct")
    assert len(plugin.states()) == 3000


@pytest.mark.parametrize("behind", [False, True], ids=["keeping-up", "merging"])
async def test_a_mark_runs_when_the_plugins_queue_reaches_it_not_before(
    stop_hosts: list[Pipeline], behind: bool
) -> None:
    # The worker's sink learns this way when a gap's records are all in its hands: a mark
    # must run after every call published before it and before any published after, also
    # while a ``latest`` plugin is behind and merging, and only for the plugin it names.
    gated, sync_recorder = Gated(), SyncRecorder()
    host = await make_host(
        {"gated": gated, "sync": sync_recorder}, conflate_after=5 if behind else 1000
    )
    stop_hosts.append(host)
    reached: list[tuple[str, int]] = []
    for n in range(20):
        host.ingest("acct", order_frame(n, orderId=f"o{n % 3}", amount="100", tradedAmount=str(n)))
        if n == 9:
            dispatcher = host.dispatcher
            dispatcher.mark("gated", lambda: reached.append(("gated", len(gated.calls))))
            dispatcher.mark("sync", lambda: reached.append(("sync", len(sync_recorder.orders))))
    for _ in range(500):  # the sync plugin's thread takes its calls, then its mark runs
        if reached:
            break
        await asyncio.sleep(0.01)
    [(name, seen_sync)] = reached  # after its calls before the mark (merged: fewer), none after
    assert name == "sync"
    assert seen_sync <= 10 if behind else seen_sync == 10
    assert ("gated", 0) not in reached  # the gated plugin took nothing: nor did its mark run
    gated.gate.set()
    assert await host.dispatcher.drain(5)
    # the mark ran between the calls published before it and those published after (a
    # state merged into a newer one is delivered at the newer one's place)
    [(_, seen)] = [r for r in reached if r[0] == "gated"]
    times = [item[1] for hook, item in gated.calls if hook == "on_order"]
    first_after = len([c for c in gated.calls[:seen] if c[0] == "on_order"])
    assert all(at <= 1700000000009 for at in times[:first_after])
    assert all(at > 1700000000009 for at in times[first_after:])
    assert times[first_after:]  # and something came after it
    assert [r[0] for r in reached] == ["sync", "gated"]
    stats = host.dispatcher.stats()["gated"]
    assert stats["merged"] > 0 if behind else stats["merged"] == 0
    assert stats["published"] == stats["delivered"] + stats["merged"]  # marks are not calls
    called: list[int] = []
    host.dispatcher.mark("nobody", lambda: called.append(1))  # nothing was published to it
    assert called == [1]
