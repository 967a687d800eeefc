"""The mapping gives exactly what ccxt gives for the same facts, and passes ccxt's
validators: on the corpus (every documented example, enum value and code, string and
number variants) and on hypothesis-generated frames."""

from __future__ import annotations

import re
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bitmusa_hookspecs import FRAME_ERROR_KINDS
from bitmusa_plugin._core.mapping import Mapped, Mapper, Rejected
from ccxt_reference import Reference, validate
from conftest import corpus_frames

ERROR_KINDS = FRAME_ERROR_KINDS
RECEIVED = 1_700_703_700_000  # when a test frame was "read": the shell's fact, given here


def canonical(obj: Any) -> bytes:
    # orjson keeps 1 and 1.0 apart, so the comparison checks types as well as values
    return orjson.dumps(obj, option=orjson.OPT_SORT_KEYS)


def oracle_frame(raw: str) -> dict[str, Any]:
    return orjson.loads(re.sub(r",(\s*[}\]])", r"\1", raw))  # type: ignore[no-any-return]


def assert_same_as_ccxt(mapper: Mapper, ref: Reference, raw: str) -> Mapped:
    result = mapper.feed(raw, RECEIVED)
    assert isinstance(result, Mapped), result
    hook, expected = ref.parse_frame(oracle_frame(raw))
    assert result.hook == hook
    assert canonical(result.obj) == canonical(expected), raw
    return result


def test_corpus_equals_ccxt_and_passes_validators() -> None:
    mapper, ref = Mapper("acct"), Reference()
    frames = corpus_frames()
    assert len(frames) > 100
    for raw in frames:
        result = assert_same_as_ccxt(mapper, ref, raw)
        validate(ref, result.hook, result.obj)
        assert result.obj["info"] == result.event["data"]
        assert result.event["account"] == "acct"


def test_documented_wallet_total_is_decimal_exact() -> None:
    raw = (
        '{"data":{"asset":"USDT","free":"9981.51952661","locked":"18.48047339"},'
        '"stream":"future_wallet","eventTime":1700703707123}'
    )
    result = Mapper().feed(raw, RECEIVED)
    assert isinstance(result, Mapped)
    assert result.obj["total"]["USDT"] == 10000.0
    tricky = Mapper().feed(
        raw.replace("9981.51952661", "0.1").replace("18.48047339", "0.2"), RECEIVED
    )
    assert isinstance(tricky, Mapped)
    assert tricky.obj["total"]["USDT"] == 0.3
    assert 0.1 + 0.2 != 0.3  # what a float sum would have given


def test_order_derivations_match_ccxt_semantics() -> None:
    mapper = Mapper()

    def order(**data: Any) -> dict[str, Any]:
        base = {"orderId": "1", "ticker": "XRPUSDT", "createdTime": 1715581995021}
        raw = orjson.dumps({"data": {**base, **data}, "stream": "future_order", "eventTime": 1})
        result = mapper.feed(raw, RECEIVED)
        assert isinstance(result, Mapped), result
        return result.obj

    partial = order(status="PARTIAL", price="0.5", amount="0.3", tradedAmount="0.1", value="0.05")
    assert partial["remaining"] == 0.2  # exact: a float 0.3 - 0.1 is 0.19999999999999998
    assert partial["average"] == 0.5
    assert partial["status"] == "open"
    market = order(
        type="MARKET", price=0, amount="2", tradedAmount="2", value="1.031", status="FILLED"
    )
    assert market["price"] == market["average"] == 0.5155  # market price <- average
    assert market["timeInForce"] == "IOC"
    limit = order(type="LIMIT", price="0", amount="1", status="TRADING")
    assert limit["price"] is None  # a price of 0 means no limit price
    assert order(status=2)["status"] == "canceled"
    assert order(status="WEIRD")["status"] == "weird"  # passes through, never silently open
    assert order(direction="CLOSE")["reduceOnly"] is True
    assert order(position="SELL")["side"] == "sell"
    assert order()["side"] is None
    assert order(tif=1)["timeInForce"] == "IOC"
    assert order(tif="GTC")["postOnly"] is False


