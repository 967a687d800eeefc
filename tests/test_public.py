"""The public market streams and positions' mark price, over loopback against the simulator:
each reading of the stream's path, REST polling where there is none, drops, stalls,
garbage, un_watch, one connection per process; ccxt.pro's own test functions, unmodified,
with no skipped properties."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import ccxt
import pytest
from ccxt.base.precise import Precise

from bitmusa_plugin._core import public as pub
from bitmusa_plugin._core.numbers import Reject
from bitmusa_plugin.simulator import Simulator
from ccxt_reference import ccxt_test, make_exchange

SYMBOL = "BTC/USDT:USDT"
OTHER = "ETH/USDT:USDT"
#: the public tests as ccxt's runner (tests_async.py) calls them: (name, its argument)
CCXT_PUBLIC = (
    ("watch_ticker", SYMBOL),
    ("watch_tickers", SYMBOL),
    ("watch_order_book", SYMBOL),
    ("watch_order_book_for_symbols", [SYMBOL, OTHER]),
    ("watch_trades", SYMBOL),
    ("watch_trades_for_symbols", [SYMBOL, OTHER]),
    ("watch_ohlcv", SYMBOL),
    ("watch_ohlcv_for_symbols", SYMBOL),
)
FAST = {"publicWindow": 1.0, "publicPollInterval": 0.2, "publicSilence": 2.0}

pytestmark = pytest.mark.bitmusa_simulator(
    script=False, event_interval=None, market_interval=0.05, time_scale=60
)


def exchange_on(sim: Simulator, **options: Any) -> Any:
    return make_exchange(sim, options={**FAST, **options})


async def until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    """Wait (bounded) for ``condition``: a state the design guarantees, not a sleep."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        assert loop.time() < deadline, f"not within {timeout} s"
        await asyncio.sleep(0.02)


def books_read(sim: Simulator) -> int:
    return sum(call == "GET /future/market/orderbook" for call, _ in sim.rest_calls)


def fast_clock(exchange: Any, factor: int) -> None:
    """ccxt's watch tests loop for 15 s of the exchange's clock: run it ``factor`` times
    fast so they take a fraction of that (each call still waits for a real update)."""
    real = exchange.milliseconds
    start = real()
    exchange.milliseconds = lambda: real() + (factor - 1) * (real() - start)


# -- the readings ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("served", "feed", "path"),
    [
        ("both", "stream", "/ws/future/stream?"),  # the draft's reading, the default
        ("public", "stream", "/ws/future/public?stream="),  # the fallback
        ("none", "polling", None),  # no public stream: REST polling
    ],
)
async def test_ccxt_pros_own_public_watch_tests_pass(
    served: str, feed: str, path: str | None, caplog: pytest.LogCaptureFixture
) -> None:
    """Every public ``watch_*`` through ccxt.pro's own test function, as ccxt's runner
    calls it (``skipped_properties = {}``), over each reading and from REST polling."""
    sim = await Simulator(
        public_ws_path=served,  # type: ignore[arg-type]
        script=False,
        event_interval=None,
        market_interval=0.05,
        time_scale=60,
    ).start()
    exchange = exchange_on(sim)
    fast_clock(exchange, 20)
    caplog.set_level(logging.INFO, "bitmusa_plugin")
    try:
        await exchange.load_markets()
        for name, argument in CCXT_PUBLIC:
            await asyncio.wait_for(ccxt_test(name)(exchange, {}, argument), 60)  # raises
        assert exchange.options["publicFeed"] == feed
        if path is None:
            assert sim.public_opened == []
            said = [r for r in caplog.records if "read REST until it opens" in r.getMessage()]
            assert len(said) == 1  # once, however many watches
        else:
            assert sim.public_opened
            assert all(p.startswith(path) for p in sim.public_opened)
    finally:
        await exchange.close()
        await sim.stop()


