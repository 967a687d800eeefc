"""bitmusa-plugin: the Bitmusa futures user data stream, in ccxt's shapes, for plugins.

The public API is what ``__all__`` lists. Importing this package never imports ccxt.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

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
from bitmusa_plugin._core.mapping import Mapped, Mapper, Rejected
from bitmusa_plugin._core.symbols import SymbolMap

if TYPE_CHECKING:
    from bitmusa_plugin._ccxt import bitmusa
    from bitmusa_plugin._scale.consume import consume

__version__ = "0.1.0"

#: The entry-point group where ccxt exchange adapters outside ccxt register their class.
CCXT_ENTRY_POINT_GROUP = "ccxt.exchanges"


def load_exchange(name: str, config: dict[str, Any] | None = None) -> Any:
    """A ccxt.pro exchange for any id ccxt.pro knows, else the class registered under
    ``name`` in the ``ccxt.exchanges`` entry-point group (``bitmusa`` is), instantiated
    with ``config``. An unknown name raises ccxt's ``ExchangeNotAvailable``, listing what
    is available. Imports ccxt (about half a second), so only when called."""
    from importlib import metadata

    import ccxt.pro

    config = dict(config or {})
    if name in ccxt.pro.exchanges:
        return getattr(ccxt.pro, name)(config)
    adapters = {ep.name: ep for ep in metadata.entry_points(group=CCXT_ENTRY_POINT_GROUP)}
    if name in adapters:
        return adapters[name].load()(config)
    available = ", ".join(sorted(set(ccxt.pro.exchanges) | set(adapters)))
    raise ccxt.ExchangeNotAvailable(f"exchange {name!r} is not available; available: {available}")


def __getattr__(name: str) -> Any:
    if name == "bitmusa":  # the ccxt drop-in, imported (with ccxt) only when asked for
        from bitmusa_plugin._ccxt import bitmusa

        return bitmusa
    if name == "consume":  # Redis consumers (docs/scale.md), imported only when asked for
        from bitmusa_plugin._scale.consume import consume

        return consume
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
    "bitmusa",
    "consume",
    "hookimpl",
    "hookspec",
    "load_exchange",
]
