"""The Session, the one way in: what it owns, what it shares, and how it ends.

Against the simulator over loopback sockets; the stream's own behaviour (gaps, rotation,
resync) is tested in test_stream.py, through the same Session.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from typing import Any

import pytest

from bitmusa_hookspecs import hookimpl
from bitmusa_plugin import AccountConfig, Credentials, DeliveryOptions, Session
from bitmusa_plugin._core import machine as lc
from bitmusa_plugin._engine.stream import AccountStream, Heartbeat
from bitmusa_plugin.simulator import DEMO_API_KEY, DEMO_AUTH_KEY, Simulator

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
BEAT = Heartbeat(2.0, 10.0)
SECOND = ("second-api-key-000000", "second-auth-key-000000")


class Lifecycle:
    """Records the hooks that frame a run, and the stream states, in order."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    @hookimpl
    def on_startup(self, context: dict[str, Any]) -> None:
        self.calls.append(("on_startup", list(context["accounts"])))

    @hookimpl
    def on_stream_state(self, state: dict[str, Any]) -> None:
        self.calls.append(("state", (state["account"], state["status"])))

    @hookimpl
    def on_shutdown(self) -> None:
        self.calls.append(("on_shutdown", None))

    def statuses(self, account: str) -> list[str]:
        return [v[1] for k, v in self.calls if k == "state" and v[0] == account]


class HungLossless:
    """A lossless plugin that never returns from its first order."""

    bitmusa_delivery = "all"

    @hookimpl
    async def on_order(self) -> None:
        await asyncio.Event().wait()


pytestmark = pytest.mark.bitmusa_simulator(
    event_interval=0.01, seed=11, accounts={DEMO_API_KEY: DEMO_AUTH_KEY, SECOND[0]: SECOND[1]}
)


def config(
    sim: Simulator, label: str = "acct", keys: tuple[str, str] | None = None
) -> AccountConfig:
    api, auth = keys or (DEMO_API_KEY, DEMO_AUTH_KEY)
    return AccountConfig(label, Credentials(api, auth), sim.rest_url, sim.ws_url)


def session(plugins: list[object], **kwargs: Any) -> Session:
    kwargs.setdefault("rest_rate", (1000, 60_000))  # time is scaled; the allowance is not
    kwargs.setdefault("timing", FAST)
    return Session(plugins, command="test", heartbeat=BEAT, **kwargs)


def _engine_task(task: asyncio.Task[Any]) -> bool:
    """A task of the engine (not the simulator's connection handlers on this loop)."""
    code = getattr(task.get_coro(), "cr_code", None)
    filename = code.co_filename if code is not None else ""
    return "bitmusa_plugin" in filename and "simulator" not in filename


async def wait_for(predicate: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.01)


async def test_on_startup_and_on_shutdown_frame_the_run_and_the_key_is_deleted(
    sim: Simulator,
) -> None:
    seen = Lifecycle()
    async with session([seen], accounts=[config(sim)]) as s:
        await wait_for(lambda: "connected" in seen.statuses("acct"))
    assert seen.calls[0] == ("on_startup", ["acct"])
    assert seen.calls[-1] == ("on_shutdown", None)
    assert seen.statuses("acct")[-1] == "closed"
    assert sim.account().deletes == 1  # leaving the block DELETEs the listenKey
    assert s.streams["acct"].status == "closed"


async def test_keep_listen_key_leaves_the_key_for_the_next_process(sim: Simulator) -> None:
    seen = Lifecycle()
    async with session([seen], accounts=[config(sim)], keep_listen_key=True):
        await wait_for(lambda: "connected" in seen.statuses("acct"))
    assert sim.account().deletes == 0
    assert seen.statuses("acct")[-1] == "closed"


async def test_accounts_added_later_share_the_pool_and_limiter_and_stop_alone(
    sim: Simulator,
) -> None:
    seen = Lifecycle()
    async with session([seen]) as s:
        first = s.add(config(sim, "a"))
        second = s.add(config(sim, "b", SECOND))
        await wait_for(lambda: "connected" in seen.statuses("a"))
        await wait_for(lambda: "connected" in seen.statuses("b"))
        # one REST pool (and TLS context) for every account of the session
        assert first._http is s.http
        assert second._http is s.http
        with pytest.raises(ValueError, match="streaming already"):
            s.add(config(sim, "a"))

        finish = await s.remove("a")
        assert finish == lc.Finish(False, "stopped")
        assert sim.account().deletes == 1  # a's key, and only a's
        assert sim.account(SECOND[0]).deletes == 0
        assert "a" not in s.streams
        assert not s.http.is_closed  # the pool outlives one account
        await asyncio.sleep(0.3)
        assert second.status == "connected"
        assert seen.statuses("b")[-1] == "connected"  # b never noticed
        assert await s.remove("a") is None  # removing twice is nothing
    assert s.http.is_closed
    assert sim.account(SECOND[0]).deletes == 1
    assert seen.calls[-1] == ("on_shutdown", None)