def test_position_closing_statuses_are_flat_with_reason_in_info() -> None:
    mapper = Mapper()
    for status in ("USER_CLOSE", "FORCE_CLOSE", "TAKE_PROFIT", "STOP_LOSS"):
        raw = orjson.dumps(
            {
                "data": {
                    "ticker": "XRPUSDT",
                    "status": status,
                    "amount": "3",
                    "value": "1.5",
                    "position": "SELL",
                    "marginMode": "CROSSED",
                    "positionMode": "HEDGE",
                },
                "stream": "future_position",
                "eventTime": 1700703548846,
            }
        )
        result = mapper.feed(raw, RECEIVED)
        assert isinstance(result, Mapped)
        position = result.obj
        assert (position["contracts"], position["notional"]) == (0.0, 0.0)
        assert position["info"]["status"] == status
        assert (position["side"], position["marginMode"], position["hedged"]) == (
            "short",
            "cross",
            True,
        )


def test_wallet_is_cumulative_across_assets() -> None:
    mapper = Mapper()
    for asset, free in (("USDT", "10"), ("BTC", "0.5"), ("USDT", "12")):
        result = mapper.feed(
            orjson.dumps(
                {
                    "data": {"asset": asset, "free": free, "locked": "1"},
                    "stream": "future_wallet",
                    "eventTime": 1700703707123,
                }
            ),
            RECEIVED,
        )
        assert isinstance(result, Mapped)
    assert isinstance(result, Mapped)
    balance = result.obj
    assert balance["free"] == {"USDT": 12.0, "BTC": 0.5}
    assert balance["total"] == {"USDT": 13.0, "BTC": 1.5}
    assert balance["BTC"] == {"free": 0.5, "used": 1.0, "total": 1.5}
    assert balance["info"] == {"asset": "USDT", "free": "12", "locked": "1"}


# -- hypothesis: generated frames against ccxt -------------------------------------------

MISSING = st.sampled_from([None, "null", "NULL", "none", ""])


@st.composite
def decimal_strings(draw: st.DrawFn, max_int: int = 10**9, max_places: int = 12) -> str:
    units = draw(st.integers(0, max_int))
    places = draw(st.integers(0, max_places))
    text = str(units).rjust(places + 1, "0")
    return f"{text[:-places]}.{text[-places:]}" if places else text


def numbers(max_int: int = 10**9, signed: bool = False) -> st.SearchStrategy[Any]:
    value = st.one_of(
        decimal_strings(max_int),
        st.integers(0, max_int),
        st.floats(0, float(max_int), allow_nan=False, allow_infinity=False),
        st.floats(0, 1e-3, allow_nan=False, allow_infinity=False),
    )
    if signed:
        value = st.one_of(value, value.map(lambda v: f"-{v}" if isinstance(v, str) else -v))
    return st.one_of(value, MISSING)


def enums(*values: Any) -> st.SearchStrategy[Any]:
    return st.one_of(st.sampled_from(values), MISSING, st.text(max_size=6))


timestamps = st.one_of(
    st.integers(1230940800001, 1795500000000),
    st.integers(1230940800001, 1795500000000).map(str),
    MISSING,
)


@st.composite
def order_frames(draw: st.DrawFn) -> dict[str, Any]:
    data = {
        "orderId": draw(st.one_of(st.text(min_size=1, max_size=8), st.integers(0, 10**12))),
        "ticker": draw(st.sampled_from(["XRPUSDT", "BTCUSDC", "ETHUSD", "DOGEBTC"])),
        "direction": draw(enums("OPEN", "CLOSE", 0, 1)),
        "type": draw(
            enums("MARKET", "LIMIT", "TAKE_PROFIT", "STOP_LOSS", "LIQUIDATION", 0, 1, 2, 3, 4, "2")
        ),
        "position": draw(enums("BUY", "SELL", 0, 1)),
        "tif": draw(enums("GTC", "IOC", "FOK", 0, 1, 2)),
        "price": draw(numbers()),
        "amount": draw(numbers()),
        "tradedAmount": draw(numbers()),
        "value": draw(numbers(10**12)),
        "status": draw(
            enums("TRADING", "PARTIAL", "FILLED", "CANCELLED", "CANCELED", 0, 1, 2, 3, 4, "4")
        ),
        "createdTime": draw(timestamps),
        "completedTime": draw(timestamps),
    }
    return {"data": data, "stream": "future_order", "eventTime": draw(timestamps)}


