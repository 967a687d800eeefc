"""The live fill's trade, built with its helpers spelt out (``fills._trade``), is the trade
the long way builds (``Fills._live``), and an order's live trades are what ccxt's
``Precise`` derives from its cumulative figures (issue 21). The speed is measured by
benchmarks/, never here."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from ccxt.base.precise import Precise
from hypothesis import given, settings
from hypothesis import strategies as st

from bitmusa_plugin._core import compiled, fills, numbers
from bitmusa_plugin._core.fills import Fills
from bitmusa_plugin._core.mapping import Mapped, Mapper
from bitmusa_plugin._core.numbers import MAX_TIMESTAMP, Pair, Reject, iso8601
from bitmusa_plugin._core.symbols import SymbolMap
from bitmusa_plugin.testing import order_frame

#: exact decimals of every shape a fill's figures take: small and past 2**53, scales from
#: an exponent's negative ones to far beyond a double's 22 exact powers of ten
_SCALES = st.integers(-6, 40)
_POSITIVE = st.tuples(st.integers(1, 10**22) | st.integers(1, 999), _SCALES)
_ANY = st.tuples(st.integers(-(10**22), 10**22) | st.integers(-999, 999), _SCALES)
_TIMES = st.none() | st.sampled_from([0, 999, 1_700_703_548_846]) | st.integers(0, MAX_TIMESTAMP)


@st.composite
def _orders(draw: st.DrawFn) -> dict[str, Any]:
    return {
        "id": draw(st.sampled_from(["F1", "C171558199502193", "x:y"])),
        "info": {"orderId": "F1"},
        "symbol": draw(st.sampled_from(["XRP/USDT:USDT", None])),
        "type": draw(st.sampled_from(["market", "limit", None, "take_profit"])),
        "side": draw(st.sampled_from(["buy", "sell", None])),
        "postOnly": draw(st.sampled_from([True, False, None])),
        "lastTradeTimestamp": draw(_TIMES),
    }


def _outcome(build: Any, *args: Any) -> str:
    try:
        return repr(build(*args))  # the keys in order, and each float's exact repr
    except Reject as exc:
        return f"Reject({exc.kind}, {exc.message})"


@settings(max_examples=3000, deadline=None)
@given(_orders(), st.tuples(_POSITIVE, _ANY, _POSITIVE), _TIMES, st.booleans())
def test_a_live_fills_trade_is_the_one_the_long_way_builds(
    order: dict[str, Any], fill: tuple[Pair, Pair, Pair], event_time: int | None, seen: bool
) -> None:
    amount, cost, cumulative = fill  # the increase, its cost, the cumulative fill after it
    if seen:  # the date's second already cached, or not
        iso8601(event_time)
        iso8601(order["lastTradeTimestamp"])
    else:
        numbers.ISO_PREFIX.clear()
    long_way = Fills(SymbolMap())._live
    assert _outcome(fills._trade, order, amount, cost, cumulative, event_time) == _outcome(
        long_way, order, amount, cost, cumulative, event_time
    )


def _text(value: Decimal) -> str:
    return f"{value:f}"


_STEPS = st.lists(
    st.tuples(
        st.builds(lambda i, s: Decimal(i).scaleb(-s), st.integers(0, 10**9), st.integers(0, 8)),
        st.builds(lambda i: Decimal(i).scaleb(-6), st.integers(0, 10**10)),
    ),
    min_size=1,
    max_size=6,
)


@settings(max_examples=500, deadline=None)
@given(_STEPS, st.sampled_from(["PARTIAL", "FILLED", "CANCELLED"]))
def test_an_orders_live_trades_are_precises_differences_of_its_cumulative_figures(
    steps: list[tuple[Decimal, Decimal]], last: str
) -> None:
    """Each update that fills beyond the last one delivered is one trade: the increase of
    the order's ``filled`` and ``cost`` (the decimals of their floats), their quotient at
    18 places as ccxt's ``Precise`` takes it, each as ``float(str(...))``; the id the
    cumulative fill, normalised."""
    numbers.READ_CACHE.clear()
    mapper, book = Mapper(), Fills(SymbolMap())
    delivered = (Decimal(0), Decimal(0))
    for n, (step_filled, step_value) in enumerate(steps):
        filled = delivered[0] + step_filled if n % 3 else step_filled  # now and then back
        value = delivered[1] + step_value
        status = last if n == len(steps) - 1 else "PARTIAL"
        frame = order_frame(
            "F1", amount="10000000000", status=status, filled=_text(filled), value=_text(value)
        )
        result = mapper.feed(frame, 0)
        assert isinstance(result, Mapped)
        trades = book.on_order(result.obj, 1_700_703_548_846 + n)
        # the figures are the order's floats' (which are the text's to 15 digits)
        filled = Decimal(repr(result.obj["filled"]))
        value = Decimal(repr(result.obj["cost"]))
        if filled <= delivered[0]:
            assert trades == []  # nothing beyond what was delivered
            continue
        amount, cost = filled - delivered[0], value - delivered[1]
        (trade,) = trades
        assert trade["id"] == f"F1:{Precise.string_add(_text(filled), '0')}"
        assert trade["amount"] == float(Precise.string_sub(_text(filled), _text(delivered[0])))
        assert trade["cost"] == float(Precise.string_sub(_text(value), _text(delivered[1])))
        if cost > 0:
            quotient = Precise.string_div(_text(cost), _text(amount), 18)
            assert trade["price"] == float(quotient)
        else:
            assert trade["price"] is None
        assert trade["datetime"] == iso8601(1_700_703_548_846 + n)
        delivered = (filled, value)
        if status != "PARTIAL":
            break


@pytest.mark.parametrize(
    ("cumulative", "text"),
    [((540, 1), "54"), ((5, 1), "0.5"), ((5, 3), "0.005"), ((1, -3), "1000"), ((1200, 0), "1200")],
)
def test_a_trades_id_is_the_cumulative_fill_normalised(cumulative: Pair, text: str) -> None:
    order: dict[str, Any] = {"id": "F1", "info": {}, "symbol": None, "type": "limit"}
    order |= {"side": "buy", "postOnly": False, "lastTradeTimestamp": None}
    assert fills._trade(order, (1, 0), (1, 0), cumulative, 0)["id"] == f"F1:{text}"


class _LongForget(Fills):
    """``Fills`` with ``_forget``'s expiry as it was: the oldest entry looked at each time."""

    __slots__ = ()

    def _forget(self, order_id: str, *, finished: bool) -> None:
        self._filled.pop(order_id, None)
        self._seen.pop(order_id, None)
        side = self._sides.pop(order_id, None)
        if finished:
            done, now = self._done, self._latest
            done[order_id] = (now, side)
            done.move_to_end(order_id)
            while done and (
                len(done) > fills.MAX_FACTS
                or next(iter(done.values()))[0] < now - fills.DONE_KEEP_MS
            ):
                done.popitem(last=False)


