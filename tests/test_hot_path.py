"""The hot path's shortcuts give what the long way gives (issue 21), and an idle stream stays
small. The speed itself is measured by benchmarks/, never here."""

from __future__ import annotations

import asyncio
import gc
import tracemalloc
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bitmusa_plugin._core import numbers
from bitmusa_plugin._core.numbers import Reject, norm, number, pair, read, to_float
from bitmusa_plugin._engine.inbox import Inbox
from bitmusa_plugin._engine.pipeline import Pipeline
from bitmusa_plugin._engine.plugins import PluginRegistry
from bitmusa_plugin._engine.rest import http_client
from bitmusa_plugin._engine.secrets import Credentials
from bitmusa_plugin._engine.stream import AccountConfig, AccountStream

VALUES: list[object] = ["0.5155", "2", "0", "0.0000", "54.0", " 2.50", "1e-7", "-3.140", "null"]
VALUES += ["NULL", "", None, 7, 0.25, 1e-7, 12345678901234567890]


def uncached(value: object) -> object:
    f = number(value, "x")
    return (None, None, None) if f is None else (f, pair(value), norm(pair(value)))


@pytest.mark.parametrize("value", VALUES)
def test_a_cached_read_equals_the_readers_it_stands_for(value: object) -> None:
    numbers.READ_CACHE.clear()
    assert read(value, "x") == uncached(value)  # a miss
    assert read(value, "x") == uncached(value)  # then, for a string, a hit


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
