"""The REST client: the envelope, typed errors, the two headers, pacing, no leaks."""

from __future__ import annotations

import asyncio
import time

import httpx
import orjson
import pytest

from bitmusa_plugin._core import errors
from bitmusa_plugin._engine import rest
from bitmusa_plugin._engine.limiter import RateLimiter
from bitmusa_plugin._engine.secrets import Credentials


def envelope(code: int, data: object = None, message: str = "m") -> bytes:
    return orjson.dumps({"code": code, "message": message, "data": data})


@pytest.mark.parametrize(
    ("status", "body", "error"),
    [
        (200, envelope(1001), errors.PermanentError),
        (200, envelope(1002), errors.PermanentError),
        (200, envelope(1003), errors.PermanentError),
        (200, envelope(1005), errors.PermanentError),
        (200, envelope(1011), errors.RateLimitedError),
        (429, b"slow down", errors.RateLimitedError),
        (503, b"", errors.ServerError),
        (200, envelope(999), errors.ServerError),
        (200, envelope(3022), errors.ListenKeyGoneError),
        (200, b"<html>not json</html>", errors.MisconfiguredError),  # not Bitmusa at all
        (404, b"Not Found", errors.MisconfiguredError),  # the path is wrong
        (405, b"Method Not Allowed", errors.MisconfiguredError),
        (410, b"", errors.MisconfiguredError),
        (401, b"", errors.PermanentError),
        (200, envelope(1014), errors.BitmusaError),
    ],
)
def test_every_failure_is_a_typed_error_carrying_the_code(
    status: int, body: bytes, error: type[Exception]
) -> None:
    with pytest.raises(error) as raised:
        errors.parse_envelope("PUT userDataStream", status, body)
    assert type(raised.value) is error
    code = raised.value.code  # type: ignore[attr-defined]
    if body.startswith(b'{"code"'):
        assert code == orjson.loads(body)["code"]  # Bitmusa's code travels with the error
    elif status != 200:
        assert code == status
    assert str(code or status) in str(raised.value)


def test_code_zero_is_success_even_as_a_string() -> None:
    body = orjson.dumps({"code": "0", "message": "success", "data": {"listenKey": "k"}})
    assert errors.parse_envelope("POST userDataStream", 200, body)["data"] == {"listenKey": "k"}
    # what each failure means for a stream is the type's, in one place
    assert errors.PermanentError.failure == "permanent"
    assert errors.ServerError.failure == "transient"
    assert errors.NetworkError.failure == "unreachable"
    assert errors.MisconfiguredError.failure == "misconfigured"
    assert errors.RateLimitedError.failure == "transient"
    assert errors.ListenKeyGoneError.failure == "gone"


async def test_both_headers_from_one_auth_class_and_nothing_printed() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, content=envelope(0, {"listenKey": "the-key-123456"}))

    credentials = Credentials("api-key-value-1", "auth-key-value-1")
    client = rest.ListenKeyClient(
        credentials, "https://example.invalid/api/v2", transport=httpx.MockTransport(handler)
    )
    assert await client.create() == "the-key-123456"
    await client.aclose()
    request = seen[0]
    assert request.method == "POST"
    assert request.url.path == "/api/v2/future/userDataStream"
    assert request.headers["Authorization"] == "Bearer auth-key-value-1"
    assert request.headers["x-api-key"] == "api-key-value-1"
    text = repr(credentials) + repr(rest.BitmusaAuth(credentials)) + repr(client)
    assert "api-key-value-1" not in text
    assert "auth-key-value-1" not in text


async def test_orders_and_cancels_take_the_next_turn_before_routine_calls() -> None:
    from bitmusa_plugin._engine.limiter import ROUTINE, TRADING

    limiter = RateLimiter(limits=((2, 0.1),))
    order: list[str] = []

    async def call(name: str, priority: int) -> None:
        await limiter.acquire(priority)
        order.append(name)

    await asyncio.gather(call("first", ROUTINE), call("second", ROUTINE))  # the window is full
    snapshots = [asyncio.ensure_future(call(f"snapshot {i}", ROUTINE)) for i in range(6)]
    await asyncio.sleep(0)  # they queue...
    cancelled = asyncio.ensure_future(call("cancelled", TRADING))
    await asyncio.sleep(0)
    cancelled.cancel()  # ...a trading waiter that gives up is skipped...
    trade = asyncio.ensure_future(call("order", TRADING))  # ...and an order arrives last
    await asyncio.gather(*snapshots, trade)
    assert order[:3] == ["first", "second", "order"]  # the next turn is the order's
    assert order[3:] == [f"snapshot {i}" for i in range(6)]  # then first come first served


