"""The hot path's shortcuts give what the long way gives (issue 21), and an idle stream stays
small. The speed itself is measured by benchmarks/, never here."""

from __future__ import annotations

import asyncio
import gc
import tracemalloc
from decimal import Decimal, localcontext

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bitmusa_plugin import hookimpl
from bitmusa_plugin._core import build, numbers, wire
from bitmusa_plugin._core.mapping import Mapped, Mapper
from bitmusa_plugin._core.numbers import Reject, norm, number, pair, read, to_float
from bitmusa_plugin._core.symbols import SymbolMap
from bitmusa_plugin._engine.inbox import Inbox
from bitmusa_plugin._engine.pipeline import Pipeline
from bitmusa_plugin._engine.plugins import PluginRegistry
from bitmusa_plugin._engine.rest import http_client
from bitmusa_plugin._engine.secrets import Credentials
from bitmusa_plugin._engine.stream import AccountConfig, AccountStream
from bitmusa_plugin.testing import order_frame

SORT = orjson.OPT_SORT_KEYS
VALUES: list[object] = ["0.5155", "2", "0", "0.0000", "54.0", " 2.50", "1e-7", "-3.140", "null"]
VALUES += ["NULL", "", None, 7, 0.25, 1e-7, 12345678901234567890]
VALUES += ["25.24500", "540", "1.10", "100.00", "0.10", "10", ".5", "5."]  # zeros to strip


def uncached(value: object) -> object:
    f = number(value, "x")
    return (None, None, None) if f is None else (f, pair(value), norm(pair(value)))


@pytest.mark.parametrize("value", VALUES)
def test_a_cached_read_equals_the_readers_it_stands_for(value: object) -> None:
    numbers.READ_CACHE.clear()
    assert read(value, "x") == uncached(value)  # a miss
    assert read(value, "x") == uncached(value)  # then, for a string, a hit
    numbers.READ_CACHE.clear()
    assert numbers.read_new(value, "x") == uncached(value)  # the builders' miss
    assert read(value, "x") == uncached(value)  # which cached it, for a string


@pytest.mark.parametrize("value", ["abc", "1" * 80, "1e400", "nan"])
def test_a_value_that_fails_is_rejected_every_time_and_never_cached(value: str) -> None:
    numbers.READ_CACHE.clear()
    for _ in range(2):
        with pytest.raises(Reject):
            read(value, "price")
    assert value not in numbers.READ_CACHE


def test_the_read_cache_stays_within_its_bound() -> None:
    numbers.READ_CACHE.clear()
    for i in range(numbers.READ_CACHE_SIZE * 2 + 5):
        read(f"{i}.5", "x")
        assert len(numbers.READ_CACHE) <= numbers.READ_CACHE_SIZE
    assert read("3.5", "x") == uncached("3.5")  # read again after the cache was cleared


@settings(max_examples=3000, deadline=None)
@given(st.integers(-(10**30), 10**30), st.integers(-30, 40))
def test_to_float_and_norm_equal_the_decimal_string_round_trip(i: int, d: int) -> None:
    # scaleb rounds to the context's precision, 28 digits by default: a 30-digit i near a
    # halfway point was then rounded twice, and the expected value was off by one ulp
    with localcontext() as context:
        context.prec = 100
        _to_float_and_norm_round_trip(i, d)


def _to_float_and_norm_round_trip(i: int, d: int) -> None:
    exact = Decimal(i).scaleb(-d)
    try:
        expected = float(str(exact))  # what ccxt does: float(str(Precise))
    except OverflowError:  # pragma: no cover - not reached in this range
        return
    assert to_float((i, d)) == expected
    j, e = norm((i, d))
    assert Decimal(j).scaleb(-e) == exact
    assert e >= 0
    assert j == 0 or e == 0 or j % 10 != 0  # no trailing zero left
    if i == 0:
        assert (j, e) == (0, 0)