async def test_the_shared_limiter_paces_every_account_together(sim: Simulator) -> None:
    # 2 requests per second for the whole session. Two accounts start with a POST and
    # three snapshot GETs each: eight requests, which at 2/s take over three seconds.
    seen = Lifecycle()
    slow_keys = replace(FAST, keepalive_interval=30.0, key_validity=60.0)
    async with session([seen], rest_rate=(2, 1000), timing=slow_keys) as s:
        started = time.monotonic()
        s.add(config(sim, "a"))
        s.add(config(sim, "b", SECOND))
        await asyncio.sleep(1.2)
        elapsed = time.monotonic() - started
        # at most 2 in any second: 2 at once, then 2 per started second
        assert len(sim.rest_calls) <= 2 * (int(elapsed) + 1), (elapsed, sim.rest_calls)
        await wait_for(lambda: len(sim.rest_calls) >= 8, timeout=15)
        assert "connected" in seen.statuses("a")
        assert "connected" in seen.statuses("b")


async def test_account_client_is_one_per_account_on_the_sessions_pool(sim: Simulator) -> None:
    async with session([]) as s:
        client = s.account_client(config(sim))
        assert s.account_client(config(sim)) is client
        balances = await client.wallet()
        assert balances  # a real signed REST call to the simulator
        assert client._client is s.http
    assert s.http.is_closed


async def test_run_stops_cleanly_when_its_script_breaks(sim: Simulator) -> None:
    seen = Lifecycle()

    async def script(streams: list[AccountStream]) -> None:
        assert [st.config.label for st in streams] == ["acct"]
        await asyncio.sleep(0.5)
        raise RuntimeError("the script has a bug")

    async with session([seen], accounts=[config(sim)]) as s:
        result = await asyncio.wait_for(s.run(until=script), 5)
    assert result.ok  # the script's bug is logged; the streams stopped cleanly
    assert seen.statuses("acct")[-1] == "closed"


async def test_a_failed_account_is_in_the_result_with_its_reason(sim: Simulator) -> None:
    seen = Lifecycle()
    bad = AccountConfig("bad", Credentials("wrong-api-key", "wrong-auth-key"), sim.rest_url)
    async with session([seen], accounts=[config(sim), bad]) as s:
        await asyncio.wait_for(s.finished("bad"), 5)
        s.stop()
        result = await asyncio.wait_for(s.wait(), 5)
    assert not result.ok
    assert list(result.failed) == ["bad"]
    assert "1001" in result.failed["bad"]
    assert seen.statuses("acct")[-1] == "closed"  # the other account was not disturbed


async def test_leaving_is_bounded_with_a_hung_lossless_plugin(sim: Simulator) -> None:
    seen = Lifecycle()
    baseline = asyncio.all_tasks()  # the test's own and the simulator's
    s = session([HungLossless(), seen], delivery=DeliveryOptions(queue_size=20))
    async with s:
        s.add(config(sim))
        await wait_for(lambda: "connected" in seen.statuses("acct"))
        await asyncio.sleep(0.3)  # the hung plugin's queue fills; the reader waits for it
        started = time.monotonic()
    assert time.monotonic() - started < 6.0
    assert sim.account().deletes == 1
    assert ("on_shutdown", None) in seen.calls  # the well-behaved plugin got its shutdown
    ours = [t for t in asyncio.all_tasks() - baseline if _engine_task(t)]
    assert ours == []  # every reader, heartbeat, REST call and delivery task has ended


async def test_its_repr_names_accounts_and_never_a_secret(sim: Simulator) -> None:
    async with session([]) as s:
        s.add(config(sim))
        text = repr(s) + repr(s.streams["acct"]) + repr(s.account_client(config(sim)))
        await wait_for(lambda: s.streams["acct"].machine.key is not None)
        key = s.streams["acct"].machine.key
        text += repr(s) + repr(s.streams["acct"])
    assert "acct" in text
    for secret in (DEMO_API_KEY, DEMO_AUTH_KEY, key):
        assert secret is not None
        assert secret not in text
