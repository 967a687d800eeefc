"""Failing loudly: a wrong URL stops the account with one reason naming it, an unreachable
server fails after the start-up window, and the API's two open readings fall back to each
other once. Against the simulator over loopback; the machine's rules on a fake clock are in
test_machine.py."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from dataclasses import replace
from typing import Any

import pytest

from bitmusa_hookspecs import hookimpl
from bitmusa_plugin import AccountConfig, Credentials, Session
from bitmusa_plugin._core import machine as lc
from bitmusa_plugin._core.urls import UrlError
from bitmusa_plugin._engine.stream import Heartbeat
from bitmusa_plugin.simulator import DEMO_API_KEY, DEMO_AUTH_KEY, Simulator

FAST = lc.Timing(
    keepalive_interval=0.2,
    key_validity=2.0,
    retry_initial=0.05,
    retry_max=0.3,
    stable_after=0.3,
    rotate_after=600.0,
    rotate_jitter=0.0,
    startup_window=1.5,
)
CREDENTIALS = Credentials(DEMO_API_KEY, DEMO_AUTH_KEY)


class States:
    def __init__(self) -> None:
        self.states: list[dict[str, Any]] = []
        self.errors: list[dict[str, Any]] = []

    @hookimpl
    def on_stream_state(self, state: dict[str, Any]) -> None:
        self.states.append(state)

    @hookimpl
    def on_error(self, error: dict[str, Any]) -> None:
        self.errors.append(error)

    def reasons(self, status: str) -> list[str]:
        return [s["reason"] or "" for s in self.states if s["status"] == status]


async def run(config: AccountConfig, timing: lc.Timing = FAST, limit: float = 10.0) -> Any:
    """Stream ``config`` until it ends (or ``limit``); (result, states, seconds)."""
    seen = States()
    started = time.monotonic()
    async with Session(
        [seen], command="test", timing=timing, heartbeat=Heartbeat(2.0, 10.0), rest_timeout=2.0
    ) as session:
        session.add(config)
        done = await asyncio.wait({session.finished(config.label)}, timeout=limit)
        assert done[0], f"{config.label} did not end within {limit} s: {seen.states}"
        result = await session.wait()
    return result, seen, time.monotonic() - started


async def until(predicate: Any, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def no_secret_in(text: str, sim: Simulator) -> None:
    for secret in (DEMO_API_KEY, DEMO_AUTH_KEY, *sim.account().issued_keys):
        assert secret not in text


# -- misconfiguration: stops at once, naming the URL ------------------------------------------


async def test_a_wrong_websocket_path_stops_the_account_naming_both_urls(sim: Simulator) -> None:
    config = AccountConfig("a", CREDENTIALS, sim.rest_url, sim.ws_url + "/ws")
    result, seen, seconds = await run(config)
    reason = result.failed["a"]
    base = sim.ws_url + "/ws"
    assert f"{base}/ws/future/<listenKey>" in reason
    assert f"{base}/ws/future/wallet/<listenKey>" in reason  # the fallback was tried once
    assert "HTTP 404" in reason
    assert "without a path ('/ws' is extra)" in reason  # the hint
    assert seen.reasons("failed") == [reason]
    assert seconds < FAST.startup_window  # misconfiguration is not retried
    assert sim.connections_opened == 0
    no_secret_in(reason, sim)


async def test_a_wrong_rest_path_stops_the_account_naming_the_url(sim: Simulator) -> None:
    rest = sim.rest_url.replace("/api/v2", "/api/v3")
    result, seen, seconds = await run(AccountConfig("a", CREDENTIALS, rest, sim.ws_url))
    reason = result.failed["a"]
    assert f"POST {rest}/future/userDataStream" in reason
    assert "HTTP 404" in reason
    assert "the REST base should end in /api/v2" in reason
    assert seconds < FAST.startup_window
    assert seen.errors == []  # one record per failure: the failed state
    no_secret_in(reason, sim)


async def test_a_rest_base_without_the_api_prefix_is_a_misconfiguration(sim: Simulator) -> None:
    # a REST base without /api/v2: the server answers, but with no API there
    rest = sim.rest_url.replace("/api/v2", "")
    result, _, _ = await run(AccountConfig("a", CREDENTIALS, rest, sim.ws_url))
    assert "the REST base should end in /api/v2" in result.failed["a"]


def test_a_url_with_a_wrong_scheme_is_refused_before_anything_is_sent() -> None:
    # the messages of the one URL check the engine and the CLI share (_core/urls.py)
    cases = {
        ("rest_url", "htp://127.0.0.1:8080/api/v2"): "must start with https://",
        ("rest_url", "127.0.0.1:8080/api/v2"): "must start with https://",
        ("rest_url", "wss://openapi.bitmusa.com/api/v2"): "REST base URL 'wss://",
        ("ws_url", "https://websocket.bitmusa.com"): "must start with wss:// (or ws://",
        ("ws_url", "wss://websocket.bitmusa.com:99999"): "has an invalid port",
        ("rest_url", "https:///api/v2"): "has no host",
    }
    for (field, url), message in cases.items():
        urls: dict[str, Any] = {"rest_url": url} if field == "rest_url" else {"ws_url": url}
        with pytest.raises(UrlError) as raised:
            replace(AccountConfig("a", CREDENTIALS), **urls)
        text = str(raised.value)
        assert message in text, text
        assert url in text
        assert "None" not in text
        assert "\n" not in text


# -- unreachable: retried for the start-up window, then failed --------------------------------


async def test_nothing_listening_fails_within_the_start_up_window_saying_why() -> None:
    port = free_port()
    rest = f"http://127.0.0.1:{port}/api/v2"
    config = AccountConfig("a", CREDENTIALS, rest, f"ws://127.0.0.1:{port}")
    result, seen, seconds = await run(config)
    reason = result.failed["a"]
    assert f"POST {rest}/future/userDataStream" in reason
    assert "connection refused" in reason
    assert "start-up window, 1.5 s" in reason
    assert FAST.startup_window <= seconds < FAST.startup_window + 2.0
    # never silent meanwhile: every attempt was a state with its reason and the next try
    retries = seen.reasons("connecting")
    assert len([r for r in retries if "connection refused" in r and "retrying in" in r]) >= 2


async def test_an_unknown_host_fails_within_the_start_up_window_saying_why() -> None:
    rest = "http://nosuchhost.invalid/api/v2"
    config = AccountConfig("a", CREDENTIALS, rest, "ws://nosuchhost.invalid", insecure=True)
    result, _, seconds = await run(config)
    reason = result.failed["a"]
    assert f"POST {rest}/future/userDataStream" in reason
    assert "unknown host" in reason
    assert seconds < FAST.startup_window + 2.0


async def test_a_websocket_port_with_nothing_listening_fails_within_the_window(
    sim: Simulator,
) -> None:
    ws = f"ws://127.0.0.1:{free_port()}"
    result, _, seconds = await run(AccountConfig("a", CREDENTIALS, sim.rest_url, ws))
    reason = result.failed["a"]
    assert f"websocket {ws}/ws/future/<listenKey>: connection refused" in reason
    assert seconds < FAST.startup_window + 2.0
    no_secret_in(reason, sim)


async def test_after_a_first_connection_an_outage_is_retried_for_ever(sim: Simulator) -> None:
    seen = States()
    timing = replace(FAST, retry_max=0.15)
    async with Session(
        [seen], command="test", timing=timing, heartbeat=Heartbeat(0.2, 0.4), rest_timeout=1.0
    ) as session:
        session.add(AccountConfig("a", CREDENTIALS, sim.rest_url, sim.ws_url))
        await until(lambda: "connected" in [s["status"] for s in seen.states])
        sim.refuse(40)  # 40 handshakes refused: seconds, longer than the start-up window
        sim.drop()
        dropped = time.monotonic()
        await until(lambda: seen.states[-1]["status"] == "gap", timeout=30)
        outage = time.monotonic() - dropped
    assert outage > timing.startup_window
    assert "failed" not in [s["status"] for s in seen.states]
    refused = [r for r in seen.reasons("connecting") if "answered HTTP 503" in r]
    assert len(refused) == 40


# -- the API's open readings: a setting, and a fallback once ----------------------------------


@pytest.mark.parametrize(
    ("served", "configured"), [("wallet", "documented"), ("documented", "wallet")]
)
async def test_the_websocket_path_falls_back_to_the_other_reading_once(
    served: str, configured: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    async with Simulator(time_scale=3600, event_interval=0.01, ws_path=served) as sim:  # type: ignore[arg-type]
        seen = States()
        async with Session([seen], command="test", timing=replace(FAST, rotate_after=0.5)) as s:
            stream = s.add(
                AccountConfig("a", CREDENTIALS, sim.rest_url, sim.ws_url, ws_path=configured)
            )
            # later connections go straight to the path that worked
            await until(lambda: stream.machine.counters.rotations >= 2)
            assert stream.ws_path == served
    switched = [
        r.getMessage() for r in caplog.records if "using that for the rest" in r.getMessage()
    ]
    assert len(switched) == 1, switched
    assert "<listenKey>" in switched[0]
    assert "failed" not in [st["status"] for st in seen.states]
    assert sim.connections_opened == 3  # the first, and one per rotation: no retries


@pytest.mark.parametrize(
    ("served", "configured", "refusal"),
    # 405: a server whose keep-alive lives under /api/v1 answers a PUT on the v2 path, which
    # it serves for POST, with "method not allowed", not "no such path" (issue 18)
    [("v1", "v2", 404), ("v2", "v1", 404), ("v1", "v2", 405)],
)
async def test_the_keepalive_prefix_falls_back_to_the_other_reading_once(
    served: str, configured: Any, refusal: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    async with Simulator(
        time_scale=3600,
        event_interval=None,
        keepalive_prefix=served,  # type: ignore[arg-type]
        keepalive_refusal=refusal,
    ) as sim:
        seen = States()
        config = AccountConfig(
            "a", CREDENTIALS, sim.rest_url, sim.ws_url, keepalive_prefix=configured
        )
        async with Session([seen], command="test", timing=FAST) as s:
            stream = s.add(config)
            await until(lambda: len(sim.account().puts) >= 3)
            assert stream.listen_key.keepalive_prefix == served
        assert sim.account().deletes == 1  # the DELETE went to the working prefix too
    switched = [
        r.getMessage() for r in caplog.records if "using that for the rest" in r.getMessage()
    ]
    assert len(switched) == 1, switched
    assert f"/api/{served}" in switched[0]
    assert f"answered {refusal} under" in switched[0]
    assert seen.errors == []  # the refusal that led there is not an error: it was handled


async def test_without_fallback_the_configured_reading_is_the_only_one() -> None:
    async with Simulator(time_scale=3600, event_interval=None, ws_path="wallet") as sim:
        config = AccountConfig("a", CREDENTIALS, sim.rest_url, sim.ws_url, fallback=False)
        result, _, _ = await run(config)
    reason = result.failed["a"]
    assert f"{sim.ws_url}/ws/future/<listenKey> answered HTTP 404" in reason
    assert "wallet" not in reason


async def test_keepalive_404_under_both_prefixes_stops_the_account_naming_both(
    sim: Simulator,
) -> None:
    sim.fail_rest("404", 2, method="PUT")  # the first keep-alive, and its fallback
    result, _, _ = await run(AccountConfig("a", CREDENTIALS, sim.rest_url, sim.ws_url))
    reason = result.failed["a"]
    base = sim.rest_url.removesuffix("/api/v2")
    assert f"PUT userDataStream: {base}/api/v2/future/userDataStream and" in reason
    assert f"{base}/api/v1/future/userDataStream both answered HTTP 404/404" in reason
