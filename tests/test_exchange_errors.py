"""Bitmusa's failures as ccxt's exception classes, through the drop-in against the simulator:
rejected orders, rate limits, server errors and timeouts, each checked against the
simulator's ground truth (an order POST is sent once, never retried); and watch_* failing
as fetch_* would, never hanging, whatever is misconfigured."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from typing import Any

import ccxt
import pytest

import bitmusa_plugin
from bitmusa_plugin._ccxt import EXCEPTIONS
from bitmusa_plugin.simulator import DEMO_API_KEY, DEMO_AUTH_KEY, Simulator
from ccxt_reference import make_exchange

pytestmark = pytest.mark.bitmusa_simulator(script=False, event_interval=None, seed=9, time_scale=1)

BTC = "BTC/USDT:USDT"
HANG = 20  # only turns a hang into a failure


@pytest.fixture
async def exchange(sim: Simulator) -> AsyncIterator[Any]:
    await sim.set_price("BTCUSDT", "100000")
    exchange = make_exchange(sim, timeout=1500)
    try:
        await exchange.load_markets()
        yield exchange
    finally:
        await exchange.close()


def order_posts(sim: Simulator) -> int:
    return sum(1 for label, _ in sim.rest_calls if label == "POST /future/order")


@pytest.mark.parametrize(
    ("code", "message", "error"),
    [
        (4001, "INSUFFICIENT BALANCE", ccxt.InsufficientFunds),
        (3016, "ORDER QUANTITY TOO SMALL", ccxt.InvalidOrder),
        (1014, "INVALID REQUEST PARAMETER", ccxt.InvalidOrder),  # createOrder's refinement
        (3009, "EMPTY FUTURE TICKER", ccxt.BadSymbol),
        (1011, "TOO MANY REQUESTS", ccxt.RateLimitExceeded),
        (7777, "SOMETHING NEW", ccxt.ExchangeError),  # unknown: the base class
    ],
)
async def test_a_rejected_order_raises_its_class_with_the_code(
    sim: Simulator, exchange: Any, code: int, message: str, error: type[Exception]
) -> None:
    sim.reject_orders(1, code, message)
    with pytest.raises(error, match=f"bitmusa {code}") as raised:
        await exchange.create_order(BTC, "limit", "buy", 0.001, 90000)
    if error is ccxt.ExchangeError:
        assert type(raised.value) is ccxt.ExchangeError
    assert not sim.engine().orders
    assert order_posts(sim) == 1


async def test_the_engines_own_refusals_map_too(sim: Simulator, exchange: Any) -> None:
    with pytest.raises(ccxt.InsufficientFunds, match="bitmusa 4001"):
        await exchange.create_order(BTC, "market", "buy", 500)  # 50M USDT of margin
    with pytest.raises(ccxt.OrderNotFound, match="bitmusa 4002"):
        await exchange.cancel_order("F1700000000000123")
    with pytest.raises(ccxt.BadRequest, match="bitmusa 3005"):
        await _raw_leverage(exchange, 300)


async def test_a_refusal_whose_code_says_little_gets_what_to_do(
    sim: Simulator, exchange: Any
) -> None:
    await exchange.create_order(BTC, "limit", "buy", 0.001, 90000)  # rests: an open order
    with pytest.raises(ccxt.OperationRejected, match=r"bitmusa 1013 .*close them"):
        await exchange.set_position_mode(True, BTC)
    assert sim.engine().modes.get("BTCUSDT", "ONEWAY") == "ONEWAY"


@pytest.mark.parametrize("amount", [-0.001, 0, "abc", None])
async def test_an_amount_that_is_not_positive_is_refused_before_sending(
    sim: Simulator, exchange: Any, amount: Any
) -> None:
    with pytest.raises(ccxt.InvalidOrder, match="a positive number"):
        await exchange.create_order(BTC, "limit", "buy", amount, 90000)
    assert order_posts(sim) == 0


async def _raw_leverage(exchange: Any, leverage: int) -> Any:
    """A leverage the drop-in would refuse itself, sent as is (the server's check)."""
    from bitmusa_plugin._ccxt.errors import raise_for
    from bitmusa_plugin._core.errors import BitmusaError

    try:
        return await exchange._client().set_leverage("BTCUSDT", leverage)
    except BitmusaError as exc:
        raise_for(exchange, exc, "setLeverage")


@pytest.mark.parametrize(("fault", "error"), [("429", ccxt.RateLimitExceeded)])
async def test_http_429_is_rate_limit_exceeded_and_not_retried(
    sim: Simulator, exchange: Any, fault: Any, error: type[Exception]
) -> None:
    sim.fail_rest(fault, 1, method="POST", path="/future/order")
    with pytest.raises(error):
        await exchange.create_order(BTC, "limit", "buy", 0.001, 90000)
    assert not sim.engine().orders
    assert sim.rest_calls.count(("POST /future/order", -1)) == 1
    assert order_posts(sim) == 1  # that one, refused: no second POST
    sim.fail_rest("429", 1, method="GET", path="/future/market")
    with pytest.raises(ccxt.RateLimitExceeded):
        await exchange.fetch_ticker(BTC)


async def test_a_timed_out_order_is_request_timeout_sent_once_and_settled_by_the_stream(
    sim: Simulator, exchange: Any
) -> None:
    await asyncio.wait_for(exchange.watch_balance(), HANG)  # the stream is up
    # the server carries the order out, and its answer never comes
    sim.fail_rest("timeout_after", 1, method="POST", path="/future/order")
    with pytest.raises(ccxt.RequestTimeout) as raised:
        await exchange.create_order(BTC, "limit", "buy", 0.001, 90000)
    text = str(raised.value)
    assert "may or may not have been placed" in text
    assert "not retried" in text
    assert "watch_orders()" in text
    assert "fetch_open_orders()" in text
    engine = sim.engine()
    assert len(engine.orders) == 1  # it was placed ...
    # ... by the one POST: its fault, and its carrying-out, recorded; nothing more
    assert sim.rest_calls.count(("POST /future/order", -1)) == 1
    assert order_posts(sim) == 2
    (placed,) = engine.orders
    # how the user settles it: the open orders, and the stream
    assert [o["id"] for o in await exchange.fetch_open_orders(BTC)] == [placed]

    async def seen() -> None:
        while not any(o["id"] == placed for o in await exchange.watch_orders()):
            pass

    await asyncio.wait_for(seen(), HANG)
    # a server error after sending is as unknown, and as unretried
    sim.fail_rest("500", 1, method="POST", path="/future/order")
    with pytest.raises(ccxt.ExchangeNotAvailable, match="may or may not"):
        await exchange.create_order(BTC, "limit", "buy", 0.001, 90000)
    assert sim.rest_calls.count(("POST /future/order", -1)) == 2
    assert len(engine.orders) == 1


async def test_an_order_never_sent_says_nothing_was_placed(sim: Simulator) -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    exchange = make_exchange(
        sim, urls={"api": {"rest": f"http://127.0.0.1:{port}/api/v2", "ws": sim.ws_url}}
    )
    exchange.options["marketsSource"] = "table"
    try:
        with pytest.raises(ccxt.NetworkError, match="nothing was placed") as raised:
            await exchange.create_order(BTC, "limit", "buy", 0.001, 90000)
        assert not isinstance(raised.value, ccxt.RequestTimeout)
    finally:
        await exchange.close()
    assert not sim.engine().orders


@pytest.mark.parametrize("case", ["ws path", "rest path", "closed port", "unknown host"])
async def test_watch_raises_what_fetch_raises_and_never_hangs(sim: Simulator, case: str) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = f"127.0.0.1:{sock.getsockname()[1]}"
    rest, ws = sim.rest_url, sim.ws_url
    if case == "ws path":
        ws = sim.ws_url + "/nowhere"
    elif case == "rest path":
        rest = sim.rest_url.replace("/api/v2", "/api/v9")
    elif case == "closed port":
        rest, ws = f"http://{closed}/api/v2", f"ws://{closed}"
    else:
        rest, ws = "http://nosuchhost.invalid/api/v2", "ws://nosuchhost.invalid"
    exchange = make_exchange(
        sim,
        urls={"api": {"rest": rest, "ws": ws}},
        options={"startupWindow": 2.0, "insecure": True, "marketsSource": "table"},
    )
    try:
        with pytest.raises(ccxt.BaseError) as watched:
            await asyncio.wait_for(exchange.watch_orders(), HANG)
        fetch_error: type[Exception] | None = None
        if case != "ws path":
            with pytest.raises(ccxt.BaseError) as fetched:
                await exchange.fetch_balance()
            fetch_error = type(fetched.value)
    finally:
        await exchange.close()
    if case in ("ws path", "rest path"):
        assert isinstance(watched.value, ccxt.BadRequest)  # a wrong URL: fix the config
    else:
        assert isinstance(watched.value, ccxt.NetworkError)
    if fetch_error is not None:
        assert isinstance(watched.value, fetch_error)
    assert DEMO_API_KEY not in str(watched.value)
    assert DEMO_AUTH_KEY not in str(watched.value)


def test_the_exceptions_table_is_ccxts_convention() -> None:
    assert set(EXCEPTIONS) >= {"exact", "broad"}
    assert all(issubclass(c, ccxt.BaseError) for c in EXCEPTIONS["exact"].values())
    assert EXCEPTIONS["exact"]["1011"] is ccxt.RateLimitExceeded
    assert EXCEPTIONS["broad"]["INSUFFICIENT BALANCE"] is ccxt.InsufficientFunds


async def test_sandbox_mode_says_there_is_none_and_what_to_use() -> None:
    exchange = bitmusa_plugin.load_exchange("bitmusa", {"apiKey": "k", "secret": "s"})
    try:
        with pytest.raises(ccxt.NotSupported, match="bitmusa-plugin simulate"):
            exchange.set_sandbox_mode(True)
        exchange.set_sandbox_mode(False)  # turning it off is fine
        assert not exchange.isSandboxModeEnabled
    finally:
        await exchange.close()
