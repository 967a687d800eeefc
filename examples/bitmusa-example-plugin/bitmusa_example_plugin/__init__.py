"""fill-notifier: one line per fill and per position that goes flat.

Registered through the ``bitmusa`` entry-point group (see pyproject.toml). It imports only
the contract package, like any plugin should.
"""

from __future__ import annotations

import os
import sys
from typing import TextIO

from bitmusa_hookspecs import Event, Order, Position, hookimpl

#: order id -> the filled amount already announced (per account)
_announced: dict[tuple[str, str], float] = {}


def _out() -> TextIO:
    path = os.environ.get("BITMUSA_FILL_LOG")
    return open(path, "a", encoding="utf-8") if path else sys.stderr


def _say(line: str) -> None:
    out = _out()
    try:
        out.write(line + "\n")
        out.flush()
    finally:
        if out is not sys.stderr:
            out.close()


def fill_message(order: Order, account: str) -> str | None:
    """The line to announce for this order update, or None if nothing new was filled."""
    filled = order["filled"] or 0.0
    key = (account, order["id"] or "")
    before = _announced.get(key, 0.0)
    if filled <= before:
        return None
    _announced[key] = filled
    if order["status"] in ("closed", "canceled"):
        _announced.pop(key, None)  # the order is done: forget it
    side = order["side"] or "?"
    price = order["average"] if order["average"] is not None else order["price"]
    done = (
        "filled" if order["remaining"] == 0 else f"partially filled ({filled:g}/{order['amount']})"
    )
    return f"[{account}] {order['symbol']} {side} {filled - before:g} @ {price} {done}"


@hookimpl
def on_order(order: Order, event: Event) -> None:
    message = fill_message(order, event["account"])
    if message is not None:
        _say(message)


@hookimpl
def on_position(position: Position, event: Event) -> None:
    if position["contracts"] == 0:
        reason = event["data"].get("status", "closed")
        _say(f"[{event['account']}] {position['symbol']} is flat ({reason})")
