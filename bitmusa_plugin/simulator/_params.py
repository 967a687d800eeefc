"""Request parameters, read the way both SDKs send them (TRADING.md §0, §4). Pure.

Numbers may be JSON numbers or strings; enums are ints or digit strings; flags are booleans
(``"true"``/``"false"`` and 0/1 accepted too). Anything else is an :class:`ApiError` with
the documented code named for it (REFERENCE.md §3), or 1014 INVALID REQUEST PARAMETER.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

from ._engine import (
    BUY,
    CLOSE,
    HEDGE,
    LIMIT,
    MARKET,
    ONEWAY,
    OPEN,
    SELL,
    STOP_LOSS,
    TAKE_PROFIT,
    ApiError,
    CloseSide,
    OrderRequest,
    Trigger,
    opposite,
)
from ._market import MAX_ORDER_PRICE, Spec, on_grid

Params = Mapping[str, Any]


def missing(value: object) -> bool:
    return value is None or (isinstance(value, str) and value.strip() == "")


def decimal(value: object, code: int = 1014) -> Decimal:
    """A finite number from a JSON number or a string (``code`` otherwise)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ApiError(code, f"not a number: {value!r}")
    try:
        result = Decimal(value.strip()) if isinstance(value, str) else Decimal(repr(value))
    except InvalidOperation:
        raise ApiError(code, f"not a number: {value!r}") from None
    if not result.is_finite():
        raise ApiError(code, f"not a finite number: {value!r}")
    return result