async def test_public_stream_reading_is_an_option(sim: Simulator) -> None:
    exchange = exchange_on(sim, publicWsPath="public", apiFallback=False)
    try:
        await asyncio.wait_for(exchange.watch_order_book(SYMBOL), 10)
        assert sim.public_opened[0].startswith("/ws/future/public?stream=BTCUSDT@depth5@100ms")
    finally:
        await exchange.close()
    wrong = exchange_on(sim, publicWsPath="nonsense")
    try:
        with pytest.raises(ccxt.BadRequest, match=r"options\['publicWsPath'\] is 'nonsense'"):
            await wrong.watch_ohlcv(SYMBOL)
    finally:
        await wrong.close()


# -- the cache semantics -----------------------------------------------------------------------


async def test_each_depth_message_replaces_the_book(sim: Simulator) -> None:
    """No sequence numbers: a snapshot replaces the book (nothing of the previous one
    survives), ``nonce`` is None, ``limit`` picks the depth stream and trims."""
    exchange = exchange_on(sim)
    try:
        book = await asyncio.wait_for(exchange.watch_order_book(SYMBOL, 3), 10)
        assert len(book["bids"]) == 3
        assert len(book["asks"]) == 3
        assert book["nonce"] is None
        assert book["timestamp"] is not None
        assert "BTCUSDT@depth5@100ms" in sim.public_opened[-1]
        await sim.set_price("BTCUSDT", "50000")  # far from every level the book had
        # the market drifts from there, but nowhere near the old levels (~96,000)
        await until(lambda: exchange.orderbooks[SYMBOL]["bids"][0][0] < 60000)
        book = await asyncio.wait_for(exchange.watch_order_book(SYMBOL, 3), 10)
        assert all(price < 60000 for price, _ in book["bids"])
        assert all(price < 60000 for price, _ in book["asks"])  # no stale level left
        deeper = await asyncio.wait_for(exchange.watch_order_book(SYMBOL, 15), 10)
        assert len(deeper["bids"]) == 15
        assert "BTCUSDT@depth20@100ms" in sim.public_opened[-1]
    finally:
        await exchange.close()


async def test_one_connection_serves_every_instance_of_the_process(sim: Simulator) -> None:
    first, second = exchange_on(sim), exchange_on(sim)
    try:
        await asyncio.wait_for(first.watch_order_book(SYMBOL), 10)
        await asyncio.wait_for(second.watch_ohlcv(OTHER, "1m"), 10)
        await asyncio.wait_for(first.watch_order_book(SYMBOL), 10)
        assert len(sim.public_live) == 1
        assert "BTCUSDT@depth5@100ms/ETHUSDT@kline_1min" in sim.public_opened[-1]
    finally:
        await first.close()
        await second.close()
    await until(lambda: not sim.public_live)  # the last subscriber gone: closed


# -- faults ------------------------------------------------------------------------------------


async def test_a_dropped_connection_is_resubscribed(sim: Simulator) -> None:
    exchange = exchange_on(sim)
    try:
        await asyncio.wait_for(exchange.watch_order_book(SYMBOL), 10)
        await asyncio.wait_for(exchange.watch_ohlcv(SYMBOL, "1m"), 10)
        opened = len(sim.public_opened)
        assert sim.drop_public() == 1
        await until(lambda: len(sim.public_opened) > opened and bool(sim.public_live))
        assert sim.public_opened[-1] == sim.public_opened[opened - 1]  # the same streams
        await asyncio.wait_for(exchange.watch_order_book(SYMBOL), 10)
        await asyncio.wait_for(exchange.watch_ohlcv(SYMBOL, "1m"), 10)
        assert exchange.options["publicFeed"] == "stream"
    finally:
        await exchange.close()


async def test_a_silent_connection_is_reopened(sim: Simulator) -> None:
    exchange = exchange_on(sim, publicSilence=0.5, publicWindow=30.0)
    try:
        await asyncio.wait_for(exchange.watch_order_book(SYMBOL), 10)
        opened = len(sim.public_opened)
        sim.stall_public(1.0)  # silent past publicSilence: reopened, then it speaks again
        await until(lambda: len(sim.public_opened) > opened)
        await asyncio.wait_for(exchange.watch_order_book(SYMBOL), 10)
    finally:
        await exchange.close()