_STEPS_DONE = st.lists(
    st.tuples(
        st.sampled_from(["finish", "learn", "inherit"]),
        st.sampled_from([f"F{i}" for i in range(6)]),
        st.integers(0, 12_000),  # how far the newest event time moves on (0: not at all)
    ),
    max_size=40,
)


@pytest.mark.skipif(
    compiled(),
    reason="its reference subclasses Fills, which a compiled Fills forbids; the expiry is "
    "the same source in both builds, and the pure run holds it",
)
@settings(max_examples=1000, deadline=None)
@given(_STEPS_DONE, st.integers(1, 4))
def test_the_orders_remembered_done_are_those_the_long_way_remembers(
    steps: list[tuple[str, str, int]], most: int
) -> None:
    """``_forget`` looks at the oldest of the orders delivered done only when one may be
    due (``_done_since``); what it remembers, and for how long, is what looking each time
    gives, through repeated ends, sides learnt after, a takeover's inherited states and
    the MAX_FACTS bound."""
    quick, long_way = Fills(SymbolMap()), _LongForget(SymbolMap())
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(fills, "MAX_FACTS", most)
        now = 1_700_703_548_846
        for action, order_id, later in steps:
            now += later
            for book in (quick, long_way):
                if action == "finish":
                    book._latest = max(book._latest, now)
                    book.forget(order_id, finished=True)
                elif action == "learn":
                    book.learn(order_id, "buy")
                else:
                    order = {"id": order_id, "side": "sell", "filled": 1.0, "status": "closed"}
                    book.inherit([order | {"cost": 1.0, "info": {}}], now)
            assert list(quick._done.items()) == list(long_way._done.items())
