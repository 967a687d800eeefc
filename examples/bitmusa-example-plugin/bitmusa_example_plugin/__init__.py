"""fill-notifier: one line per fill and per position that goes flat.

Registered through the ``bitmusa`` entry-point group (see pyproject.toml). It imports only
the contract package, like any plugin should.

Fills come from ``on_trade``: one call per fill, never for a snapshot, so nothing old is
announced again at a start or after a reconnect, and fills made while the stream was down
are announced once it is back (``event["stream"] == "resync"``).
"""

from __future__ import annotations

import os
import sys
from typing import TextIO

from bitmusa_hookspecs import Event, Position, Trade, hookimpl


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


def _g(value: float | None) -> str:
    return "?" if value is None else f"{value:g}"


def fill_message(trade: Trade, account: str) -> str:
    """The line that announces one fill."""
    side = trade["side"] or "?"
    line = f"[{account}] {trade['symbol']} {side} {_g(trade['amount'])} @ {_g(trade['price'])}"
    fee = trade["fee"]
    if fee is not None:
        line += f" (fee {_g(fee['cost'])} {fee['currency']})"
    if trade["info"].get("estimated"):
        line += " (estimated: the trade history did not show this fill)"
    return line


@hookimpl
def on_trade(trade: Trade, event: Event) -> None:
    _say(fill_message(trade, event["account"]))


@hookimpl
def on_position(position: Position, event: Event) -> None:
    if position["contracts"] == 0:
        reason = event["data"].get("status") or event["data"].get("resync") or "closed"
        _say(f"[{event['account']}] {position['symbol']} is flat ({reason})")
