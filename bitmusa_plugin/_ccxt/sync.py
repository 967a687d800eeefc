"""ccxt's synchronous face: :class:`bitmusa`, a ``ccxt.Exchange`` (``ccxt.bitmusa(config)``
once :func:`register_ccxt` ran) that is the async drop-in, driven from threads.

One implementation: each sync instance owns one async :class:`~._ccxt.exchange.bitmusa`
(its Session, REST pool, limiter and mapping) and runs it on the process's one private
event-loop thread. A call submits the async method's coroutine with
``asyncio.run_coroutine_threadsafe`` and waits for it. Which methods are wrapped is read
from the async class, not listed: every public coroutine method but ``watch_*`` and
``un_watch_*`` (ccxt's sync API has none: ccxt's own sync stubs, which raise
``NotSupported``, stay). A method added to the async class gets its sync face unedited.

The state is one: the sync instance's ``__dict__`` *is* its async instance's, so
``markets``, ``symbols``, ``currencies``, ``options``, ``timeout``, ``verbose``, ``apiKey``
... read and set through, and ccxt's own sync helpers (``market()``,
``amount_to_precision()``, ``safe_*``) run on the same markets the async methods loaded.
Only ``has`` is the face's own (``watch*`` and ``ws`` false: the face has none).

One loop for every sync instance of the process: the engine's process-wide REST
allowance (``base.shared_limiter``) is then touched by one thread only, and a hundred
instances cost one thread, not a hundred. The thread is a daemon: a process that exits
without ``close()`` does not hang; an ``atexit`` hook first closes the instances still
open, within :data:`EXIT_BOUND` seconds in all (a stream's listenKey is deleted).
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import inspect
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable, Coroutine
from typing import Any, ClassVar, TypeVar

from ccxt.base.errors import ExchangeClosedByUser, ExchangeError
from ccxt.base.exchange import Exchange as SyncExchange

from .exchange import bitmusa as AsyncBitmusa

T = TypeVar("T")
log = logging.getLogger(__name__)

#: seconds the atexit hook waits, in all, for the sync instances still open to close
EXIT_BOUND = 5.0
#: ``has`` keys the sync face cannot honour (ccxt's sync API has no websocket methods)
_STREAM_PREFIXES = ("watch", "unWatch", "un_watch")
#: calls that may act on the account: interrupted, they may have reached the exchange
_READ_PREFIXES = ("fetch", "load", "parse", "describe", "sleep")


def _camel(name: str) -> str:
    """ccxt's camelCase alias of a snake_case name (its ``Exchange.__init__`` rule:
    ``fetch_ohlcv`` -> ``fetchOHLCV``)."""
    head, *rest = name.split("_")
    special = {"ohlcv": "OHLCV", "le": "LE", "be": "BE", "adl": "ADL"}
    return head + "".join(special.get(part, part[:1].upper() + part[1:]) for part in rest)


def coroutine_methods(cls: type) -> list[str]:
    """The async class's public coroutine methods the sync face wraps: snake_case names
    (camelCase aliases are ccxt's copies of them), none of the websocket ones, and not
    ``close`` (the face's own: it also forgets the instance)."""
    names = []
    for name in dir(cls):
        if name.startswith("_") or name != name.lower() or name.startswith(_STREAM_PREFIXES):
            continue
        if name == "close":
            continue
        if inspect.iscoroutinefunction(getattr(cls, name, None)):
            names.append(name)
    return names


def _from_ccxt(function: Any) -> bool:
    return str(function.__module__).split(".")[0] == "ccxt"


def own_sync_methods(cls: type) -> list[str]:
    """The async class's public plain methods not ccxt's own (``describe``,
    ``parse_ticker``, ``set_sandbox_mode``, ...): the sync face calls the async instance's,
    since ccxt's sync base has other (generic) ones of the same name."""
    names = []
    for name in dir(cls):
        if name.startswith("_") or name != name.lower() or name.startswith(_STREAM_PREFIXES):
            continue
        attr = inspect.getattr_static(cls, name)
        function = attr.__func__ if isinstance(attr, staticmethod | classmethod) else attr
        if (
            inspect.isfunction(function)
            and not inspect.iscoroutinefunction(function)
            and not _from_ccxt(function)
        ):
            names.append(name)
    return names


def own_properties(cls: type) -> list[str]:
    """The async class's public properties not ccxt's own: read and set on the async
    instance (the shared ``__dict__`` does not hold them)."""
    names = []
    for name in dir(cls):
        if name.startswith("_") or name.startswith(_STREAM_PREFIXES):
            continue
        attr = inspect.getattr_static(cls, name)
        if isinstance(attr, property) and attr.fget is not None and not _from_ccxt(attr.fget):
            names.append(name)
    return names


def _property(name: str, source: type) -> property:
    def get(self: bitmusa) -> Any:
        return getattr(self._sync_inner, name)

    def put(self: bitmusa, value: Any) -> None:
        setattr(self._sync_inner, name, value)

    return property(get, put, doc=getattr(source, name).__doc__)


class _Loop:
    """The process's event-loop thread for every sync instance: started at the first
    instance, a daemon, stopped after the atexit hook closed what was left open."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.thread: threading.Thread | None = None
        #: the sync instances not closed yet, for the atexit hook
        self.open: weakref.WeakSet[bitmusa] = weakref.WeakSet()
        #: set by the atexit hook: the loop stops, and a call after it would wait forever
        self.exited = False

    def after_fork(self) -> None:
        """In a forked child the loop's thread does not exist: the child's instances get a
        loop of their own, and the parent's say so when called (never wait forever)."""
        self.lock = threading.Lock()
        self.loop = self.thread = None
        self.open = weakref.WeakSet()

    def get(self) -> asyncio.AbstractEventLoop:
        with self.lock:
            if self.loop is None or self.loop.is_closed() or self.thread is None:
                loop = asyncio.new_event_loop()
                ready = threading.Event()

                def run() -> None:
                    asyncio.set_event_loop(loop)
                    loop.call_soon(ready.set)
                    loop.run_forever()

                self.thread = threading.Thread(target=run, name="bitmusa-ccxt-sync", daemon=True)
                self.thread.start()
                ready.wait()
                self.loop = loop
            return self.loop

    def on_loop_thread(self) -> bool:
        return self.thread is not None and threading.current_thread() is self.thread

    def at_exit(self) -> None:
        """Close the instances still open (listenKeys deleted, pools closed), all within
        :data:`EXIT_BOUND` seconds, then stop the loop. Never raises: the process exits."""
        loop = self.loop
        self.exited = True
        if loop is None or loop.is_closed() or not loop.is_running():
            return
        deadline = time.monotonic() + EXIT_BOUND
        pending = [
            asyncio.run_coroutine_threadsafe(exchange._sync_inner.close(), loop)
            for exchange in list(self.open)
        ]
        self.open.clear()
        done, late = concurrent.futures.wait(pending, max(0.0, deadline - time.monotonic()))
        for future in late:
            future.cancel()
        if late:
            log.warning(
                "bitmusa: %d sync exchange(s) did not close within %.0f s at exit",
                len(late),
                EXIT_BOUND,
            )
        for future in done:
            if not future.cancelled() and future.exception() is not None:
                log.warning("bitmusa: closing a sync exchange at exit: %s", future.exception())
        loop.call_soon_threadsafe(loop.stop)


_LOOP = _Loop()
atexit.register(_LOOP.at_exit)
if hasattr(os, "register_at_fork"):  # not on Windows
    os.register_at_fork(after_in_child=_LOOP.after_fork)


def _wrap(name: str, source: type) -> Callable[..., Any]:
    """The sync face of the async method ``name``: run it on the loop thread, wait."""

    def method(self: bitmusa, *args: Any, **kwargs: Any) -> Any:
        return self._call(name, getattr(self._sync_inner, name)(*args, **kwargs))

    method.__name__ = method.__qualname__ = name
    method.__doc__ = getattr(source, name).__doc__
    return method


def _delegate(name: str, source: type) -> Callable[..., Any]:
    """The async instance's own plain method ``name``, called on it directly."""

    def method(self: bitmusa, *args: Any, **kwargs: Any) -> Any:
        return getattr(self._sync_inner, name)(*args, **kwargs)

    method.__name__ = method.__qualname__ = name
    method.__doc__ = getattr(source, name).__doc__
    return method


class bitmusa(SyncExchange):  # type: ignore[misc]  # ccxt names its classes by exchange id
    """Bitmusa futures for ccxt's synchronous API: ``bitmusa({'apiKey': ..., 'secret': ...})``,
    every unified method of the async drop-in, blocking; safe to call from several threads
    at once; ``close()`` or ``with bitmusa(...) as exchange:``."""

    #: the async class this face drives (its methods, its describe())
    async_class: ClassVar[type] = AsyncBitmusa
    # the face's own state, in slots: not in the shared __dict__, so the async instance
    # keeps no reference to itself or to the loop
    __slots__ = ("_own_has", "_sync_inner", "_sync_loop")

    def __init__(self, config: dict[str, Any] | None = None) -> None:
        # ccxt's sync __init__ is not called: its state would be a second copy. The async
        # instance is built by its own __init__, and this face shares its __dict__.
        inner = self.async_class(config or {})
        object.__setattr__(self, "__dict__", inner.__dict__)
        self._sync_inner = inner
        self._own_has = _sync_has(inner.has)
        self._sync_loop = _LOOP.get()
        _LOOP.open.add(self)

    # -- what differs from the async face ------------------------------------------------------

    @property
    def has(self) -> dict[str, Any]:
        """The async class's ``has`` with every websocket method false: ccxt's sync API has
        none. The face's own dict (as a sync and a pro ccxt instance have two)."""
        has: dict[str, Any] = self._own_has
        return has

    @has.setter
    def has(self, value: dict[str, Any]) -> None:
        self._own_has = value

    def describe(self) -> dict[str, Any]:
        description: dict[str, Any] = self._sync_inner.describe()
        description["has"] = _sync_has(description["has"])
        return description

    def __repr__(self) -> str:
        return f"ccxt.{self.id}()"  # ccxt's own form; never a credential

    def __del__(self) -> None:
        # ccxt's sync __del__ calls close(), which waits for the loop: a collection may run
        # on any thread (the loop's too), so an unclosed instance closes without waiting
        inner, loop = getattr(self, "_sync_inner", None), getattr(self, "_sync_loop", None)
        if inner is not None and loop is not None and loop.is_running():
            with contextlib.suppress(RuntimeError):  # the loop stopped: the process exits
                asyncio.run_coroutine_threadsafe(inner.close(), loop)

    def __enter__(self) -> bitmusa:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """The async face's ``close()`` (the stream ends, its listenKey is deleted, the
        pool closes), waited for. A later call starts the engine again, as on the async
        face."""
        _LOOP.open.discard(self)
        if _LOOP.exited:
            return  # the atexit hook closed it (another exit handler calls this late)
        self._call("close", self._sync_inner.close())

    # -- running a coroutine on the loop -------------------------------------------------------

    def _call(self, name: str, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run ``coroutine`` on the loop thread and wait for it. Its exception is raised
        here, the same ccxt class as on the async face, without the loop's frames. On
        Ctrl-C the call is cancelled and ``KeyboardInterrupt`` raised: an order already
        sent is never sent again (it may have been placed: a warning says so)."""
        if _LOOP.on_loop_thread():
            coroutine.close()
            raise ExchangeError(
                f"bitmusa {name}: the sync face was called from its own event-loop thread "
                "(a plugin or callback): use the async bitmusa there"
            )
        if _LOOP.exited:
            coroutine.close()
            raise ExchangeClosedByUser(
                f"bitmusa {name}: the process is exiting (its event-loop thread has stopped)"
            )
        if self._sync_loop is not _LOOP.loop:
            coroutine.close()
            raise ExchangeError(
                f"bitmusa {name}: this exchange was made in the parent of this forked "
                "process, whose event-loop thread is not here: make it in this process"
            )
        future = asyncio.run_coroutine_threadsafe(coroutine, self._sync_loop)
        try:
            return future.result()
        except KeyboardInterrupt:
            future.cancel()
            if not name.startswith(_READ_PREFIXES):
                log.warning(
                    "bitmusa %s interrupted: it may have reached the exchange and is not "
                    "sent again; check fetch_open_orders / fetch_positions",
                    name,
                )
            raise
        except concurrent.futures.CancelledError:
            raise ExchangeClosedByUser(
                f"bitmusa {name}: cancelled (the exchange was closed during the call)"
            ) from None
        except Exception as exc:
            raise exc.with_traceback(None) from exc.__cause__


def _sync_has(has: dict[str, Any]) -> dict[str, Any]:
    return {
        key: (False if key.startswith(_STREAM_PREFIXES) or key == "ws" else value)
        for key, value in has.items()
    }


def _install(cls: type[bitmusa], source: type) -> None:
    """Give the face its methods, derived from the async class ``source``, and ccxt's
    camelCase aliases of every method (ccxt's sync ``__init__``, not called, would make
    those)."""
    for name in coroutine_methods(source):
        setattr(cls, name, _wrap(name, source))
    for name in own_sync_methods(source):
        if name not in _FACE_OWN:  # describe: the face's own
            setattr(cls, name, _delegate(name, source))
    for name in own_properties(source):
        if name not in _FACE_OWN:  # has
            setattr(cls, name, _property(name, source))
    for name in dir(cls):
        if name.startswith("_") or "_" not in name or name.endswith("_"):
            continue
        attr = getattr(cls, name, None)
        if inspect.isfunction(attr):
            setattr(cls, _camel(name), attr)


#: what the face class itself defines (describe, has, close, ...): never delegated
_FACE_OWN = frozenset(vars(bitmusa))
_install(bitmusa, AsyncBitmusa)
