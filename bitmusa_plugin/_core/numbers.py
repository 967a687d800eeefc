"""Exact decimal arithmetic with ccxt's semantics, and tolerant field readers.

ccxt derives fields with ``Precise`` (a decimal as an ``(integer, decimals)`` pair) and
turns the result into a float with ``float(str(result))``. We keep the same pairs, so a
sum such as ``"9981.51952661" + "18.48047339"`` is exactly ``10000``, and a quotient is
truncated at 18 places exactly as ``Precise.string_div`` does. ``integer / 10**decimals``
is Python's correctly rounded int division, so the float equals ``float(str(result))``.

Readers raise :class:`Reject` with a stable ``kind``; the decoder turns that into one
error report for the frame. Nothing here imports ccxt.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone

from bitmusa_hookspecs import ErrorKind

#: A decimal as ccxt's Precise holds it: value == integer * 10**-decimals.
Pair = tuple[int, int]

#: Strings that mean "missing", compared case-insensitively (Bitmusa sends "null").
MISSING_STRINGS = frozenset(("", "null", "none"))

#: Larger magnitudes are rejected: no balance, price or size comes near this, and it
#: keeps every derived value finite.
MAX_ABS = 1e30
#: Smaller non-zero magnitudes are rejected too (5e-324 is no price): derived values such
#: as 1 / leverage then stay finite.
MIN_ABS = 1e-30
#: Longest numeric string accepted (a double's repr is at most 24 characters).
MAX_NUMBER_CHARS = 64
#: Largest decimal exponent accepted, either way; bounds the cost of exact arithmetic.
MAX_EXPONENT = 400
#: Latest timestamp ccxt can render as ISO 8601 (year 9999), in ms.
MAX_TIMESTAMP = 253402300799999

_POW10 = [10**i for i in range(256)]


_FPOW10 = [float(10**i) for i in range(23)]  # exact doubles up to 1e22
#: The powers of ten, for the builders' inlined arithmetic: ``POW10[n]`` for ``n < 256``,
#: ``FPOW10[n]`` as exact doubles for ``n <= 22``.
POW10, FPOW10 = _POW10, _FPOW10
_TWO53 = 2**53


def _p10(n: int) -> int:
    return _POW10[n] if n < 256 else int(10**n)


class Reject(Exception):
    """A frame cannot be accepted. ``kind`` is one of the documented error kinds."""

    def __init__(self, kind: ErrorKind, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


def is_missing(value: object) -> bool:
    """True for ``None`` and the strings that mean missing."""
    return value is None or (type(value) is str and value.lower() in MISSING_STRINGS)


def number(value: object, name: str) -> float | None:
    """A numeric field as ccxt would output it (``float``), or None when missing."""
    t = type(value)
    if t is str:  # the common case first: Bitmusa sends most numbers as strings
        s: str = value  # type: ignore[assignment]
        try:
            f = float(s)
        except ValueError:
            if s.lower() in MISSING_STRINGS:
                return None
            raise Reject("invalid_field", f"{name}: {s[:32]!r} is not a number") from None
        if len(s) > MAX_NUMBER_CHARS:
            raise Reject("invalid_field", f"{name}: number too long")
    elif t is float:
        f = value  # type: ignore[assignment]
    elif t is int:
        f = float(value)  # type: ignore[arg-type]
    elif value is None:
        return None
    else:
        raise Reject("invalid_field", f"{name}: expected a number, got {t.__name__}")
    if -MAX_ABS < f < MAX_ABS and not (f and -MIN_ABS < f < MIN_ABS):  # nan fails too
        return f
    raise Reject("invalid_value", f"{name}: {value!r:.40} is not a number in range")


def pair(value: object) -> Pair:
    """The exact decimal of a value :func:`number` accepted (the same parse as ``Precise``).

    Only call it on a value :func:`number` returned a float for: that validation is what
    makes the fast path below safe (no empty digit strings, no exponent overflow)."""
    t = type(value)
    if t is int:
        return (value, 0)  # type: ignore[return-value]
    s: str = value if t is str else repr(value)  # type: ignore[assignment]
    if "e" in s or "E" in s:
        return _pair_exponent(s)
    head, dot, tail = s.partition(".")
    if not dot:
        return (int(s), 0)
    return (int(head + tail), len(tail))


#: A numeric field read: its float, its exact pair and that pair normalised (:func:`norm`);
#: all None when the value is missing.
Read = tuple[float, Pair, Pair] | tuple[None, None, None]
_NOTHING: Read = (None, None, None)
#: Numeric strings already read (text -> :data:`Read`). An account's frames repeat their
#: numbers (an order's price and amount in every update, its fill in the next one), and
#: reading one (``float``, the range checks, then the exact pair) costs about 1 µs against
#: 30 ns for a lookup. Bounded: cleared when full, so an unusual stream costs a re-read.
READ_CACHE: dict[str, Read] = {}
READ_CACHE_SIZE = 4096


def read(value: object, name: str) -> Read:
    """:func:`number`, :func:`pair` and :func:`norm` of one field at once (``Reject`` as
    :func:`number`), cached for strings: the builders' hot path looks ``READ_CACHE`` up
    itself first and calls :func:`read_new` on a miss."""
    if type(value) is str:
        found = READ_CACHE.get(value)
        if found is not None:
            return found
    return read_new(value, name)


def read_new(value: object, name: str) -> Read:
    """:func:`read` of a value not in ``READ_CACHE`` (any value but a string found there):
    read, and cached if a string. The builders call it after their own look-up missed."""
    result: Read
    if type(value) is str:
        head, dot, tail = value.partition(".")
        digits = head + tail if dot else head
        if len(digits) <= 15 and digits.isdigit() and digits.isascii():
            # the common text, plain ASCII digits with at most one dot: its exact pair
            # straight from the digits, and its float from that pair, which is float(text)
            # itself (integer and power of ten both exact doubles, one correctly rounded
            # division: the same rational rounded once); no range check can fail under 16
            # digits. A third of a miss's cost.
            i = int(digits)
            d = len(tail)
            p: Pair = (i, d)
            # norm(p) spelt out for nothing or one zero to strip (a miss is each fill's
            # figures: a call is a third of its cost); norm() for the rest
            if i % 10:
                n = p
            elif i % 100 and d:
                n = (i // 10, d - 1)
            else:
                n = norm(p)
            result = (i / _FPOW10[d], p, n)
            if len(READ_CACHE) >= READ_CACHE_SIZE:
                READ_CACHE.clear()
            READ_CACHE[value] = result
            return result
    f = number(value, name)
    if f is None:
        result = _NOTHING
    else:
        p = pair(value)
        result = (f, p, norm(p))
    if type(value) is str:
        if len(READ_CACHE) >= READ_CACHE_SIZE:
            READ_CACHE.clear()
        READ_CACHE[value] = result
    return result


def _pair_exponent(s: str) -> Pair:
    mantissa, _, exp = s.lower().partition("e")
    modifier = int(exp)
    if not -MAX_EXPONENT <= modifier <= MAX_EXPONENT:
        raise Reject("invalid_value", f"exponent {modifier} out of range")
    integer, decimals = pair(mantissa)
    return (integer, decimals - modifier)


def to_float(p: Pair) -> float:
    """``float(str(Precise))``, without building the string."""
    i, d = p
    if 0 < d <= 22 and -_TWO53 < i < _TWO53:
        # both exact as doubles, so IEEE division is the correctly rounded quotient
        return i / _FPOW10[d]
    # _p10() spelt out here and in add, sub and div for n < 256: a Python call costs more than
    # the arithmetic it serves (callgrind: about 1,000 instructions a call, four a frame)
    try:
        if d <= 0:
            return float(i * (_POW10[-d] if -d < 256 else _p10(-d)))
        # CPython's int / int is correctly rounded at any size, as float(str(...)) is; an
        # 18-place quotient (div) costs 0.2 µs here against 0.8 µs through norm()
        return i / (_POW10[d] if d < 256 else _p10(d))
    except OverflowError:
        raise Reject("invalid_value", "a derived value is out of range") from None


def add(a: Pair, b: Pair) -> Pair:
    if a[1] == b[1]:
        return (a[0] + b[0], a[1])
    if a[1] > b[1]:
        n = a[1] - b[1]
        return (a[0] + b[0] * (_POW10[n] if n < 256 else _p10(n)), a[1])
    n = b[1] - a[1]
    return (a[0] * (_POW10[n] if n < 256 else _p10(n)) + b[0], b[1])


def sub(a: Pair, b: Pair) -> Pair:
    """``add(a, -b)``, spelt out (one call, not two)."""
    if a[1] == b[1]:
        return (a[0] - b[0], a[1])
    if a[1] > b[1]:
        n = a[1] - b[1]
        return (a[0] - b[0] * (_POW10[n] if n < 256 else _p10(n)), a[1])
    n = b[1] - a[1]
    return (a[0] * (_POW10[n] if n < 256 else _p10(n)) - b[0], b[1])


def div(a: Pair, b: Pair, precision: int = 18) -> Pair:
    """``Precise.div``: truncate toward zero at ``precision`` places (ccxt's quirks kept)."""
    distance = precision - a[1] + b[1]
    if distance == 0:
        numerator = a[0]
    elif distance < 0:
        n = -distance
        numerator = a[0] // (_POW10[n] if n < 256 else _p10(n))  # floors, as Precise does
    else:
        numerator = a[0] * (_POW10[distance] if distance < 256 else _p10(distance))
    result, mod = divmod(numerator, b[0])
    if result < 0 and mod:
        result += 1
    return (result, precision)


def mul(a: Pair, b: Pair) -> Pair:
    return (a[0] * b[0], a[1] + b[1])


def timestamp(value: object, name: str) -> int | None:
    """Milliseconds from an int, a digit string or a float (as ccxt's ``safe_integer``)."""
    t = type(value)
    if t is int:
        ts: int = value  # type: ignore[assignment]
    elif t is str:
        s: str = value  # type: ignore[assignment]
        if s.isdigit() and s.isascii() and len(s) <= 16:
            ts = int(s)
        elif s.lower() in MISSING_STRINGS:
            return None
        else:
            raise Reject("invalid_field", f"{name}: {s[:32]!r} is not a timestamp")
    elif t is float:
        f: float = value  # type: ignore[assignment]
        if not math.isfinite(f):
            raise Reject("invalid_value", f"{name}: {f} is not a timestamp")
        ts = int(f)
    elif value is None:
        return None
    else:
        raise Reject("invalid_field", f"{name}: expected a timestamp, got {t.__name__}")
    if not 0 <= ts <= MAX_TIMESTAMP:
        raise Reject("invalid_value", f"{name}: {ts} is out of range")
    return ts


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_ISO_PREFIX: dict[int, str] = {}
_ISO_MILLIS = [f".{ms:03d}Z" for ms in range(1000)]
#: :func:`iso8601`'s cache (seconds -> ``"YYYY-MM-DDTHH:MM:SS"``) and millisecond suffixes,
#: for a hot path that looks the prefix up itself and calls :func:`iso8601` on a miss.
ISO_PREFIX, ISO_MILLIS = _ISO_PREFIX, _ISO_MILLIS


def iso8601(ms: int | None) -> str | None:
    """ccxt's ``iso8601`` for an in-range timestamp; the per-second prefix is cached."""
    if ms is None:
        return None
    seconds, millis = divmod(ms, 1000)
    prefix = _ISO_PREFIX.get(seconds)
    if prefix is None:
        if len(_ISO_PREFIX) >= 256:  # events cluster in time: a small cache suffices
            _ISO_PREFIX.clear()
        if seconds < 0:
            return None
        prefix = (_EPOCH + timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%S")
        if len(prefix) != 19:
            return None
        _ISO_PREFIX[seconds] = prefix
    return prefix + _ISO_MILLIS[millis]


def norm(p: Pair) -> Pair:
    """The pair ``Precise(str(p))`` gives: ccxt re-parses every intermediate from its string,
    which strips trailing zeros. Division truncates differently for negative values
    depending on that representation, so derivations reuse results in this form."""
    i, d = p
    if i % 10:  # the common case: nothing to strip
        return p if d >= 0 else (i * _p10(-d), 0)
    if i == 0:
        return (0, 0)
    # one or two trailing zeros ("54.0", "1.500") are stripped by arithmetic, exactly (i
    # is a multiple): a third of the string round trip's cost
    if i % 100:
        i, d = i // 10, d - 1
        return (i, d) if d >= 0 else (i * _p10(-d), 0)
    if i % 1000:
        i, d = i // 100, d - 2
        return (i, d) if d >= 0 else (i * _p10(-d), 0)
    digits = str(i)
    stripped = digits.rstrip("0")  # what Precise.reduce_digits does, as fast
    d -= len(digits) - len(stripped)
    i = int(stripped)
    if d < 0:
        return (i * _p10(-d), 0)
    return (i, d)


def utc_timestamp(value: object, name: str) -> int | None:
    """Milliseconds from Bitmusa's REST times (``"2023-06-09T10:21:46"``, no zone: read as
    UTC, a documented choice), or from anything :func:`timestamp` accepts."""
    if type(value) is str and "T" in value:
        text = value.strip().replace("Z", "+00:00")
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError:
            raise Reject("invalid_field", f"{name}: {value[:40]!r} is not a time") from None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=timezone.utc)
        return timestamp((parsed - _EPOCH) // timedelta(milliseconds=1), name)
    return timestamp(value, name)


def to_str(p: Pair) -> str:
    """``str(Precise)``: the exact decimal, without trailing zeros."""
    i, d = norm(p)
    if d == 0:
        return str(i)
    sign, digits = ("-", str(-i)) if i < 0 else ("", str(i))
    digits = digits.rjust(d + 1, "0")
    return f"{sign}{digits[:-d]}.{digits[-d:]}"