async def test_no_stream_for_the_window_hands_over_to_polling_and_back(sim: Simulator) -> None:
    """A stream that stays silent longer than ``publicWindow``: the same calls go on from
    REST, and the stream takes over again when it opens."""
    exchange = exchange_on(sim, publicSilence=0.3, publicWindow=0.5)
    try:
        await asyncio.wait_for(exchange.watch_order_book(SYMBOL), 10)
        read = books_read(sim)  # the stream fed that one: no REST book yet
        sim.stall_public(3.0)  # every connection opened in the next 3 s is silent too
        await until(lambda: exchange.options["publicFeed"] == "polling")
        await asyncio.wait_for(exchange.watch_order_book(SYMBOL), 10)
        # the stream is silent, so only REST can have answered (the read that did may have
        # reached the simulator before this call, while its answer was still on its way)
        assert books_read(sim) > read
        await until(lambda: exchange.options["publicFeed"] == "stream", 15)
        await asyncio.wait_for(exchange.watch_order_book(SYMBOL), 10)
    finally:
        await exchange.close()


async def test_garbage_frames_are_reported_and_skipped(
    sim: Simulator, caplog: pytest.LogCaptureFixture
) -> None:
    exchange = exchange_on(sim)
    caplog.set_level(logging.WARNING, "bitmusa_plugin")
    try:
        await asyncio.wait_for(exchange.watch_order_book(SYMBOL), 10)
        opened = len(sim.public_opened)
        await sim.garbage_public(6)
        await until(lambda: exchange._public_rejected >= 6)
        book = await asyncio.wait_for(exchange.watch_order_book(SYMBOL), 10)
        assert book["bids"]
        assert book["asks"]
        assert len(sim.public_opened) == opened  # skipped, not a reason to reconnect
        skipped = [r.getMessage() for r in caplog.records if "frame skipped" in r.getMessage()]
        assert len(skipped) == 6
        assert all("\n" not in line for line in skipped)
    finally:
        await exchange.close()


# -- un_watch ----------------------------------------------------------------------------------


async def test_un_watch_stops_the_subscription(sim: Simulator) -> None:
    exchange = exchange_on(sim)
    try:
        await asyncio.wait_for(exchange.watch_order_book(SYMBOL), 10)
        await asyncio.wait_for(exchange.watch_ohlcv(SYMBOL, "1m"), 10)
        waiting = asyncio.ensure_future(exchange.watch_order_book(SYMBOL))
        await asyncio.sleep(0)
        assert await exchange.un_watch_order_book(SYMBOL) is True
        with pytest.raises(ccxt.UnsubscribeError):
            await asyncio.wait_for(waiting, 5)
        assert SYMBOL not in exchange.orderbooks
        await until(lambda: "depth" not in sim.public_opened[-1] and len(sim.public_live) == 1)
        await exchange.un_watch_ohlcv(SYMBOL, "1m")
        await until(lambda: not sim.public_live)
        trades = asyncio.ensure_future(exchange.watch_trades(SYMBOL))
        await asyncio.wait_for(trades, 10)
        await exchange.un_watch_trades(SYMBOL)
        polled = len(sim.rest_calls)
        await asyncio.sleep(0.6)  # three poll intervals: a poller still running would call
        assert len(sim.rest_calls) == polled
    finally:
        await exchange.close()


async def test_a_bad_symbol_or_timeframe_is_one_clear_error(sim: Simulator) -> None:
    exchange = exchange_on(sim)
    try:
        with pytest.raises(ccxt.BadSymbol):
            await exchange.watch_order_book("NOPE/USDT:USDT")
        with pytest.raises(ccxt.NotSupported, match="timeframe '7m'"):
            await exchange.watch_ohlcv(SYMBOL, "7m")
        with pytest.raises(ccxt.BadRequest, match="limit 0"):
            await exchange.watch_order_book(SYMBOL, 0)
    finally:
        await exchange.close()


async def test_the_public_connection_is_lazy(sim: Simulator) -> None:
    """An account that watches no market data and holds no position opens no public
    connection (issue 21: start-up costs the REST allowance alone)."""
    exchange = exchange_on(sim)
    try:
        await asyncio.wait_for(exchange.watch_balance(), 10)
        await exchange.fetch_ticker(SYMBOL)
        assert sim.public_opened == []
        assert exchange.options["publicFeed"] is None
    finally:
        await exchange.close()