def integer(value: object, code: int = 1014) -> int:
    """An int from an int, a whole float or a digit string."""
    if isinstance(value, bool):
        raise ApiError(code, f"not an integer: {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value.strip())
    raise ApiError(code, f"not an integer: {value!r}")


def enum(params: Params, name: str, empty: int, unknown: int, allowed: tuple[int, ...]) -> int:
    value = params.get(name)
    if missing(value):
        raise ApiError(empty, f"{name} is required")
    result = integer(value, unknown)
    if result not in allowed:
        raise ApiError(unknown, f"{name}={value!r}")
    return result


def flag(params: Params, name: str) -> bool:
    value = params.get(name)
    if missing(value):
        return False
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("true", "false", "0", "1"):
        return value.strip().lower() in ("true", "1")
    raise ApiError(1014, f"{name} is a boolean, not {value!r}")


def ticker(params: Params, specs: Mapping[str, Spec], *names: str) -> str:
    """The market id (``ticker``, or ``symbol`` where DF calls it so): 3009 when absent,
    1014 when unknown."""
    for name in names or ("ticker",):
        value = params.get(name)
        if not missing(value):
            if not isinstance(value, str) or value.strip() not in specs:
                raise ApiError(1014, f"unknown ticker {value!r}")
            return value.strip()
    raise ApiError(3009)


def ticker_or_all(params: Params, specs: Mapping[str, Spec]) -> str | None:
    """``ticker`` for cancel/all and close/all: a market id, or ``all`` (None)."""
    value = params.get("ticker")
    if isinstance(value, str) and value.strip().lower() == "all":
        return None
    return ticker(params, specs)


def size(params: Params, name: str, default: int, maximum: int) -> int:
    """A page size: ``default`` when absent, at most ``maximum``; 1014 when not positive."""
    value = params.get(name)
    if missing(value):
        return default
    result = integer(value)
    if result < 1:
        raise ApiError(1014, f"{name} must be positive")
    return min(result, maximum)


def millis(value: object) -> int:
    """A time in ms (a value below 10^11 is taken as seconds)."""
    result = integer(value)
    return result * 1000 if 0 <= result < 10**11 else result


def order(params: Params, specs: Mapping[str, Spec], close_side: CloseSide) -> OrderRequest:
    """POST /future/order's body (TRADING.md 2.9), validated.

    ``position`` is the trade side (0 buy, 1 sell) for OPEN and CLOSE alike, unless
    ``close_side="position"``: then for a CLOSE (or reduce-only) order it names the side
    of the position being reduced."""
    name = ticker(params, specs)
    spec = specs[name]
    direction = enum(params, "direction", 3010, 3001, (0, 1))
    margin_mode = enum(params, "margin_mode", 3011, 3002, (0, 1))
    if margin_mode == 1:
        raise ApiError(3002, "the simulator models isolated margin (0) only")
    position = enum(params, "position", 3012, 3003, (0, 1))
    order_type = enum(params, "order_type", 3013, 3004, (0, 1))
    raw_qty = params.get("order_qty")
    if missing(raw_qty):
        raise ApiError(3014)
    qty = decimal(raw_qty)
    if qty < spec.step:
        raise ApiError(3016, f"the amount step of {name} is {spec.step}")
    if not on_grid(qty, spec.step):
        raise ApiError(1014, f"order_qty is a multiple of {spec.step}")
    price: Decimal | None = None
    if order_type == 1:  # LIMIT: MARKET ignores order_price, whatever it is
        raw_price = params.get("order_price")
        if missing(raw_price):
            raise ApiError(1008)
        price = _price(raw_price, spec, 1009)
    reduce_only = flag(params, "is_reduce_only")
    post_only = flag(params, "is_post_only")
    closing = direction == 1 or reduce_only
    side = BUY if position == 0 else SELL
    if closing and close_side == "position":
        side = opposite(side)
    take_profit = _trigger(params, "take_profit", TAKE_PROFIT, spec)
    stop_loss = _trigger(params, "stop_loss", STOP_LOSS, spec)
    return OrderRequest(
        name,
        side,
        CLOSE if closing else OPEN,
        LIMIT if order_type == 1 else MARKET,
        qty,
        price,
        post_only=post_only,
        reduce_only=reduce_only,
        margin_mode=margin_mode,
        take_profit=take_profit,
        stop_loss=stop_loss,
    )


def _price(value: object, spec: Spec, too_small: int) -> Decimal:
    price = decimal(value)
    if price <= 0:
        raise ApiError(too_small, f"price {value!r}")
    if price > MAX_ORDER_PRICE:
        raise ApiError(1014, f"the highest price is {MAX_ORDER_PRICE}")
    if not on_grid(price, spec.tick):
        raise ApiError(1014, f"the price step of {spec.ticker} is {spec.tick}")
    return price


def _trigger(params: Params, prefix: str, kind: str, spec: Spec) -> Trigger | None:
    if not flag(params, f"is_{prefix}"):
        return None
    raw_type = params.get(f"{prefix}_trigger_type")
    if missing(raw_type):
        raise ApiError(3006, f"{prefix}_trigger_type is required")
    trigger_type = integer(raw_type, 3018)
    if trigger_type not in (1, 2):
        raise ApiError(3018, f"{prefix}_trigger_type={raw_type!r}")
    raw_price = params.get(f"{prefix}_trigger_price")
    if missing(raw_price):
        raise ApiError(3007, f"{prefix}_trigger_price is required")
    price = decimal(raw_price, 3007)
    raw_order_type = params.get(f"{prefix}_order_type")
    order_type = 0 if missing(raw_order_type) else integer(raw_order_type, 3004)
    if order_type not in (0, 1):
        raise ApiError(3004, f"{prefix}_order_type={raw_order_type!r}")
    order_price: Decimal | None = None
    if order_type == 1:
        raw = params.get(f"{prefix}_order_price")
        if missing(raw):
            raise ApiError(3008, f"{prefix}_order_price is required for a LIMIT child")
        order_price = decimal(raw, 3008)
    return Trigger(
        kind,
        "MARK" if trigger_type == 1 else "LAST",
        price,
        LIMIT if order_type == 1 else MARKET,
        order_price,
    )


def leverage(params: Params, name: str = "leverage", empty: int = 3015) -> int:
    value = params.get(name)
    if missing(value):
        raise ApiError(empty, f"{name} is required")
    result = decimal(value, 3005)
    if result != result.to_integral_value() or not 1 <= result <= 125:
        raise ApiError(3005, f"{name} is a whole number from 1 to 125")
    return int(result)


def leverage_type(params: Params) -> str:
    value = params.get("leverage_type")
    if missing(value):
        return "ONEWAY"
    code = integer(value, 3019)
    if code not in (0, 1, 2):
        raise ApiError(3019, f"leverage_type={value!r}")
    return ("ONEWAY", "HEDGE_BUY", "HEDGE_SELL")[code]


def position_mode(params: Params) -> str:
    return ONEWAY if enum(params, "position_mode", 3027, 3028, (0, 1)) == 0 else HEDGE


#: trade-history filters: names as DF lists them, or the request codes
HISTORY_FILTERS: dict[str, tuple[int, dict[object, str]]] = {
    "position": (3003, {"BUY": BUY, "SELL": SELL, 0: BUY, 1: SELL}),
    "direction": (3001, {"OPEN": OPEN, "CLOSE": CLOSE, 0: OPEN, 1: CLOSE}),
    "order_type": (
        3004,
        {
            **{n: n for n in ("MARKET", "LIMIT", "TAKE_PROFIT", "STOP_LOSS", "LIQUIDATION")},
            0: "MARKET",
            1: "LIMIT",
            2: "TAKE_PROFIT",
            3: "STOP_LOSS",
            4: "LIQUIDATION",
        },
    ),
}


def history_filter(params: Params, name: str) -> str | None:
    value = params.get(name)
    if missing(value):
        return None
    code, table = HISTORY_FILTERS[name]
    key: object = value
    if isinstance(value, str):
        key = int(value) if value.strip().isdigit() else value.strip().upper()
    if isinstance(key, bool) or key not in table:
        raise ApiError(code, f"{name}={value!r}")
    return table[key]


def time_range(params: Params, required: bool) -> tuple[int | None, int | None]:
    """``startTime`` / ``endTime`` (ms): 1010 when required and absent, 1015 when the end
    is not after the start."""
    start, end = params.get("startTime"), params.get("endTime")
    if required and (missing(start) or missing(end)):
        raise ApiError(1010)
    begin = None if missing(start) else millis(start)
    finish = None if missing(end) else millis(end)
    if begin is not None and finish is not None and finish <= begin:
        raise ApiError(1015)
    return begin, finish
