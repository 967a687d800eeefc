"""bitmusa-plugin: the Bitmusa futures user data stream, in ccxt's shapes, for plugins.

The public API is what ``__all__`` lists, plus two modules with their own ``__all__``:
``bitmusa_plugin.testing`` (pytest helpers for plugin authors) and
``bitmusa_plugin.simulator`` (the embedded exchange). Everything else is private. Importing
this package imports neither ccxt nor asyncio: the engine's names load when first used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from bitmusa_hookspecs import (
    Balance,
    Context,
    DeliveryPolicy,
    ErrorInfo,
    ErrorKind,
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
from bitmusa_plugin._version import __version__

if TYPE_CHECKING:
    from bitmusa_plugin._ccxt import bitmusa
    from bitmusa_plugin._core.machine import Timing
    from bitmusa_plugin._engine.secrets import Credentials
    from bitmusa_plugin._engine.session import DeliveryOptions, RunResult, Session
    from bitmusa_plugin._engine.stream import AccountConfig, Heartbeat
    from bitmusa_plugin._scale.consume import consume


#: The entry-point group where ccxt exchange adapters outside ccxt register their class.
CCXT_ENTRY_POINT_GROUP = "ccxt.exchanges"

#: name -> (module, attribute), imported on first use (asyncio, httpx, ccxt, redis).
_LAZY = {
    "Session": ("bitmusa_plugin._engine.session", "Session"),
    "DeliveryOptions": ("bitmusa_plugin._engine.session", "DeliveryOptions"),
    "RunResult": ("bitmusa_plugin._engine.session", "RunResult"),
    "AccountConfig": ("bitmusa_plugin._engine.stream", "AccountConfig"),
    "Heartbeat": ("bitmusa_plugin._engine.stream", "Heartbeat"),
    "Credentials": ("bitmusa_plugin._engine.secrets", "Credentials"),
    "Timing": ("bitmusa_plugin._core.machine", "Timing"),
    "bitmusa": ("bitmusa_plugin._ccxt", "bitmusa"),
    "consume": ("bitmusa_plugin._scale.consume", "consume"),
}

#: load_exchange's faces: the ccxt module each one's ids come from
_FACES = {"pro": "ccxt.pro", "async": "ccxt.async_support", "sync": "ccxt"}


def load_exchange(name: str, config: dict[str, Any] | None = None, *, face: str = "pro") -> Any:
    """An exchange for any id ccxt knows, else the class registered under ``name`` in the
    ``ccxt.exchanges`` entry-point group (``bitmusa`` is), instantiated with ``config``.
    ``face`` is ccxt's module to take it from: ``"pro"`` (``ccxt.pro``, with ``watch_*``),
    ``"async"`` (``ccxt.async_support``) or ``"sync"`` (``ccxt``: for ``bitmusa``, its
    sync face). An unknown name raises ccxt's ``ExchangeNotAvailable``, listing what is
    available. Imports ccxt (about half a second), so only when called."""
    from importlib import import_module, metadata

    import ccxt

    if face not in _FACES:
        raise ValueError(f"load_exchange face {face!r}: one of 'pro', 'async', 'sync'")
    module = import_module(_FACES[face])
    config = dict(config or {})
    if name in module.exchanges:
        return getattr(module, name)(config)
    adapters = {ep.name: ep for ep in metadata.entry_points(group=CCXT_ENTRY_POINT_GROUP)}
    if name in adapters:
        cls = adapters[name].load()
        if face == "sync":
            from bitmusa_plugin._ccxt import bitmusa as async_bitmusa

            if cls is not async_bitmusa:
                raise ccxt.ExchangeNotAvailable(
                    f"exchange {name!r} is an async adapter with no sync face: "
                    "load it with face='async' or face='pro'"
                )
            from bitmusa_plugin._ccxt.sync import bitmusa as cls
        return cls(config)
    available = ", ".join(sorted(set(module.exchanges) | set(adapters)))
    raise ccxt.ExchangeNotAvailable(f"exchange {name!r} is not available; available: {available}")


def register_ccxt(*, replace: bool = False) -> None:
    """Put ``bitmusa`` into ``ccxt`` (the sync face), ``ccxt.async_support`` and
    ``ccxt.pro`` (the async class, with ``watch_*``) and their ``exchanges`` lists, so
    ``ccxt.bitmusa(config)``, ``getattr(ccxt.pro, "bitmusa")(config)`` and ``"bitmusa" in
    ccxt.exchanges`` work whatever was imported first. Idempotent; no other exchange
    changes. Imports ccxt and ccxt.pro (about a second and a half), so only when called.
    Should ccxt ship a ``bitmusa`` of its own, that one stays (a warning says so) unless
    ``replace=True``."""
    from bitmusa_plugin._ccxt.register import register_ccxt as register

    register(replace=replace)


def __getattr__(name: str) -> Any:
    target = _LAZY.get(name)
    if target is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib import import_module

    value = getattr(import_module(target[0]), target[1])
    globals()[name] = value  # once
    return value


__all__ = [
    "CCXT_ENTRY_POINT_GROUP",
    "AccountConfig",
    "Balance",
    "Context",
    "Credentials",
    "DeliveryOptions",
    "DeliveryPolicy",
    "ErrorInfo",
    "ErrorKind",
    "Event",
    "Fee",
    "Heartbeat",
    "Mapped",
    "Mapper",
    "Order",
    "Position",
    "Rejected",
    "RunResult",
    "Session",
    "StreamState",
    "SymbolMap",
    "Timing",
    "__version__",
    "bitmusa",
    "consume",
    "hookimpl",
    "hookspec",
    "load_exchange",
    "register_ccxt",
]
