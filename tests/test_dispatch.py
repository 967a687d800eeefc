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
from bitmusa_plugin.host import Host
from bitmusa_plugin.plugins import PluginHost


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


async def make_host(plugins: dict[str, object], **kw: Any) -> Host:
    ph = PluginHost()
    for name, plugin in plugins.items():
        assert ph.register(plugin, name).status == "loaded"
    host = Host(ph, command="test", **kw)
    host.start(["acct"])
    return host


@pytest.fixture
async def stop_hosts() -> AsyncIterator[list[Host]]:
    hosts: list[Host] = []
    yield hosts
    for host in hosts:
        await host.stop(timeout=0.2)


async def test_raising_plugin_does_not_affect_others(stop_hosts: list[Host]) -> None:
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


async def test_blocking_plugin_delays_only_itself(stop_hosts: list[Host]) -> None:
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


async def test_full_queue_drops_oldest_and_reports_it(stop_hosts: list[Host]) -> None:
    good, stuck = Recorder(), NeverReturns()
    host = await make_host({"stuck": stuck, "good": good}, queue_size=5)
    stop_hosts.append(host)
    for n in range(12):
        host.ingest("acct", order_frame(n))
        await asyncio.sleep(0)
    assert good.orders == [f"o{n}" for n in range(12)]
    stats = host.dispatcher.stats()["stuck"]
    # one call is running forever, five wait, the other six were dropped (oldest first)
    assert (stats["queued"], stats["dropped"]) == (5, 6)
    overflow = [e for e in good.errors if e["kind"] == "queue_overflow"]
    assert len(overflow) == 1  # once per episode, not once per call
    assert overflow[0]["plugin"] == "stuck"


async def test_no_plugin_can_mutate_what_another_receives(stop_hosts: list[Host]) -> None:
    first, mutator, last = Inspector(), Mutates(), Inspector()
    host = await make_host({"first": first, "mutator": mutator, "last": last})
    stop_hosts.append(host)
    for n in range(5):
        host.ingest("acct", order_frame(n))
    assert await host.dispatcher.drain(5)
    assert first.seen == last.seen == [("open", "XRPUSDT", "acct")] * 5


async def test_handlers_take_any_subset_of_arguments(stop_hosts: list[Host]) -> None:
    plugin = EventOnly()
    host = await make_host({"event-only": plugin})
    stop_hosts.append(host)
    host.ingest("acct", order_frame(1))
    assert await host.dispatcher.drain(5)
    assert plugin.accounts == ["acct"]


async def test_raising_on_error_handler_is_not_re_dispatched(stop_hosts: list[Host]) -> None:
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