# An order's frames from small pools of values, of every JSON type (a code 1, a 1.0, a true
# and a "1" must never stand for one another), so that the repeated fields recur.
_ORDER_POOLS: dict[str, list[object]] = {
    "orderId": ["C1715581995021", "C1715581995022", 7, 7.0, True, "null"],
    "ticker": ["XRPUSDT", "BTCUSDC", 1, None],
    "status": ["TRADING", "PARTIAL", "FILLED", "CANCELLED", 1, True, "weird", [1]],
    "type": ["LIMIT", "MARKET", "limit", 1, 1.0, True, None, {"a": 1}],
    "position": ["BUY", "SELL", 0, 0.0, False, None, "null"],
    "direction": ["OPEN", "CLOSE", 1, 1.0, True, None, "close"],
    "tif": ["GTC", "IOC", 1, 1.0, True, None, "po"],
    "price": ["0.5", "0.50", 0.5, "0", None, True, 1, 1.0, "-1", "1e-3", [1]],
    "amount": ["2", "2.0", 2, 2.0, "0", None, True, "-2", "3"],
    "tradedAmount": ["0", "1", "1.0", 1, "2", "2.5", None, "-1", "null"],
    "value": ["0", "0.5", "1.25", 0.5, None, "-1"],
    "createdTime": [1715581995021, 1715581995021.0, True, 1, "1715581995021", None, -1],
    "completedTime": [None, 1715581995099, "x"],
}
#: the long way's first pick for each field: every frame starts from a valid order
_VALID = {key: pool[0] for key, pool in _ORDER_POOLS.items()}


@st.composite
def _order_frames(draw: st.DrawFn) -> list[bytes]:
    """One order's frames: each the one before with a few fields drawn again."""
    data = dict(_VALID)
    frames = []
    for _ in range(draw(st.integers(1, 12))):
        for key in draw(st.lists(st.sampled_from(list(_ORDER_POOLS)), max_size=3)):
            data[key] = draw(st.sampled_from(_ORDER_POOLS[key]))
        event_time = draw(st.sampled_from([1715581995100, None, "1715581995100"]))
        frame = {"data": data, "stream": "future_order", "eventTime": event_time}
        frames.append(orjson.dumps(frame))
    return frames


@settings(max_examples=1000, deadline=None)
@given(st.lists(_order_frames(), min_size=1, max_size=4))
def test_an_orders_repeated_fields_read_once_give_what_reading_them_again_gives(
    orders: list[list[bytes]],
) -> None:
    """``Mapper.feed`` reuses an order's repeated fields (``build.ORDER_MEMO``); each frame
    maps to what the builder gives without the memo, or is rejected for the same reason."""
    build.ORDER_MEMO.clear()
    mapper = Mapper()
    for raw in (frame for frames in orders for frame in frames):
        result = mapper.feed(raw, 0)
        try:
            _, data, event_time, fields = wire.decode(raw, wire.DEFAULT_MAX_FRAME_BYTES)
            expected: tuple[object, ...] = (
                orjson.dumps(build.order(fields, event_time, SymbolMap(), data), option=SORT),
            )
        except Reject as exc:
            expected = (exc.kind, exc.message)
        if isinstance(result, Mapped):
            assert (orjson.dumps(result.obj, option=SORT),) == expected, raw
        else:
            assert (result.error["kind"], result.error["message"]) == expected, raw


async def test_the_inbox_hands_items_over_in_order_and_times_out() -> None:
    inbox: Inbox[int] = Inbox()
    assert await inbox.get(0.01) is None  # nothing came
    inbox.put(1)
    inbox.put(2)
    assert len(inbox) == 2
    assert await inbox.get(None) == 1
    assert inbox.get_nowait() == 2
    assert inbox.empty()
    waiting = asyncio.ensure_future(inbox.get(None))
    await asyncio.sleep(0)
    inbox.put(3)  # wakes the waiting get
    assert await asyncio.wait_for(waiting, 5) == 3


async def test_cancelling_a_waiting_get_cancels_only_the_wait() -> None:
    inbox: Inbox[str] = Inbox()
    waiting = asyncio.ensure_future(inbox.get(None))
    await asyncio.sleep(0)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    inbox.put("after")  # no stale waiter is woken; the item is there for the next get
    assert await inbox.get(0) == "after"


async def test_an_account_stream_holds_no_queue_or_generator_of_its_own() -> None:
    """What a stream costs before its socket (benchmarks/bench_accounts.py measures the
    whole): an ``asyncio.Queue`` (3.3 KiB) and a ``random.Random`` (2.9 KiB) each took
    10.4 KiB to 4.3 KiB here; the bound fails if either comes back."""
    host = Pipeline(PluginRegistry(), command="test")
    http = http_client(connections=1)
    configs = [
        AccountConfig(
            f"a{i}",
            Credentials("k" * 16, "s" * 16),
            "http://127.0.0.1:9",
            "ws://127.0.0.1:9",
            insecure=True,
        )
        for i in range(50)
    ]
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        streams = [AccountStream(config, host, http=http) for config in configs]
        for stream in streams:
            host.mapper(stream.account)
        grown = tracemalloc.take_snapshot().compare_to(before, "filename")
    finally:
        tracemalloc.stop()
        await http.aclose()
    per_stream = sum(stat.size_diff for stat in grown) / len(streams)
    assert per_stream < 6 * 1024, f"{per_stream:.0f} B a stream"


