"""``--output jsonl``: one JSON object per hook call, in delivery order, losing none.

``{"hook": "on_order", "order": {...}, "event": {...}}`` and so on: the unified objects
exactly as plugins receive them. The format is a contract (docs/cli.md).

It keeps up with the wire: lines are buffered and written in batches, flushed whenever the
plugin's queue drains (``on_idle``) and at least every ``flush_interval`` (100 ms) while a
backlog lasts, so ``tail -f`` and ``jq`` see each line promptly without one syscall per
event under load. Its delivery policy is ``all``: a reader of the output that cannot keep
up slows the stream down (TCP backpressure) instead of losing lines.

A closed output (``| head``) ends the output quietly: ``on_closed`` is called once, from the
plugin's thread, and the command stops as Unix tools do (exit 0).
"""

from __future__ import annotations

import io
import sys
import time
from collections.abc import Callable
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
    hookimpl,
)

#: Write out at least this often while lines keep coming, seconds.
FLUSH_INTERVAL = 0.1
#: ... or when this much is buffered, bytes.
FLUSH_BYTES = 1 << 18


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
        return orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE)
    except TypeError:
        return orjson.dumps(_clean(record), option=orjson.OPT_APPEND_NEWLINE)


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
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        target = stream if stream is not None else sys.stdout
        self._binary = binary(target)
        self._text = target if self._binary is None else None
        self._on_closed = on_closed
        self._flush_interval = flush_interval
        self._clock = clock
        self._chunks: list[bytes] = []
        self._size = 0
        self._flushed_at = clock()
        self.closed = False
        self.lines = 0

    def _write(self, record: dict[str, Any]) -> None:
        if self.closed:
            return
        line = dumps_line(record)
        self._chunks.append(line)
        self._size += len(line)
        self.lines += 1
        if self._size >= FLUSH_BYTES or self._clock() - self._flushed_at >= self._flush_interval:
            self.flush()

    def flush(self) -> None:
        """Write out what is buffered."""
        self._flushed_at = self._clock()
        if not self._chunks or self.closed:
            return
        data = b"".join(self._chunks)
        self._chunks.clear()
        self._size = 0
        try:
            if self._binary is not None:
                self._binary.write(data)
                self._binary.flush()
            else:
                assert self._text is not None
                self._text.write(data.decode("utf-8"))
                self._text.flush()
        except (BrokenPipeError, ValueError):  # EPIPE, or the stream was closed under us
            self.closed = True
            if self._on_closed is not None:
                self._on_closed()

    @hookimpl
    def on_idle(self) -> None:
        self.flush()

    @hookimpl
    def on_wallet(self, balance: Balance, event: Event) -> None:
        self._write({"hook": "on_wallet", "balance": balance, "event": event})

    @hookimpl
    def on_order(self, order: Order, event: Event) -> None:
        self._write({"hook": "on_order", "order": order, "event": event})

    @hookimpl
    def on_position(self, position: Position, event: Event) -> None:
        self._write({"hook": "on_position", "position": position, "event": event})

    @hookimpl
    def on_stream_state(self, state: StreamState) -> None:
        self._write({"hook": "on_stream_state", "state": state})

    @hookimpl
    def on_error(self, error: ErrorInfo, event: Event | None) -> None:
        self._write({"hook": "on_error", "error": error, "event": event})

    @hookimpl
    def on_startup(self, context: Context) -> None:
        self._write({"hook": "on_startup", "context": context})

    @hookimpl
    def on_shutdown(self, context: Context) -> None:
        self._write({"hook": "on_shutdown", "context": context})
        self.flush()
