"""bitmusa_hookspecs: the contract between bitmusa-plugin and its handler plugins.

A plugin is any module or object with functions marked ``@hookimpl`` whose names are
hooks of this module, published under the entry-point group ``bitmusa``::

    from bitmusa_hookspecs import hookimpl

    @hookimpl
    def on_order(order, event):
        print(event["account"], order["symbol"], order["status"])
"""

from __future__ import annotations

from . import _specs as specs
from ._markers import PROJECT_NAME, hookimpl, hookspec
from ._types import (
    Balance,
    BalanceEntry,
    Context,
    ErrorInfo,
    Event,
    Fee,
    Order,
    Position,
    StreamState,
    StreamStatus,
)

#: The hooks this contract defines, in documentation order.
HOOK_NAMES: tuple[str, ...] = (
    "on_wallet",
    "on_order",
    "on_position",
    "on_stream_state",
    "on_error",
    "on_startup",
    "on_shutdown",
)

__version__ = "0.1.0"

__all__ = [
    "HOOK_NAMES",
    "PROJECT_NAME",
    "Balance",
    "BalanceEntry",
    "Context",
    "ErrorInfo",
    "Event",
    "Fee",
    "Order",
    "Position",
    "StreamState",
    "StreamStatus",
    "hookimpl",
    "hookspec",
    "specs",
]
