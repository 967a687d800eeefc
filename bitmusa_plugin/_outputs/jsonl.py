"""``--output jsonl``: one JSON object per hook call, in delivery order, losing none.

``{"hook": "on_order", "order": {...}, "event": {...}}`` and so on: the unified objects
exactly as plugins receive them. The format is a contract (docs/cli.md).

It keeps up with the wire. Lines are serialised on the event loop into one buffer, and
whole buffers go to a writer thread that does nothing but the ``write`` system calls (which
release the GIL): no Python work competes with the stream's reader from another thread,
and there is never one system call per event under load. A buffer is handed over whenever
the plugin's queue drains (``on_idle``), and at least every ``flush_interval`` (100 ms) while
a backlog lasts, so ``tail -f`` and ``jq`` see each line promptly.

Its delivery policy is ``all``: when the reader of the output cannot keep up (a slow pipe),
the writer falls behind, the hooks wait for it, and the stream slows down (TCP
backpressure) instead of losing lines. A closed output (``| head``) ends it quietly:
``on_closed`` is called once, from the writer thread, and the command stops as Unix tools
do (exit 0).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import sys
import threading
import time
from collections.abc import Callable
from queue import SimpleQueue
from typing import IO, Any

import orjson

from bitmusa_hookspecs import (
    Balance,
    Context,
    DeliveryPolicy,
    ErrorInfo,
    Event,
    Order,
    Position,
    StreamState,
    Trade,
    hookimpl,
)

#: Hand the buffer to the writer at least this often while lines keep coming, seconds.
FLUSH_INTERVAL = 0.1
#: ... or when this much is buffered, bytes.
FLUSH_BYTES = 1 << 18
#: The hooks wait while this much waits for the writer (a slow reader of the output).
MAX_PENDING_BYTES = 1 << 23

_OPTIONS = orjson.OPT_APPEND_NEWLINE


def binary(stream: IO[Any]) -> IO[bytes] | None:
    """The binary stream under a text one (stdout's ``buffer``), or None for a text-only
    stream such as ``io.StringIO``."""
    if isinstance(stream, io.TextIOBase):
        return getattr(stream, "buffer", None)
    return stream


def dumps_line(record: dict[str, Any]) -> bytes:
    """One JSON line. Text that is not valid UTF-8 (a replayed binary line: lone surrogates)
    is written with those characters escaped, ``\\udcff``, never an exception."""
    try:
        return orjson.dumps(record, option=_OPTIONS)
    except TypeError:
        return orjson.dumps(_clean(record), option=_OPTIONS)


def _clean(value: Any) -> Any:
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, dict):
        return {_clean(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


class JsonlOutput:
    """Writes every hook call as one JSON line to ``stream`` (stdout by default)."""

    bitmusa_delivery: DeliveryPolicy = "all"

    def __init__(
        self,
        stream: IO[Any] | None = None,
        *,
        on_closed: Callable[[], None] | None = None,
        flush_interval: float = FLUSH_INTERVAL,
        max_pending: int = MAX_PENDING_BYTES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        target = stream if stream is not None else sys.stdout
        self._binary = binary(target)
        self._text = target if self._binary is None else None
        self._on_closed = on_closed
        self._flush_interval = flush_interval
        self._max_pending = max_pending
        self._clock = clock
        self._buffer = bytearray()
        self._flushed_at = clock()
        self._jobs: SimpleQueue[bytes | None] = SimpleQueue()
        self._pending = 0  # bytes handed to the writer, not yet written
        self._lock = threading.Lock()
        self._room: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._writer: threading.Thread | None = None
        self.closed = False
        self.lines = 0

    # -- the loop side ----------------------------------------------------------------------

    async def _write(self, record: dict[str, Any]) -> None:
        if self._put(record):
            await self.flush()

    def _put(self, record: dict[str, Any]) -> bool:
        """Buffer one line; True when the buffer is due to be handed over. Synchronous, so
        that the hooks of every event (below) await a coroutine only when they flush: one
        coroutine less an event (about 0.5 µs of the CLI path's per-event cost)."""
        if self.closed:
            return False
        self._buffer += dumps_line(record)
        self.lines += 1
        return (
            len(self._buffer) >= FLUSH_BYTES
            or self._clock() - self._flushed_at >= self._flush_interval
        )

    async def flush(self) -> None:
        """Hand what is buffered to the writer; wait while the writer is too far behind."""
        self._flushed_at = self._clock()
        if not self._buffer or self.closed:
            return
        if self._writer is None:
            self._start()
        data = bytes(self._buffer)
        self._buffer.clear()
        with self._lock:
            self._pending += len(data)
            behind = self._pending > self._max_pending
        self._jobs.put(data)
        if behind and self._room is not None:
            self._room.clear()
            while self._pending > self._max_pending // 2 and not self.closed:
                await self._room.wait()  # set by the writer as it catches up
                self._room.clear()

    def _start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._room = asyncio.Event()
        self._writer = threading.Thread(target=self._write_out, name="bitmusa-jsonl", daemon=True)
        self._writer.start()

    async def _finish(self) -> None:
        """Write out everything, then stop the writer."""
        await self.flush()
        if self._writer is not None:
            self._jobs.put(None)
            await asyncio.get_running_loop().run_in_executor(None, self._writer.join, 10.0)
            self._writer = None

    # -- the writer thread ------------------------------------------------------------------

    def _write_out(self) -> None:
        while (data := self._jobs.get()) is not None:
            if not self.closed:
                try:
                    if self._binary is not None:
                        self._binary.write(data)
                        self._binary.flush()
                    else:
                        assert self._text is not None
                        self._text.write(data.decode("utf-8"))
                        self._text.flush()
                except (BrokenPipeError, ValueError):  # EPIPE, or closed under us
                    self.closed = True
                    if self._on_closed is not None:
                        self._on_closed()
            with self._lock:
                self._pending -= len(data)
                room = self._pending <= self._max_pending // 2
            if (room or self.closed) and self._loop is not None and self._room is not None:
                with contextlib.suppress(RuntimeError):  # the loop is gone: nobody waits
                    self._loop.call_soon_threadsafe(self._room.set)

    # -- hooks ------------------------------------------------------------------------------

    @hookimpl
    async def on_idle(self) -> None:
        await self.flush()

    @hookimpl
    async def on_wallet(self, balance: Balance, event: Event) -> None:
        if self._put({"hook": "on_wallet", "balance": balance, "event": event}):
            await self.flush()

    @hookimpl
    async def on_order(self, order: Order, event: Event) -> None:
        if self._put({"hook": "on_order", "order": order, "event": event}):
            await self.flush()

    @hookimpl
    async def on_trade(self, trade: Trade, event: Event) -> None:
        if self._put({"hook": "on_trade", "trade": trade, "event": event}):
            await self.flush()

    @hookimpl
    async def on_position(self, position: Position, event: Event) -> None:
        if self._put({"hook": "on_position", "position": position, "event": event}):
            await self.flush()

    @hookimpl
    async def on_stream_state(self, state: StreamState) -> None:
        await self._write({"hook": "on_stream_state", "state": state})

    @hookimpl
    async def on_error(self, error: ErrorInfo, event: Event | None) -> None:
        await self._write({"hook": "on_error", "error": error, "event": event})

    @hookimpl
    async def on_startup(self, context: Context) -> None:
        await self._write({"hook": "on_startup", "context": context})

    @hookimpl
    async def on_shutdown(self, context: Context) -> None:
        await self._write({"hook": "on_shutdown", "context": context})
        await self._finish()