@st.composite
def position_frames(draw: st.DrawFn) -> dict[str, Any]:
    data = {
        "ticker": draw(st.sampled_from(["XRPUSDT", "BTCUSDT"])),
        "marginMode": draw(enums("ISOLATED", "CROSSED", "CROSS", 0, 1)),
        "positionMode": draw(enums("ONEWAY", "HEDGE", 0, 1)),
        "position": draw(enums("BUY", "SELL", 0, 1)),
        "status": draw(enums("OPEN", "USER_CLOSE", "FORCE_CLOSE", "TAKE_PROFIT", "STOP_LOSS")),
        "leverage": draw(st.one_of(st.integers(1, 125).map(str), numbers(200))),
        "price": draw(numbers()),
        "amount": draw(numbers()),
        "value": draw(numbers(10**12)),
        "liquidPrice": draw(numbers()),
        "unpnl": draw(numbers(10**6, signed=True)),
        "createdTime": draw(timestamps),
    }
    return {"data": data, "stream": "future_position", "eventTime": draw(timestamps)}


@st.composite
def wallet_frames(draw: st.DrawFn) -> dict[str, Any]:
    data = {
        "asset": draw(st.sampled_from(["USDT", "BTC", "USDC"])),
        "free": draw(numbers(10**12)),
        "locked": draw(numbers(10**12)),
    }
    return {"data": data, "stream": "future_wallet", "eventTime": draw(timestamps)}


@settings(max_examples=600, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.lists(st.one_of(order_frames(), position_frames(), wallet_frames()), max_size=6))
def test_generated_frames_equal_ccxt(frames: list[dict[str, Any]]) -> None:
    mapper, ref = Mapper(), Reference()
    for frame in frames:
        raw = orjson.dumps(frame)
        result = mapper.feed(raw, RECEIVED)
        if isinstance(result, Rejected):
            assert result.error["kind"] in ERROR_KINDS
            assert result.error["raw"] is not None
            continue
        hook, expected = ref.parse_frame(orjson.loads(raw))
        assert hook == result.hook
        assert canonical(result.obj) == canonical(expected)


@st.composite
def consistent_frames(draw: st.DrawFn) -> dict[str, Any]:
    """Frames whose facts are market-consistent, as the validators demand."""
    now_ts = st.integers(1500000000000, 1700000000000)
    kind = draw(st.sampled_from(["order", "position", "wallet"]))
    if kind == "wallet":
        # at most 15 significant digits, as a float must hold free, used and their sum
        figure = decimal_strings(max_int=10**6, max_places=8)
        wallet: dict[str, Any] = {"asset": "USDT", "free": draw(figure), "locked": draw(figure)}
        return {"data": wallet, "stream": "future_wallet", "eventTime": draw(now_ts)}
    if kind == "order":
        amount = draw(st.integers(1, 10**6))
        filled = draw(st.integers(0, amount))
        price = draw(st.integers(1, 10**6))
        scale = draw(st.integers(0, 8))
        order: dict[str, Any] = {
            "orderId": "X",
            "ticker": "BTCUSDT",
            "type": draw(st.sampled_from(["MARKET", "LIMIT", 0, 1])),
            "position": draw(st.sampled_from(["BUY", "SELL"])),
            "direction": draw(st.sampled_from(["OPEN", "CLOSE"])),
            "status": draw(st.sampled_from(["TRADING", "PARTIAL", "FILLED", "CANCELLED"])),
            "price": f"{price}e-{scale}",
            "amount": f"{amount}e-{scale}",
            "tradedAmount": f"{filled}e-{scale}",
            "value": f"{filled * price}e-{2 * scale}",
            "createdTime": draw(now_ts),
        }
        return {"data": order, "stream": "future_order", "eventTime": draw(now_ts)}
    side = draw(st.sampled_from(["BUY", "SELL"]))
    entry = draw(st.integers(100, 10**6))
    liq = entry - draw(st.integers(1, 99)) if side == "BUY" else entry + draw(st.integers(1, 99))
    contracts = draw(st.integers(1, 10**4))
    data: dict[str, Any] = {
        "ticker": "BTCUSDT",
        "marginMode": draw(st.sampled_from(["ISOLATED", "CROSSED"])),
        "positionMode": "ONEWAY",
        "position": side,
        "status": "OPEN",
        "leverage": str(draw(st.integers(1, 125))),
        "price": str(entry),
        "amount": str(contracts),
        "value": str(entry * contracts),
        "liquidPrice": str(liq),
        "unpnl": str(draw(st.integers(-(10**6), 10**6))),
        "createdTime": draw(now_ts),
    }
    return {"data": data, "stream": "future_position", "eventTime": draw(now_ts)}