_PAIRS = st.tuples(st.integers(-(10**30), 10**30) | st.integers(-999, 999), st.integers(-8, 300))


@settings(max_examples=3000, deadline=None)
@given(_PAIRS, _PAIRS)
def test_the_spelt_out_arithmetic_is_precises(a: tuple[int, int], b: tuple[int, int]) -> None:
    """add, sub and div (their powers of ten looked up, not called for) against ccxt's
    ``Precise`` on the same decimals; sub is add of the negation, in the same form."""
    from ccxt.base.precise import Precise

    text_a, text_b = numbers.to_str(a), numbers.to_str(b)
    assert numbers.sub(a, b) == numbers.add(a, (-b[0], b[1]))
    assert Decimal(numbers.to_str(numbers.add(a, b))) == Decimal(Precise.string_add(text_a, text_b))
    assert Decimal(numbers.to_str(numbers.sub(a, b))) == Decimal(Precise.string_sub(text_a, text_b))
    if b[0]:
        quotient = Precise.string_div(text_a, text_b, 18)
        # in Precise's own form (its parse of the text strips trailing zeros): a negative
        # quotient truncates by the form, as Precise's does (see norm())
        assert Decimal(numbers.to_str(numbers.div(norm(a), norm(b)))) == Decimal(quotient)


_AMOUNTS = st.builds(
    lambda i, s: f"{Decimal(i).scaleb(-s):f}", st.integers(0, 10**17), st.integers(0, 20)
)


@settings(max_examples=2000, deadline=None)
@given(_AMOUNTS, _AMOUNTS, _AMOUNTS)
def test_an_orders_remaining_and_average_are_to_float_of_their_exact_derivations(
    amount: str, filled: str, value: str
) -> None:
    """The builder's remaining and average, to_float() and div() spelt out, are what the
    two helpers give (``safe_order``: amount - filled; value / filled at 18 places)."""
    numbers.READ_CACHE.clear()
    data = dict(_VALID, amount=amount, tradedAmount=filled, value=value, status="PARTIAL")
    try:
        order = build.order(wire.order_fields(data), 0, SymbolMap(), data)
    except Reject:
        return  # out of range, or more filled than ordered: not this test's
    amount_p, filled_p, value_p = pair(amount), pair(filled), pair(value)
    if order["amount"] is not None:
        assert order["remaining"] == to_float(numbers.sub(amount_p, filled_p))
    if order["filled"]:
        assert order["average"] == to_float(numbers.div(value_p, norm(filled_p)))
    else:
        assert order["average"] is None


def test_an_order_frame_maps_to_its_streams_hook() -> None:
    """``Mapper.feed`` spells the order stream's hook out (no ``STREAM_HOOKS`` look-up)."""
    result = Mapper().feed(orjson.dumps({"data": _VALID, "stream": "future_order"}), 0)
    assert isinstance(result, Mapped)
    assert (result.hook, result.key) == wire.STREAM_HOOKS["future_order"]


@settings(max_examples=3000, deadline=None)
@given(st.from_regex(r"[0-9]{0,9}(\.[0-9]{0,8})?", fullmatch=True))
def test_a_plain_decimal_texts_read_is_the_readers(text: str) -> None:
    """read_new's plain-digits path (its norm() spelt out for one zero) is the readers'."""
    numbers.READ_CACHE.clear()
    try:
        expected = uncached(text)
    except Reject:
        with pytest.raises(Reject):
            numbers.read_new(text, "x")
        return
    assert numbers.read_new(text, "x") == expected


class _Trades:
    @hookimpl
    def on_trade(self, trade: dict[str, object]) -> None:
        pass


async def test_an_accounts_counters_are_the_same_whoever_listens() -> None:
    """``ingest`` packs no update nobody subscribes to; it counts every frame and trade
    alike either way (``publish_order`` counts them when someone listens)."""
    frames = [
        order_frame("F1", status="TRADING"),
        order_frame("F1", status="PARTIAL", filled="2", value="1"),
        order_frame("F1", status="PARTIAL", filled="5", value="2.5"),
        order_frame("F1", status="CANCELLED", filled="5", value="2.5"),
    ]
    counts = []
    for plugins in ({}, {"trades": _Trades()}):
        registry = PluginRegistry()
        for name, plugin in plugins.items():
            assert registry.register(plugin, name).status == "loaded"
        host = Pipeline(registry, command="test")
        host.start(["a"])
        assert all(host.ingest("a", frame) for frame in frames)
        counts.append(host.stats()["accounts"]["a"]["events"])
        await host.stop()
    assert counts == [{"future_order": 4, "trade": 2}] * 2