async def test_one_ticker_read_per_interval_serves_every_instance() -> None:
    from bitmusa_plugin._ccxt.public import _shared_read

    calls = []

    async def read() -> int:
        calls.append(1)
        await asyncio.sleep(0.01)
        return len(calls)

    key = (asyncio.get_running_loop(), "http://x", "BTCUSDT")
    answers = await asyncio.gather(*(_shared_read(key, 60.0, read) for _ in range(50)))
    assert answers == [1] * 50
    assert len(calls) == 1
    assert await _shared_read(key, 0.0, read) == 2  # past the interval: read again


# -- positions' mark price ---------------------------------------------------------------------


async def _open_long(sim: Simulator, exchange: Any) -> dict[str, Any]:
    await sim.set_price("BTCUSDT", "100000")
    await exchange.load_markets()
    await exchange.watch_balance()  # the stream runs: the fill is seen
    await exchange.create_order(SYMBOL, "market", "buy", 0.01)
    for _ in range(50):
        positions = await asyncio.wait_for(exchange.watch_positions([SYMBOL]), 10)
        live = [p for p in positions if p["contracts"] and p["markPrice"] is not None]
        if live:
            position: dict[str, Any] = live[-1]
            return position
    raise AssertionError("no priced position")


def _consistent(position: dict[str, Any]) -> None:
    """``notional``, ``unrealizedPnl`` and ``percentage`` follow from ``markPrice`` as
    ccxt's ``safe_position`` derives them."""
    mark, entry = str(position["markPrice"]), str(position["entryPrice"])
    size = Precise.string_mul(str(position["contracts"]), str(position["contractSize"]))
    assert position["notional"] == float(Precise.string_mul(size, mark))
    diff = Precise.string_sub(mark, entry)
    if position["side"] == "short":
        diff = Precise.string_neg(diff)
    assert position["unrealizedPnl"] == float(Precise.string_mul(size, diff))
    assert position["percentage"] is not None


async def test_positions_carry_a_mark_price_recomputed_as_it_moves(sim: Simulator) -> None:
    exchange = exchange_on(sim)
    try:
        position = await _open_long(sim, exchange)
        _consistent(position)
        await sim.set_price("BTCUSDT", "110000")  # far beyond the market's own drift
        for _ in range(100):  # watch_positions delivers the move without a position frame
            positions = await asyncio.wait_for(exchange.watch_positions([SYMBOL]), 10)
            moved = [p for p in positions if p["markPrice"] and p["markPrice"] > 105000]
            if moved:
                break
        _consistent(moved[-1])
        assert moved[-1]["unrealizedPnl"] > 0
        assert "BTCUSDT@kline_1min" in sim.public_opened[-1]
        # priced from the stream alone: none of the REST allowance (issue 21's start-up)
        assert not [c for c in sim.rest_calls if c[0] == "GET /future/market"]
    finally:
        await exchange.close()


async def test_a_one_way_flip_is_priced_at_once_with_the_closed_sides_mark(
    sim: Simulator,
) -> None:
    """A flip closes the long (its price subscription goes) and opens the short: the short
    takes the mark the long closed with, at once, rather than waiting for the new
    subscription's first candle (none comes here: the market is paused)."""
    exchange = exchange_on(sim)
    try:
        mark = (await _open_long(sim, exchange))["markPrice"]
        sim.paused = True  # no market move, no candle from now on
        await exchange.create_order(SYMBOL, "market", "sell", 0.02)

        async def short() -> dict[str, Any]:
            while True:
                for p in await exchange.watch_positions([SYMBOL]):
                    if p["side"] == "short" and p["contracts"]:
                        found: dict[str, Any] = p
                        return found

        flipped = await asyncio.wait_for(short(), 3)  # publicWindow is 10 s
        assert flipped["markPrice"] == mark
        _consistent(flipped)
    finally:
        await exchange.close()