@settings(max_examples=300, deadline=None)
@given(consistent_frames())
def test_consistent_frames_pass_ccxt_validators(frame: dict[str, Any]) -> None:
    mapper, ref = Mapper(), Reference()
    result = mapper.feed(orjson.dumps(frame), RECEIVED)
    assert isinstance(result, Mapped), result
    validate(ref, result.hook, result.obj)


@pytest.mark.parametrize("raw", [b"\xff\xfe", b"{\x00}", b"[" * 100000, b"1" * 1000])
def test_hostile_bytes_are_rejected_not_raised(raw: bytes) -> None:
    result = Mapper(max_frame_bytes=1 << 20).feed(raw, RECEIVED)
    assert isinstance(result, Rejected)
    assert result.error["kind"] in ERROR_KINDS


@settings(max_examples=500, deadline=None)
@given(st.one_of(st.binary(max_size=300), st.text(max_size=300)))
def test_arbitrary_input_never_raises(raw: bytes | str) -> None:
    result = Mapper().feed(raw, RECEIVED)
    if isinstance(result, Rejected):
        assert result.error["kind"] in ERROR_KINDS


def test_symbols_follow_the_quote_rule_with_overrides_and_one_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from bitmusa_plugin._core.mapping import SymbolMap

    symbols = SymbolMap({"SOLBTC": "SOL/BTC:BTC"})
    assert symbols("XRPUSDT") == "XRP/USDT:USDT"
    assert symbols("ETHUSDC") == "ETH/USDC:USDC"
    assert symbols("BTCUSD") == "BTC/USD:USD"
    assert symbols("SOLBTC") == "SOL/BTC:BTC"  # the user's markets map wins
    with caplog.at_level("WARNING"):
        assert symbols("WEIRDTICKER") == "WEIRDTICKER"  # passes through unchanged...
        assert symbols("WEIRDTICKER") == "WEIRDTICKER"
    warnings = [r for r in caplog.records if "WEIRDTICKER" in r.getMessage()]
    assert len(warnings) == 1  # ...with one warning, not one per frame


def test_the_field_tuples_follow_their_documented_keys() -> None:
    from bitmusa_plugin._core import wire

    for keys, fields in (
        (wire.ORDER_KEYS, wire.order_fields),
        (wire.POSITION_KEYS, wire.position_fields),
    ):
        numbered = {key: n for n, key in enumerate(keys)}
        assert fields(numbered) == tuple(range(len(keys)))
    # decode() spells the same tuples out on the hot path
    spelt: tuple[tuple[str, tuple[str, ...]], ...] = (
        ("future_order", wire.ORDER_KEYS),
        ("future_position", wire.POSITION_KEYS),
        ("future_wallet", ("asset", "free", "locked")),
    )
    for stream, spelt_keys in spelt:
        data = {key: n for n, key in enumerate(spelt_keys)}
        frame = orjson.dumps({"stream": stream, "data": data, "eventTime": 1})
        assert wire.decode(frame, 1 << 16)[3] == tuple(range(len(spelt_keys)))
