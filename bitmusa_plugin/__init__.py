"""bitmusa-plugin: the Bitmusa futures user data stream, in ccxt's shapes, for plugins.

The public API is what ``__all__`` lists. Importing this package never imports ccxt.
"""

from __future__ import annotations

from bitmusa_hookspecs import (
    Balance,
    Context,
    ErrorInfo,
    Event,
    Fee,
    Order,
    Position,
    StreamState,
    hookimpl,
    hookspec,
)

from .mapping import Mapped, Mapper, Rejected, SymbolMap

__version__ = "0.1.0"

__all__ = [
    "Balance",
    "Context",
    "ErrorInfo",
    "Event",
    "Fee",
    "Mapped",
    "Mapper",
    "Order",
    "Position",
    "Rejected",
    "StreamState",
    "SymbolMap",
    "__version__",
    "hookimpl",
    "hookspec",
]
