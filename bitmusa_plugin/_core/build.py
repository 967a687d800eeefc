"""Pure builders: Bitmusa's facts (field tuples, see ``wire.py``) -> ccxt's structures.

Derived fields follow ccxt's ``safe_order`` / ``safe_balance`` / ``safe_position`` to the
letter, on exact decimals (``numbers.py``); ``tests/test_mapping_exact.py`` checks every
output against ccxt itself. The decisions are tabled in ``docs/mapping.md``. The hot paths
are written flat on purpose (a dict lookup per documented enum value, a template copy per
result): each helper call per field would cost about as much as the field's mapping.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

from bitmusa_hookspecs import Balance, Order, Position
from bitmusa_plugin._core.numbers import (
    FPOW10,
    ISO_MILLIS,
    ISO_PREFIX,
    MAX_TIMESTAMP,
    POW10,
    READ_CACHE,
    Pair,
    Reject,
    add,
    div,
    is_missing,
    iso8601,
    mul,
    norm,
    number,
    pair,
    read_new,
    sub,
    timestamp,
    to_float,
)
from bitmusa_plugin._core.symbols import SymbolMap
from bitmusa_plugin._core.wire import (
    CLOSING_STATUSES,
    HEDGED,
    MARGIN_MODE,
    ORDER_SIDE,
    ORDER_STATUS,
    ORDER_TYPE,
    POSITION_SIDE,
    REDUCE_ONLY,
    TIME_IN_FORCE,
    OrderFields,
    PositionFields,
    WalletFields,
    enum,
    enum_key,
    required_str,
)

#: Every key of a unified order, in ccxt's order; each order starts as a copy of this.
_ORDER_TEMPLATE: dict[str, Any] = dict.fromkeys(Order.__annotations__)
_POSITION_TEMPLATE: dict[str, Any] = dict.fromkeys(Position.__annotations__)

_ONE: Pair = (1, 0)
_ZERO: Pair = (0, 0)
_INVERSE: dict[Pair, float | None] = {}  # leverage -> initialMarginPercentage
_MISSING: Any = object()
_READ = READ_CACHE
_TWO53 = 2**53
_P18 = 10**18
_KEY_TYPES = frozenset((str, type(None)))


class Asset(NamedTuple):
    """One currency of the wallet."""

    free: float
    used: float
    total: float


#: Per order, what its frames repeat, read once: the raw (id, type, position, direction,
#: tif, price, amount, createdTime) of a frame -> (the order's template: the unified keys
#: with id, timestamp, datetime, type, timeInForce, postOnly, reduceOnly and side set; its
#: type; price, its pair; amount, its pair and normal form). An
#: order's updates resend these unchanged (only its status, fill and value move), so its
#: later frames skip a third of the builder (the field checks, five enums, two reads, the
#: ISO date). Only keys of exact ``str`` (or None) and an int time are stored: such a key
#: equals no other types' (``1 == 1.0 == True`` would mix a valid code with a rejected
#: bool), so a hit is a frame whose fields read exactly as the stored one's did. Bounded:
#: cleared when full, as the read cache.
ORDER_MEMO: dict[tuple[Any, ...], tuple[Any, ...]] = {}
ORDER_MEMO_SIZE = 4096


def order(
    f: OrderFields,
    event_time: int | None,
    symbols: SymbolMap,
    info: dict[str, Any],
    *,
    memo: bool = False,
) -> Order:
    """An order's fields -> ccxt order, with ``safe_order``'s derivations. ``memo``: use
    :data:`ORDER_MEMO` (only for fields as orjson decodes them: exact types, so a hit
    cannot stand for a value of another type)."""
    (
        order_id,
        ticker,
        status_v,
        type_v,
        side_v,
        direction_v,
        tif_v,
        raw_price,
        raw_amount,
        raw_filled,
        raw_cost,
        created,
        completed,
    ) = f
    key: tuple[Any, ...] | None = None
    base: dict[str, Any]
    static: tuple[Any, ...] | None = None
    if memo and type(created) is int:
        key = (order_id, type_v, side_v, direction_v, tif_v, raw_price, raw_amount, created)
        try:
            static = ORDER_MEMO.get(key)
        except TypeError:  # an unhashable field (a JSON object or array): the long way
            key = None
    if static is not None:
        # the repeated fields were read, and accepted, before: the others are read in the
        # long way's order, so a frame is rejected for the same field and reason
        base, otype, price, price_p, amount, amount_p, amount_n = static
        symbol = symbols.known.get(ticker) if type(ticker) is str else None
        if symbol is None:
            symbol = symbols(required_str(ticker, "ticker"))
        v = status_v
        status = ORDER_STATUS.get(v) if type(v) is str else None
        if status is None:
            status = enum(v, ORDER_STATUS, "status")
        r = _READ.get(raw_filled) if type(raw_filled) is str else None
        filled, filled_p, filled_n = r if r is not None else read_new(raw_filled, "tradedAmount")
        r = _READ.get(raw_cost) if type(raw_cost) is str else None
        cost, cost_p, _ = r if r is not None else read_new(raw_cost, "value")
        if (filled is not None and filled < 0) or (cost is not None and cost < 0):
            raise Reject("invalid_value", "price, amount, tradedAmount and value must be >= 0")
        if completed is not None:
            completed = timestamp(completed, "completedTime")
    else:
        if type(order_id) is not str or len(order_id) <= 4:  # "", "null", "none", or ints
            order_id = required_str(order_id, "orderId")
        symbol = symbols.known.get(ticker) if type(ticker) is str else None
        if symbol is None:
            symbol = symbols(required_str(ticker, "ticker"))
        # enum fast path: a documented string is one dict lookup; anything else -> enum()
        v = status_v
        status = ORDER_STATUS.get(v) if type(v) is str else None
        if status is None:
            status = enum(v, ORDER_STATUS, "status")
        v = type_v
        otype = ORDER_TYPE.get(v) if type(v) is str else None
        if otype is None:
            otype = enum(v, ORDER_TYPE, "type")
        v = side_v
        side = ORDER_SIDE.get(v) if type(v) is str else None
        if side is None:
            side = enum(v, ORDER_SIDE, "position")
        v = direction_v
        reduce_only = REDUCE_ONLY.get(v) if type(v) is str else None
        if reduce_only is None and not is_missing(v):
            reduce_only = REDUCE_ONLY.get(enum_key(v))
        v = tif_v
        tif = TIME_IN_FORCE.get(v) if type(v) is str else None
        if tif is None and v is not None:
            tif = enum(v, TIME_IN_FORCE, "tif")
            if tif is not None:
                tif = tif.upper()
        # number() and pair() of each field at once, through the readers' cache: an
        # order's price and amount recur in each of its updates, its fill in the next one
        r = _READ.get(raw_price) if type(raw_price) is str else None
        price, price_p, _ = r if r is not None else read_new(raw_price, "price")
        r = _READ.get(raw_amount) if type(raw_amount) is str else None
        amount, amount_p, amount_n = r if r is not None else read_new(raw_amount, "amount")
        r = _READ.get(raw_filled) if type(raw_filled) is str else None
        filled, filled_p, filled_n = r if r is not None else read_new(raw_filled, "tradedAmount")
        r = _READ.get(raw_cost) if type(raw_cost) is str else None
        cost, cost_p, _ = r if r is not None else read_new(raw_cost, "value")
        if (
            (price is not None and price < 0)
            or (amount is not None and amount < 0)
            or (filled is not None and filled < 0)
            or (cost is not None and cost < 0)
        ):
            raise Reject("invalid_value", "price, amount, tradedAmount and value must be >= 0")
        if type(created) is not int or not 0 <= created <= MAX_TIMESTAMP:
            created = timestamp(created, "createdTime")
        if completed is not None:
            completed = timestamp(completed, "completedTime")
        # safe_order: a zero price or amount means none was given.
        if not price:
            price = None
        if not amount:
            amount = amount_p = amount_n = None
        post_only = None
        if tif is None:
            if otype == "market":
                tif = "IOC"
        else:
            post_only = tif == "PO"
        base = _ORDER_TEMPLATE.copy()
        base["id"] = order_id
        base["timestamp"] = created
        # iso8601(created), its cache looked up here (created may be None: no time given)
        prefix = ISO_PREFIX.get(created // 1000) if created is not None else None
        base["datetime"] = (
            prefix + ISO_MILLIS[created % 1000] if prefix is not None else iso8601(created)
        )
        base["type"] = otype
        base["timeInForce"] = tif
        base["postOnly"] = post_only
        base["reduceOnly"] = reduce_only
        base["side"] = side
        # the key as sent (an int id was made a str above): exact str or None, or no memo
        if key is not None and {*map(type, key[:7])} <= _KEY_TYPES:  # a set, no generator
            if len(ORDER_MEMO) >= ORDER_MEMO_SIZE:
                ORDER_MEMO.clear()
            ORDER_MEMO[key] = (base, otype, price, price_p, amount, amount_p, amount_n)

    closed = status == "closed"
    if amount is None and closed:
        amount, amount_p, amount_n = filled, filled_p, filled_n
    if filled is None and closed and amount is not None:
        filled, filled_p, filled_n = amount, amount_p, amount_n
    remaining: float | None = None
    if amount_p is not None and filled_p is not None:
        # sub() inlined: one scale, or a whole amount ("100") less a fill with decimals
        a, e = amount_p
        b, d = filled_p
        if e == d:
            i = a - b
        elif e < d < 256:
            i = a * POW10[d - e] - b
        else:
            i, d = sub(amount_p, filled_p)
        if i < 0:
            raise Reject("invalid_value", "tradedAmount exceeds amount")
        # to_float() inlined for the common case (its first branch: exact doubles)
        remaining = i / FPOW10[d] if 0 < d <= 22 and i < _TWO53 else to_float((i, d))
    elif closed:
        remaining = 0.0
    average: float | None = None
    if filled_n is not None:
        # safe_order re-reads filled * contractSize (1) from its string: the normal form
        if cost_p is not None:
            if filled_n[0] > 0:
                # to_float(div(cost_p, filled_n)) inlined for the common case: both >= 0,
                # so div's floor is its truncation; the 18-place quotient over 10**18 is
                # int / int, correctly rounded, which is what to_float() gives for it
                d = 18 - cost_p[1] + filled_n[1]
                if 0 <= d < 256 and cost_p[0] >= 0:
                    average = cost_p[0] * POW10[d] // filled_n[0] / _P18
                else:
                    average = to_float(div(cost_p, filled_n))
        elif price_p is not None and price is not None:
            cost = to_float(mul(filled_n, price_p))
    if price is None and otype == "market":
        price = average
    # A template copy plus assignments is twice as fast as a 28-key dict literal; the
    # order's own template (``base``, its repeated fields set) spares eight of them.
    result: dict[str, Any] = base.copy()
    result["info"] = info
    if completed is not None:  # None in the template: stored only when set (as average)
        result["lastTradeTimestamp"] = completed
    result["lastUpdateTimestamp"] = event_time
    result["symbol"] = symbol
    result["price"] = price
    result["amount"] = amount
    result["cost"] = cost
    if average is not None:
        result["average"] = average
    result["filled"] = filled
    result["remaining"] = remaining
    result["status"] = status
    result["fees"] = []
    result["trades"] = []
    return result  # type: ignore[return-value]


def position(
    f: PositionFields, event_time: int | None, symbols: SymbolMap, info: dict[str, Any]
) -> Position:
    """A position's fields -> ccxt position, with ``safe_position``'s derivations."""
    (
        ticker,
        side_v,
        margin_v,
        mode,
        status,
        raw_lev,
        raw_entry,
        raw_contracts,
        raw_notional,
        raw_liq,
        raw_upnl,
        created,
    ) = f
    symbol = symbols.known.get(ticker) if type(ticker) is str else None
    if symbol is None:
        symbol = symbols(required_str(ticker, "ticker"))
    # enum fast paths, as for orders: one lookup for a documented string
    v = side_v
    side = POSITION_SIDE.get(v) if type(v) is str else None
    if side is None:
        side = enum(v, POSITION_SIDE, "position")
    v = margin_v
    margin_mode = MARGIN_MODE.get(v) if type(v) is str else None
    if margin_mode is None:
        margin_mode = enum(v, MARGIN_MODE, "marginMode")
    hedged = HEDGED.get(mode) if type(mode) is str else None
    if hedged is None and not is_missing(mode):
        hedged = HEDGED.get(enum_key(mode))
    # number() and pair() at once, through the readers' cache, as for orders
    r = _READ.get(raw_lev) if type(raw_lev) is str else None
    leverage, lev_p, _ = r if r is not None else read_new(raw_lev, "leverage")
    r = _READ.get(raw_entry) if type(raw_entry) is str else None
    entry = (r if r is not None else read_new(raw_entry, "price"))[0]
    r = _READ.get(raw_contracts) if type(raw_contracts) is str else None
    contracts, contracts_p, contracts_n = r if r is not None else read_new(raw_contracts, "amount")
    r = _READ.get(raw_notional) if type(raw_notional) is str else None
    notional, notional_p, _ = r if r is not None else read_new(raw_notional, "value")
    r = _READ.get(raw_liq) if type(raw_liq) is str else None
    liquidation = (r if r is not None else read_new(raw_liq, "liquidPrice"))[0]
    r = _READ.get(raw_upnl) if type(raw_upnl) is str else None
    upnl, upnl_p, _ = r if r is not None else read_new(raw_upnl, "unpnl")
    if (
        (leverage is not None and leverage < 0)
        or (entry is not None and entry < 0)
        or (contracts is not None and contracts < 0)
        or (notional is not None and notional < 0)
        or (liquidation is not None and liquidation < 0)
    ):
        raise Reject("invalid_value", "leverage, price, amount, value, liquidPrice: < 0")
    if type(created) is not int or not 0 <= created <= MAX_TIMESTAMP:
        created = timestamp(created, "createdTime")
    if type(status) is not str:
        enum(status, {}, "status")  # type check only: the raw status stays in info
    if type(status) is str and status.upper() in CLOSING_STATUSES:
        contracts, contracts_p, contracts_n = 0.0, _ZERO, _ZERO
        notional, notional_p = 0.0, _ZERO
    if not liquidation:
        liquidation = None

    # safe_position's derivations that our facts can reach (tests/ccxt_reference.py
    # runs ccxt's own on the same facts): no margins or mark price are sent, so only
    # markPrice (when there is no entry price), initial margin and percentage derive.
    mark: float | None = None
    im_p: Pair | None = None
    initial_margin: float | None = None
    im_percentage: float | None = None
    if contracts_p is None or contracts_p[0] != 0:
        has_notional = notional_p is not None and notional_p[0] > 0
        if entry is None and has_notional and contracts_p is not None and contracts_p[0] > 0:
            derived = div(notional_p, contracts_n)  # type: ignore[arg-type]
            if derived[0] > 0:
                mark = to_float(derived)
        if lev_p is not None and lev_p[0] > 0:
            # 1 / leverage: a handful of leverages recur, so it is computed once each
            known = _INVERSE.get(lev_p, _MISSING)  # not into im_percentage: a float or None
            if known is _MISSING:
                imp_p = div(_ONE, lev_p)
                im_percentage = to_float(imp_p) if imp_p[0] > 0 else None
                if len(_INVERSE) < 1024:
                    _INVERSE[lev_p] = im_percentage
            else:
                im_percentage = known
            if has_notional:
                im_p = div(notional_p, lev_p)  # type: ignore[arg-type]
                if im_p[0] > 0:
                    initial_margin = to_float(im_p)
    percentage: float | None = None
    if upnl_p is not None and im_p is not None and im_p[0] != 0:
        ratio = norm(div(upnl_p, norm(im_p), 4))
        percentage = to_float(mul(ratio, (100, 0)))
    result = _POSITION_TEMPLATE.copy()  # faster than a 29-key dict literal
    result["info"] = info
    result["symbol"] = symbol
    result["timestamp"] = created
    result["datetime"] = iso8601(created)
    result["lastUpdateTimestamp"] = event_time
    result["initialMargin"] = initial_margin
    result["initialMarginPercentage"] = im_percentage
    result["entryPrice"] = entry
    result["notional"] = notional
    result["leverage"] = leverage
    result["unrealizedPnl"] = upnl
    result["contracts"] = contracts
    result["contractSize"] = 1.0
    result["liquidationPrice"] = liquidation
    result["markPrice"] = mark
    result["marginMode"] = margin_mode
    result["side"] = side
    result["percentage"] = percentage
    result["hedged"] = hedged
    return result  # type: ignore[return-value]


def asset(f: WalletFields) -> tuple[str, Asset]:
    """A wallet entry's fields -> (currency code, its free, used and exact total)."""
    code, raw_free, raw_used = f
    code = required_str(code, "asset")
    free = number(raw_free, "free")
    used = number(raw_used, "locked")
    if free is None or used is None:
        raise Reject("missing_field", "free and locked are required")
    if free < 0:
        raise Reject("invalid_value", f"free: {free} is negative")
    if used < 0:
        raise Reject("invalid_value", f"locked: {used} is negative")
    return code, Asset(free, used, to_float(add(pair(raw_free), pair(raw_used))))


