"""bitmusa_hookspecs: the contract between bitmusa-plugin and its handler plugins.

A plugin is any module or object with functions marked ``@hookimpl`` whose names are
hooks of this module, published under the entry-point group ``bitmusa``::

    from bitmusa_hookspecs import hookimpl

    @hookimpl
    def on_order(order, event):
        print(event["account"], order["symbol"], order["status"])

A plugin that must see every call, even when it falls behind (a recorder), declares the
delivery policy ``all``; the default, ``latest``, merges queued states of one object::

    from bitmusa_hookspecs import DeliveryPolicy

    bitmusa_delivery: DeliveryPolicy = "all"
"""

from __future__ import annotations

from . import _specs as specs
from ._errors import ERROR_KINDS, FRAME_ERROR_KINDS, RAW_EXCERPT_CHARS, error_info
from ._markers import PROJECT_NAME, hookimpl, hookspec
from ._types import (
    Balance,
    BalanceEntry,
    Context,
    DeliveryPolicy,
    ErrorInfo,
    ErrorKind,
    Event,
    Fee,
    Order,
    Position,
    StreamState,
    StreamStatus,
    Trade,
)

#: The hooks this contract defines, in documentation order.
HOOK_NAMES: tuple[str, ...] = (
    "on_wallet",
    "on_order",
    "on_trade",
    "on_position",
    "on_stream_state",
    "on_error",
    "on_startup",
    "on_shutdown",
    "on_idle",
)

#: The attribute (module-level, or on the plugin's class or instance) that names a plugin's
#: :data:`DeliveryPolicy`; without it a plugin gets ``latest``.
DELIVERY_ATTRIBUTE = "bitmusa_delivery"
#: The policies, for validation and documentation.
DELIVERY_POLICIES: tuple[DeliveryPolicy, ...] = ("latest", "all")

__version__ = "0.2.0"

__all__ = [
    "DELIVERY_ATTRIBUTE",
    "DELIVERY_POLICIES",
    "ERROR_KINDS",
    "FRAME_ERROR_KINDS",
    "HOOK_NAMES",
    "PROJECT_NAME",
    "RAW_EXCERPT_CHARS",
    "Balance",
    "BalanceEntry",
    "Context",
    "DeliveryPolicy",
    "ErrorInfo",
    "ErrorKind",
    "Event",
    "Fee",
    "Order",
    "Position",
    "StreamState",
    "StreamStatus",
    "Trade",
    "error_info",
    "hookimpl",
    "hookspec",
    "specs",
]
