"""The public market stream's asyncio shell: one websocket per process and server, shared
by every subscriber, resubscribed after every reconnect.

The draft stream (REFERENCE.md §1, §8) takes its subscriptions in the URL
(``/ws/future/stream?<a>/<b>``), not in messages: a change of the set of streams is a new
connection, opened at once, and so is every reconnect (full-jitter backoff, the user
stream's rule). Frames are decoded by :mod:`bitmusa_plugin._core.public` and handed to the
subscribers that asked for their stream; a frame that does not decode is reported (logged,
counted, told to the subscribers) and skipped.

**No public stream**: while no frame has come for ``window`` seconds (at start, after a
drop, while connections open and stay silent; at once when neither reading of the path
answers), the hub tells its subscribers
``polling=True`` (once, logged once) and keeps trying in the background; they read REST
meanwhile. When a connection opens again they are told ``polling=False``.

Lazy on purpose (issue 21): nothing connects before the first subscription, and the hub
never spends the REST allowance.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import websockets
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed, InvalidStatus

from bitmusa_plugin._core import public as pub
from bitmusa_plugin._core import urls
from bitmusa_plugin._core.numbers import Reject
from bitmusa_plugin._engine.aio import within
from bitmusa_plugin._engine.rest import network_reason, tls_context

__all__ = ["PublicConfig", "PublicHub", "PublicSubscriber", "hub_for"]

log = logging.getLogger(__name__)

#: a public frame is a few KiB at most (20 levels a side)
MAX_FRAME_BYTES = 1 << 20
#: rejected frames logged one by one, then every this many
LOG_EVERY = 100


class PublicSubscriber(Protocol):
    """What the hub tells a subscriber (the ccxt drop-in's public part)."""

    def public_frame(self, item: pub.Depth | pub.Kline) -> None: ...

    def public_polling(self, polling: bool, reason: str) -> None: ...

    def public_rejected(self, reject: Reject) -> None: ...


@dataclass(frozen=True)
class PublicConfig:
    """One public stream: the server, its path reading, and its timings (seconds)."""

    ws_url: str
    reading: urls.PublicWsPath = "stream"
    #: a handshake refused with 400/404 tries the other reading once, before any opened
    fallback: bool = True
    #: no stream (no connection bringing frames) for this long: the subscribers poll REST
    window: float = 10.0
    #: a connection that brings no message for this long is closed and reopened
    silence: float = 10.0
    open_timeout: float = 10.0
    retry_initial: float = 0.5
    retry_max: float = 30.0


class PublicHub:
    """One process's connection to one public stream (see the module)."""

    def __init__(self, config: PublicConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.reading: urls.PublicWsPath = config.reading
        self._clock = clock
        self._rng = random.Random()
        self._subscribers: dict[PublicSubscriber, set[str]] = {}
        self._task: asyncio.Task[None] | None = None
        self._ws: ClientConnection | None = None
        self._wake = asyncio.Event()
        self._settled = False  # a connection opened: the reading is known
        self._window_timer: asyncio.TimerHandle | None = None
        self.polling = False
        self._flowing = False  # the current connection has brought a frame
        self.connections_opened = 0
        self.frames = 0
        self.rejected = 0
        self.last_reason = ""

    def __repr__(self) -> str:
        shown = urls.shown(self.config.ws_url)
        return f"PublicHub({shown}, {self.reading}, {len(self.names())} streams)"

    # -- subscriptions -------------------------------------------------------------------

    def names(self) -> list[str]:
        """Every stream some subscriber asked for, sorted (the URL's order)."""
        return sorted(set().union(*self._subscribers.values()))

    def subscribe(self, subscriber: PublicSubscriber, names: set[str]) -> None:
        """Add ``names`` to what ``subscriber`` gets; the connection follows at once."""
        before = self.names()
        self._subscribers.setdefault(subscriber, set()).update(names)
        if self.names() != before:
            self._changed()
        if self.polling:  # a newcomer learns how things stand
            subscriber.public_polling(True, self.last_reason)

    def unsubscribe(self, subscriber: PublicSubscriber, names: set[str] | None = None) -> None:
        """Take ``names`` (all, for None) off ``subscriber``; the last one closes the
        connection."""
        before = self.names()
        mine = self._subscribers.get(subscriber)
        if mine is None:
            return
        if names is None:
            del self._subscribers[subscriber]
        else:
            mine.difference_update(names)
        if self.names() != before:
            self._changed()

    def subscribed(self, subscriber: PublicSubscriber) -> set[str]:
        return set(self._subscribers.get(subscriber, ()))

    def _changed(self) -> None:
        """The set of streams changed: reconnect with the new one (the draft has no
        subscribe message)."""
        self._wake.set()
        if self._ws is not None:
            ws, self._ws = self._ws, None
            asyncio.get_running_loop().create_task(ws.close())
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def aclose(self) -> None:
        self._subscribers.clear()
        task, self._task = self._task, None
        if self._window_timer is not None:
            self._window_timer.cancel()
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def stats(self) -> dict[str, Any]:
        return {
            "reading": self.reading,
            "streams": len(self.names()),
            "connected": self._ws is not None,
            "flowing": self._flowing,
            "polling": self.polling,
            "connections_opened": self.connections_opened,
            "frames": self.frames,
            "rejected": self.rejected,
        }

    # -- the connection ------------------------------------------------------------------

    async def _run(self) -> None:
        attempt = 0
        while True:
            names = self.names()
            if not names:
                self._up(None)  # nothing asked for: nothing is missing; the next opens anew
                return
            self._wake.clear()
            self._down()
            try:
                ws = await self._open(names)
            except _Failed as exc:
                self.last_reason = exc.reason
                if exc.refused and not self._settled:
                    self._poll()  # neither reading is there: no use waiting out the window
                delay = self._backoff(attempt)
                attempt += 1
                log.debug("bitmusa public stream: %s; retrying in %.1f s", exc.reason, delay)
                with contextlib.suppress(asyncio.TimeoutError):
                    await within(self._wake.wait(), delay)
                continue
            if names != self.names():  # changed while the handshake ran
                await ws.close()
                continue
            attempt = 0
            self._ws = ws
            self.connections_opened += 1
            # up at its first frame, not at the handshake: a connection that opens and
            # stays silent feeds nobody, and the window runs on
            reason = await self._read(
                ws, urls.public_stream_url(self.config.ws_url, self.reading, names)
            )
            self._flowing = False
            if self._ws is ws:
                self._ws = None
            with contextlib.suppress(Exception):
                await ws.close()
            if not self._wake.is_set() and self.names():
                self.last_reason = reason
                log.info("bitmusa public stream %s: reconnecting", reason)
                with contextlib.suppress(asyncio.TimeoutError):
                    await within(self._wake.wait(), self._backoff(0))

    async def _read(self, ws: ClientConnection, url: str) -> str:
        """Deliver frames until the connection ends; why it ended."""
        silence = self.config.silence
        first = True
        while True:
            try:
                message = await within(ws.recv(), silence)
            except asyncio.TimeoutError:
                return f"silent for {silence:g} s"
            except ConnectionClosed as exc:
                return f"closed ({exc.rcvd.code if exc.rcvd else 'no close frame'})"
            if isinstance(message, bytes):
                self._reject(Reject("binary_frame", "public frame: binary, ignored"))
                continue
            try:
                item = pub.decode(message)
            except Reject as exc:
                self._reject(exc)
                continue
            self.frames += 1
            if first:
                first = False
                self._up(url)
            for subscriber, names in list(self._subscribers.items()):
                if item.stream in names:
                    try:
                        subscriber.public_frame(item)
                    except Exception:  # one subscriber's bug never stops the others
                        log.exception("bitmusa public stream: a subscriber failed")

    def _reject(self, exc: Reject) -> None:
        self.rejected += 1
        if self.rejected <= LOG_EVERY or self.rejected % LOG_EVERY == 0:
            log.warning(
                "bitmusa public stream: frame skipped (%s, %d so far): %s",
                exc.kind,
                self.rejected,
                exc.message,
            )
        for subscriber in list(self._subscribers):
            subscriber.public_rejected(exc)

    async def _open(self, names: list[str]) -> ClientConnection:
        """The configured reading; with ``fallback``, a 400/404 before any connection has
        opened tries the other one once, and keeps whichever opens."""
        try:
            return await self._handshake(
                urls.public_stream_url(self.config.ws_url, self.reading, names)
            )
        except _Failed as first:
            if self._settled or not self.config.fallback or not first.refused:
                raise
            other = urls.other_public(self.reading)
            try:
                ws = await self._handshake(urls.public_stream_url(self.config.ws_url, other, names))
            except _Failed as second:
                if not second.refused:
                    raise
                raise _Failed(
                    f"no public stream: both readings refused ({first.reason}; {second.reason})",
                    refused=True,
                ) from None
            log.warning(
                "bitmusa public stream: %s, but the %r reading opened: using it",
                first.reason,
                other,
            )
            self.reading = other
            return ws

    async def _handshake(self, url: str) -> ClientConnection:
        shown = urls.shown(url)
        try:
            ws = await websockets.connect(
                url,
                ssl=tls_context() if url.startswith("wss:") else None,  # verifying, shared
                open_timeout=self.config.open_timeout,
                ping_interval=None,  # the stream's own pushes prove it alive (``silence``)
                close_timeout=0.5,
                max_size=MAX_FRAME_BYTES,
                compression=None,
                user_agent_header=None,
            )
        except InvalidStatus as exc:
            status = exc.response.status_code
            raise _Failed(
                f"the handshake at {shown} answered HTTP {status}", refused=status in (400, 404)
            ) from None
        except asyncio.TimeoutError:
            raise _Failed(f"{shown}: no handshake within {self.config.open_timeout:g} s") from None
        except OSError as exc:
            raise _Failed(f"{shown}: {network_reason(exc)}") from None
        except websockets.exceptions.WebSocketException as exc:
            raise _Failed(f"{shown}: not a websocket server ({type(exc).__name__})") from None
        self._settled = True
        return ws

    # -- polling while there is no stream -------------------------------------------------

    def _down(self) -> None:
        """No connection: after ``window`` seconds of it, the subscribers poll."""
        if self._window_timer is None and not self.polling:
            loop = asyncio.get_running_loop()
            self._window_timer = loop.call_later(self.config.window, self._poll)

    def _poll(self) -> None:
        if self._window_timer is not None:
            self._window_timer.cancel()
        self._window_timer = None
        if self.polling or self._flowing or not self.names():
            return
        self.polling = True
        log.warning(
            "bitmusa public stream: none for %g s (%s): the public watch_* methods read "
            "REST until it opens",
            self.config.window,
            self.last_reason or "connecting",
        )
        for subscriber in list(self._subscribers):
            subscriber.public_polling(True, self.last_reason)

    def _up(self, url: str | None) -> None:
        self._flowing = url is not None
        if self._window_timer is not None:
            self._window_timer.cancel()
            self._window_timer = None
        if url is not None and self.connections_opened == 1:
            log.info("bitmusa public stream open at %s", urls.shown(url))
        if self.polling and url is not None:
            self.polling = False
            log.warning("bitmusa public stream open again at %s: polling stops", urls.shown(url))
            for subscriber in list(self._subscribers):
                subscriber.public_polling(False, "")

    def _backoff(self, attempt: int) -> float:
        """Full jitter, as the user stream's (``machine._backoff``)."""
        cap = min(self.config.retry_max, self.config.retry_initial * 2 ** min(attempt, 30))
        return max(self._rng.uniform(0, cap), self.config.retry_initial / 10)


class _Failed(Exception):
    def __init__(self, reason: str, *, refused: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.refused = refused


_HUBS: dict[tuple[asyncio.AbstractEventLoop, PublicConfig], PublicHub] = {}


def hub_for(config: PublicConfig) -> PublicHub:
    """The process's hub for ``config`` on the running loop: every exchange instance with
    the same server and settings shares one connection (a hub per event loop: a socket
    belongs to one)."""
    loop = asyncio.get_running_loop()
    for key in [k for k in _HUBS if k[0].is_closed()]:
        del _HUBS[key]
    hub = _HUBS.get((loop, config))
    if hub is None:
        hub = _HUBS[(loop, config)] = PublicHub(config)
    return hub
