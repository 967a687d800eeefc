"""The body of POST /future/order (TRADING.md 2.9), from decided values. Pure.

The ccxt drop-in reads the unified arguments with ccxt's own helpers (precision, post-only,
trigger dicts) and hands the outcome here; this module is the one place that knows how
Bitmusa spells an order, and the readings it takes where the sources disagree
(docs/ccxt.md, "Decisions"):

* ``position`` is the trade side (0 buy, 1 sell); under the ``position`` reading of a
  closing order (:data:`~bitmusa_plugin._core.fills.CloseSide`) it names the side of the
  position being closed, the other way (OQ1). :func:`~bitmusa_plugin._core.fills.side_of`
  reads records back the same way.
* a reduce-only order is ``direction`` 1 (CLOSE) *and* ``is_reduce_only`` (``close+flag``),
  unless told otherwise (:data:`ReduceOnlyAs`).
* amounts and prices go as decimal strings; a MARKET order's ``order_price`` is ``"0"``
  (DF requires the field, node-bitmusa-api sends 0), or is left out (``omit``, as ninjaxt).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from bitmusa_plugin._core.fills import CloseSide

Side = Literal["buy", "sell"]
OrderKind = Literal["market", "limit"]
MarginMode = Literal["isolated", "cross"]
#: How a reduce-only order is sent (OQ1): ``close+flag`` (``direction`` 1 and
#: ``is_reduce_only``), ``close`` (``direction`` 1 only) or ``flag`` (``direction`` 0 and
#: ``is_reduce_only``).
ReduceOnlyAs = Literal["close+flag", "close", "flag"]
#: A MARKET order's ``order_price`` (OQ7): ``zero`` ("0") or ``omit``.
MarketPrice = Literal["zero", "omit"]
#: What a take-profit or stop-loss watches: the mark price (1) or the last price (2).
TriggerPriceType = Literal["mark", "last"]

REDUCE_ONLY_AS: tuple[ReduceOnlyAs, ...] = ("close+flag", "close", "flag")
MARKET_PRICES: tuple[MarketPrice, ...] = ("zero", "omit")
TRIGGER_PRICE_TYPES: tuple[TriggerPriceType, ...] = ("mark", "last")
_TRIGGER_TYPE = {"mark": 1, "last": 2}


@dataclass(frozen=True)
class Trigger:
    """A take-profit or stop-loss attached to an order: when ``price_type``'s price reaches
    ``trigger_price``, a child order closes the position, at ``price`` (LIMIT) or at the
    market (``price`` None)."""

    trigger_price: str
    price: str | None = None
    price_type: TriggerPriceType = "last"


def position_code(side: Side, closing: bool, close_side: CloseSide) -> int:
    """``position`` for an order on ``side``: 0 buy, 1 sell; a closing order under the
    ``position`` reading names the position it closes, the other way round."""
    code = 0 if side == "buy" else 1
    if closing and close_side == "position":
        code = 1 - code
    return code


def order_body(
    ticker: str,
    side: Side,
    kind: OrderKind,
    amount: str,
    price: str | None,
    *,
    reduce_only: bool = False,
    post_only: bool = False,
    margin_mode: MarginMode = "isolated",
    close_side: CloseSide = "trade",
    reduce_only_as: ReduceOnlyAs = "close+flag",
    market_price: MarketPrice = "zero",
    take_profit: Trigger | None = None,
    stop_loss: Trigger | None = None,
) -> dict[str, Any]:
    """POST /future/order's JSON body. ``amount`` and ``price`` are decimal strings already
    on the market's grid; a LIMIT order needs ``price``."""
    if kind == "limit" and price is None:
        raise ValueError("a limit order needs a price")
    direction = 1 if reduce_only and reduce_only_as != "flag" else 0
    body: dict[str, Any] = {
        "ticker": ticker,
        "direction": direction,
        "margin_mode": 0 if margin_mode == "isolated" else 1,
        "position": position_code(side, reduce_only, close_side),
        "order_type": 0 if kind == "market" else 1,
        "order_qty": amount,
    }
    if kind == "limit":
        body["order_price"] = price
    elif market_price == "zero":
        body["order_price"] = "0"
    if reduce_only and reduce_only_as != "close":
        body["is_reduce_only"] = True
    if post_only:
        body["is_post_only"] = True
    for prefix, trigger in (("take_profit", take_profit), ("stop_loss", stop_loss)):
        if trigger is None:
            continue
        body[f"is_{prefix}"] = True
        body[f"{prefix}_trigger_type"] = _TRIGGER_TYPE[trigger.price_type]
        body[f"{prefix}_trigger_price"] = trigger.trigger_price
        body[f"{prefix}_order_type"] = 0 if trigger.price is None else 1
        if trigger.price is not None:
            body[f"{prefix}_order_price"] = trigger.price
    return body
