"""The public market stream's vocabulary: its stream names and its frames decoded into
facts (REFERENCE.md §8; the draft DMW, unpublished). Beside :mod:`.wire`, which knows the
user stream's fields; pure, no I/O, no clock.

The draft has two streams, and both push whole states, never deltas:

* ``<ticker>@depth<5|10|20>@<1s|100ms>``: the top levels of the book, ``{updateTime, bids:
  [{price, amount}], asks: [...]}``, with no sequence number: each message is a snapshot;
* ``<ticker>@kline_<interval>`` every 250 ms: the candle now forming, ``{s, o, h, l, c, t,
  T, i, q, v, u}`` (``q`` the base volume, ``v`` the quote value).

There is no ticker stream and no public-trade stream in any source: the drop-in's
``watch_ticker`` and ``watch_trades`` read REST (docs/ccxt.md, "Public market streams").
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import orjson

from bitmusa_plugin._core.numbers import Reject, is_missing, number, timestamp

__all__ = [
    "DEPTH_LEVELS",
    "DEPTH_SPEEDS",
    "Depth",
    "Kline",
    "decode",
    "depth_level",
    "depth_stream",
    "kline_stream",
    "ticker_of",
]

#: the levels a depth stream offers (the draft's default is 5)
DEPTH_LEVELS = (5, 10, 20)
#: how often a depth stream pushes (the draft's default is 1s)
DEPTH_SPEEDS = ("100ms", "1s")

_DEPTH = re.compile(r"^([A-Za-z0-9]+)@depth(5|10|20)@(1s|100ms)$")
_KLINE = re.compile(r"^([A-Za-z0-9]+)@kline_([0-9A-Za-z]+)$")


@dataclass(frozen=True, slots=True)
class Depth:
    """One depth message: the top ``level`` levels, both sides best first."""

    stream: str
    ticker: str
    level: int
    time: int | None  # updateTime, else eventTime
    bids: list[tuple[float, float]]
    asks: list[tuple[float, float]]


@dataclass(frozen=True, slots=True)
class Kline:
    """One kline message: the candle that opens at ``start``, as it stands."""

    stream: str
    ticker: str
    interval: str
    time: int | None  # u (the candle's last update), else eventTime
    start: int
    open: float
    high: float
    low: float
    close: float
    volume: float  # q: base units


def depth_level(limit: int | None) -> int:
    """The smallest depth stream that holds ``limit`` levels a side (20 at most; the draft's
    5 without a limit)."""
    if limit is None:
        return DEPTH_LEVELS[0]
    return next((n for n in DEPTH_LEVELS if n >= limit), DEPTH_LEVELS[-1])


def depth_stream(ticker: str, level: int, speed: str) -> str:
    return f"{ticker}@depth{level}@{speed}"


def kline_stream(ticker: str, interval: str) -> str:
    return f"{ticker}@kline_{interval}"


def ticker_of(name: str) -> str:
    return name.split("@", 1)[0]


def decode(text: str | bytes) -> Depth | Kline:
    """One public frame -> its facts. Raises :class:`Reject` (one line: what is wrong) for
    anything else: not JSON, not an object, an unknown stream, a field missing or not a
    number. Extra fields are ignored; numbers may be strings."""
    try:
        frame = orjson.loads(text)
    except orjson.JSONDecodeError:
        raise Reject("malformed_json", "public frame: not JSON") from None
    if type(frame) is not dict:
        raise Reject("not_an_object", "public frame: not a JSON object")
    stream, data = frame.get("stream"), frame.get("data")
    if type(stream) is not str or type(data) is not dict:
        raise Reject("invalid_field", "public frame: no 'stream' name or 'data' object")
    event_time = _time(frame.get("eventTime"), "eventTime")
    depth = _DEPTH.match(stream)
    if depth is not None:
        level = int(depth.group(2))
        update = _time(data.get("updateTime"), "updateTime")
        return Depth(
            stream,
            depth.group(1),
            level,
            update if update is not None else event_time,
            _levels(data.get("bids"), "bids")[:level],
            _levels(data.get("asks"), "asks")[:level],
        )
    kline = _KLINE.match(stream)
    if kline is not None:
        start = _time(data.get("t"), "t")
        if start is None:
            raise Reject("missing_field", f"public frame {stream}: no candle open time 't'")
        update = _time(data.get("u"), "u")
        return Kline(
            stream,
            kline.group(1),
            kline.group(2),
            update if update is not None else event_time,
            start,
            _required(data.get("o"), stream, "o"),
            _required(data.get("h"), stream, "h"),
            _required(data.get("l"), stream, "l"),
            _required(data.get("c"), stream, "c"),
            _required(data.get("q"), stream, "q"),
        )
    raise Reject("unknown_stream", f"public frame: unknown stream {stream[:64]!r}")


def _time(value: object, name: str) -> int | None:
    try:
        return None if is_missing(value) else timestamp(value, name)
    except Reject as exc:
        raise Reject(exc.kind, f"public frame: {exc.message}") from None


def _required(value: object, stream: str, name: str) -> float:
    try:
        result = number(value, name)
    except Reject as exc:
        raise Reject(exc.kind, f"public frame {stream}: {exc.message}") from None
    if result is None:
        raise Reject("missing_field", f"public frame {stream}: no {name!r}")
    return result


def _levels(value: Any, side: str) -> list[tuple[float, float]]:
    """``[{price, amount}]`` (or ``[[price, amount]]``), zero amounts dropped, as given."""
    if value is None:
        return []
    if type(value) is not list:
        raise Reject("invalid_field", f"public frame: depth {side} is not a list")
    out = []
    for level in value:
        if type(level) is dict:
            price, amount = level.get("price"), level.get("amount")
        elif type(level) is list and len(level) >= 2:
            price, amount = level[0], level[1]
        else:
            raise Reject("invalid_field", f"public frame: a depth {side} level is malformed")
        try:
            p, a = number(price, "price"), number(amount, "amount")
        except Reject as exc:
            raise Reject(exc.kind, f"public frame: depth {side}: {exc.message}") from None
        if p is None or a is None or p <= 0 or a < 0:
            raise Reject("invalid_value", f"public frame: a depth {side} level is not > 0")
        if a > 0:
            out.append((p, a))
    return out