@pytest.mark.bitmusa_simulator(public_ws_path="none")
async def test_positions_are_priced_from_the_rest_ticker_without_a_stream(
    sim: Simulator,
) -> None:
    exchange = exchange_on(sim)
    try:
        position = await _open_long(sim, exchange)
        _consistent(position)
        # up (a long at 10x is liquidated 10 % down), far beyond the market's own drift
        await sim.set_price("BTCUSDT", "108000")
        for _ in range(100):
            positions = await asyncio.wait_for(exchange.watch_positions([SYMBOL]), 10)
            moved = [p for p in positions if p["markPrice"] and p["markPrice"] > 104000]
            if moved:
                break
        _consistent(moved[-1])
        assert moved[-1]["unrealizedPnl"] > 0
        assert exchange.options["publicFeed"] == "polling"
        assert exchange._marks[SYMBOL][1] == "mark"  # the REST ticker's mark_price
    finally:
        await exchange.close()


async def test_ccxt_pros_own_watch_positions_test_passes(sim: Simulator) -> None:
    exchange = exchange_on(sim)
    try:
        await _open_long(sim, exchange)
        fast_clock(exchange, 20)
        assert await asyncio.wait_for(ccxt_test("watch_positions")(exchange, {}, SYMBOL), 60)
    finally:
        await exchange.close()


# -- the frames --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("frame", "kind"),
    [
        ("not json", "malformed_json"),
        ("[1]", "not_an_object"),
        ('{"stream": "X@ticker", "data": {}}', "unknown_stream"),
        ('{"stream": "BTCUSDT@kline_1min", "data": {"o": 1}}', "missing_field"),
        ('{"stream": "BTCUSDT@kline_1min", "data": {"t": 1, "o": "x"}}', "invalid_field"),
        (
            '{"stream": "BTCUSDT@depth5@1s", "data": {"bids": [{"price": "-1", "amount": 1}]}}',
            "invalid_value",
        ),
    ],
)
def test_bad_public_frames_are_rejected_with_one_line(frame: str, kind: str) -> None:
    with pytest.raises(Reject) as raised:
        pub.decode(frame)
    assert raised.value.kind == kind
    assert "\n" not in raised.value.message


def test_public_frames_decode_with_strings_nulls_and_extra_fields() -> None:
    depth = pub.decode(
        '{"stream": "BTCUSDT@depth5@1s", "eventTime": "7", "extra": 1, "data": {"updateTime":'
        ' "null", "bids": [{"price": "10.5", "amount": "2"}, {"price": 10, "amount": 0}],'
        ' "asks": [[11, "1"]]}}'
    )
    assert depth == pub.Depth("BTCUSDT@depth5@1s", "BTCUSDT", 5, 7, [(10.5, 2.0)], [(11.0, 1.0)])
    kline = pub.decode(
        '{"stream": "BTCUSDT@kline_1min", "eventTime": 9, "data": {"s": "BTC/USDT", "o": "1",'
        ' "h": 2, "l": "0.5", "c": "1.5", "t": 60000, "T": 119999, "i": "1min", "q": "3",'
        ' "v": "4", "u": 61000}}'
    )
    assert kline == pub.Kline(
        "BTCUSDT@kline_1min", "BTCUSDT", "1min", 61000, 60000, 1.0, 2.0, 0.5, 1.5, 3.0
    )
    assert pub.depth_level(None) == 5
    assert pub.depth_level(6) == 10
    assert pub.depth_level(50) == 20


async def test_a_hedged_long_and_short_wait_for_their_first_price_side_by_side(
    sim: Simulator,
) -> None:
    """Both sides of a hedged market open before its first price: each is delivered
    priced when it comes (keyed by symbol alone, the short replaced the long)."""
    exchange = exchange_on(sim)
    try:
        long = await _open_long(sim, exchange)
        exchange._marks.pop(SYMBOL)  # as before the market's first price
        hedged = {**long, "hedged": True}
        short = {**hedged, "side": "short", "id": None}
        for position in (hedged, short):
            exchange._on_position({**position, "markPrice": None})
        assert len(exchange._unpriced) == 2
        exchange._set_mark(SYMBOL, 101000.0, "last")
        priced = {p["side"]: p for p in exchange.positions if p["symbol"] == SYMBOL}
        assert priced["long"]["markPrice"] == priced["short"]["markPrice"] == 101000.0
        _consistent(priced["long"])
        _consistent(priced["short"])
        assert not exchange._unpriced
    finally:
        await exchange.close()