def balance(
    assets: Mapping[str, Asset], info: Any = None, event_time: int | None = None
) -> Balance:
    """The balance of every asset, as a fresh ccxt ``Balances`` structure."""
    result: dict[str, Any] = {
        "info": info if info is not None else {},
        "timestamp": event_time,
        "datetime": iso8601(event_time),
    }
    frees: dict[str, float] = {}
    useds: dict[str, float] = {}
    totals: dict[str, float] = {}
    for code, a in assets.items():
        result[code] = {"free": a.free, "used": a.used, "total": a.total}
        frees[code], useds[code], totals[code] = a.free, a.used, a.total
    result["free"], result["used"], result["total"] = frees, useds, totals
    return result  # type: ignore[return-value]


def vanished_order(order_id: str, last: Mapping[str, Any], info: dict[str, Any]) -> Order:
    """An order no longer open whose end is unknown (resync): last facts, status None."""
    result = _ORDER_TEMPLATE.copy()
    result.update(last)
    result["id"] = order_id
    result["status"] = None  # filled or cancelled: the snapshot cannot say which
    result["remaining"] = None
    result["info"] = info
    result["fees"] = []
    result["trades"] = []
    return result  # type: ignore[return-value]


def flat_position(last: Mapping[str, Any], info: dict[str, Any]) -> Position:
    """A position known to be flat now, from its last known facts (resync)."""
    result = _POSITION_TEMPLATE.copy()
    for key in ("symbol", "side", "marginMode", "hedged", "leverage", "entryPrice"):
        result[key] = last.get(key)
    result["contracts"] = 0.0
    result["notional"] = 0.0
    result["contractSize"] = 1.0
    result["info"] = info
    return result  # type: ignore[return-value]