async def test_the_limiter_paces_instead_of_refusing() -> None:
    limiter = RateLimiter(limits=((8, 0.2), (20, 1.0)))
    start = time.monotonic()
    await asyncio.gather(*(limiter.acquire() for _ in range(20)))
    elapsed = time.monotonic() - start
    assert 0.4 <= elapsed < 1.5  # 20 requests at 8 per 0.2 s need at least two more windows
    sent = sorted(limiter._sent)
    for i in range(len(sent) - 8):
        assert sent[i + 8] - sent[i] >= 0.2 - 1e-3  # never 9 in one window


async def test_abandoned_calls_never_exhaust_the_connection_pool() -> None:
    # A resync superseded by a new gap abandons its three GETs. Cancelling an httpx request
    # while the pool hands it a connection leaks that slot (encode/httpcore#1093); after a
    # few, every call failed with PoolTimeout and the key lapsed. Calls are abandoned at
    # every moment of their life here, against the simulator over loopback.
    import random

    from bitmusa_plugin.simulator import DEMO_API_KEY, DEMO_AUTH_KEY, Simulator

    rng = random.Random(5)
    async with Simulator(event_interval=None) as sim:
        credentials = Credentials(DEMO_API_KEY, DEMO_AUTH_KEY)
        keys = rest.ListenKeyClient(credentials, sim.rest_url, timeout=1.0)
        await keys.create()
        await keys.aclose()
        client = rest.AccountClient(credentials, sim.rest_url, timeout=1.0)
        for _ in range(150):
            calls = [asyncio.ensure_future(client.wallet()) for _ in range(3)]
            await asyncio.sleep(rng.uniform(0, 0.004))
            for call in calls:
                call.cancel()
            await asyncio.gather(*calls, return_exceptions=True)
        # the abandoned requests run to their end (never cancelled midway); on a loaded
        # machine that takes a while, and no slot may be lost meanwhile
        deadline = time.monotonic() + 60
        while client.inflight and time.monotonic() < deadline:  # noqa: ASYNC110 (polls a count)
            await asyncio.sleep(0.05)
        assert client.inflight == 0
        # the pool still serves: four calls at once (its whole size), promptly
        start = time.monotonic()
        results = await asyncio.gather(*(client.wallet() for _ in range(4)))
        assert all(isinstance(r, list) for r in results)
        assert time.monotonic() - start < 1.0
        await client.aclose()


async def test_a_keep_alive_takes_its_turn_before_routine_calls() -> None:
    """A burst of routine reads (a gap's history, side lookups) queued behind a full
    window: the keep-alive that arrives after them goes first, as an order does, so the
    listenKey never lapses behind them. Over loopback, in the order the server saw."""
    from bitmusa_plugin.simulator import DEMO_API_KEY, DEMO_AUTH_KEY, Simulator

    async with Simulator(event_interval=None) as sim:
        credentials = Credentials(DEMO_API_KEY, DEMO_AUTH_KEY)
        limiter = RateLimiter(limits=((1, 0.05),))
        keys = rest.ListenKeyClient(credentials, sim.rest_url, timeout=2.0, limiter=limiter)
        client = rest.AccountClient(credentials, sim.rest_url, timeout=2.0, limiter=limiter)
        await keys.create()  # the window is full now
        reads = [asyncio.ensure_future(client.wallet()) for _ in range(4)]
        await asyncio.sleep(0)  # they queue...
        await asyncio.gather(keys.keepalive(), *reads)  # ...and the keep-alive comes last
        seen = [c[0] for c in sim.rest_calls if not c[0].startswith("POST")]
        assert seen[0].startswith("PUT"), seen
        assert len(seen) == 5
        await keys.aclose()
        await client.aclose()
